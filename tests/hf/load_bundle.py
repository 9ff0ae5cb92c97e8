"""Run by test_remote_code.py in a fresh ``python -I``: load code bundles where node_seq cannot be imported.

argv: a JSON file of requests ``[{"auto": "AutoModelForSeq2SeqLM", "folder", "texts", "max_new_tokens",
"resave"}]`` and the JSON file to write the results to. Each folder is loaded with the Auto classes
and ``trust_remote_code=True``, its tokenizer encodes ``texts``, beam search (4 beams, cached)
generates (tokens and the beams' scores); the loaded model and tokenizer are saved again to ``resave`` (transformers' own route)
and that folder generates again.
"""

import importlib
import importlib.abc
import json
import sys


class BlockNodeSeq(importlib.abc.MetaPathFinder):
    """First in ``sys.meta_path``: before the editable install's finder or any path entry can serve node_seq."""

    def find_spec(self, name, path=None, target=None):
        if name == "node_seq" or name.startswith("node_seq."):
            raise ImportError(f"{name} is blocked in this process")
        return None


sys.meta_path.insert(0, BlockNodeSeq())

import transformers  # noqa: E402


def generated(folder: str, auto: str, texts: list[str], max_new_tokens: int):
    model = getattr(transformers, auto).from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    out = model.generate(**batch, num_beams=4, use_cache=True, do_sample=False, max_new_tokens=max_new_tokens,
                         return_dict_in_generate=True, output_scores=True)
    return model, tokenizer, batch["input_ids"].tolist(), out.sequences.tolist(), out.sequences_scores.tolist()


def main(requests_file: str, results_file: str) -> None:
    preloaded = sorted(name for name in sys.modules if name.split(".")[0] == "node_seq")
    results = []
    for request in json.load(open(requests_file)):
        model, tokenizer, input_ids, tokens, scores = generated(request["folder"], request["auto"], request["texts"],
                                                        request["max_new_tokens"])
        model.save_pretrained(request["resave"])
        tokenizer.save_pretrained(request["resave"])
        *_, tokens_again, _ = generated(request["resave"], request["auto"], request["texts"], request["max_new_tokens"])
        results.append(dict(input_ids=input_ids, tokens=tokens, scores=scores, tokens_again=tokens_again,
                            model_module=type(model).__module__, tokenizer_module=type(tokenizer).__module__))
    try:
        importlib.import_module("node_seq")
        importable = True
    except ImportError:
        importable = False
    loaded = sorted(name for name in sys.modules if name.split(".")[0] == "node_seq")
    json.dump(dict(results=results, node_seq_importable=importable, node_seq_modules=preloaded + loaded),
              open(results_file, "w"))


if __name__ == "__main__":
    main(*sys.argv[1:])
