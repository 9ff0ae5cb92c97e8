"""A fairseq ``node_transformer_lm`` checkpoint converted to HF: the same logits and the same greedy
tokens, a tokenizer that gives fairseq-preprocess's ids with ``</s>`` first; and the HF Trainer's
command line (``node-seq-train-hf-lm``) trains, evaluates perplexity and saves a loadable folder."""

import json

import pytest
import torch

pytest.importorskip("fairseq")

from hf_helpers import load_with_report  # noqa: E402
from lm_helpers import make_lm_data, train_lm  # noqa: E402


@pytest.fixture(scope="module")
def lm_data(tmp_path_factory):
    return make_lm_data(tmp_path_factory.mktemp("lm_data"))


@pytest.fixture(scope="module", params=["rk4", "pc"])
def converted(request, lm_data, tmp_path_factory):
    from node_seq.hf.convert_lm import convert_lm

    root = tmp_path_factory.mktemp(f"lm_{request.param}")
    extra = ["--node-method", request.param] + (["--node-steps", "2", "--node-gradient", "checkpoint"]
                                                 if request.param == "pc" else [])
    checkpoint = train_lm(lm_data, root / "checkpoints", extra, updates=20)
    convert_lm(checkpoint, lm_data, root / "hf")
    return checkpoint, root / "hf"


def _fairseq_model(lm_data, checkpoint):
    from fairseq import checkpoint_utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)],
                                                                      arg_overrides={"data": str(lm_data)})
    task.load_dataset("test")
    return models[0].eval(), task


@pytest.mark.slow
def test_converted_lm_gives_fairseqs_logits_and_greedy_tokens(lm_data, converted):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint, hf = converted
    fairseq_model, task = _fairseq_model(lm_data, checkpoint)
    model, report = load_with_report(AutoModelForCausalLM, hf, strict=True)
    assert report == ""  # every weight in place: no warning
    model.eval()
    dataset = task.dataset("test")
    sample = dataset.collater([dataset[i] for i in range(6)])  # right-padded sentences after </s>
    tokens = sample["net_input"]["src_tokens"]
    with torch.no_grad():
        expected, _ = fairseq_model(tokens)
        got = model(tokens, attention_mask=tokens.ne(1)).logits
    keep = tokens.ne(1)
    torch.testing.assert_close(got[keep], expected[keep], rtol=1e-5, atol=1e-5)

    tokenizer = AutoTokenizer.from_pretrained(hf)
    raw = (lm_data.parent / "raw" / "test.tgt").read_text().splitlines()
    for index in range(3):  # the tokenizer reads raw text as fairseq-preprocess did, </s> first
        assert tokenizer(raw[index])["input_ids"] == dataset[index]["source"].tolist()
    prompt = tokens[:1, :3]
    generated = model.generate(prompt, max_new_tokens=6, min_new_tokens=6, num_beams=1)
    greedy = prompt
    with torch.no_grad():  # fairseq's model, greedy by full forward passes
        for _ in range(6):
            logits, _ = fairseq_model(greedy)
            greedy = torch.cat([greedy, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generated, greedy)


@pytest.mark.slow
def test_train_lm_command_trains_evaluates_and_saves(lm_data, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from node_seq.hf.cli import train_lm

    raw = lm_data.parent / "raw"
    results = train_lm.main(["--data", str(raw), "--lang", "tgt", "--out", str(tmp_path), "--node-method", "rk4",
                             "--embed-dim", "16", "--ffn-dim", "32", "--heads", "2", "--max-steps", "4",
                             "--batch-size", "16", "--eval-steps", "2", "--logging-steps", "2", "--vocab-size", "64"])
    assert results["test_perplexity"] == pytest.approx(torch.tensor(results["test_loss"]).exp().item(), rel=1e-4)
    assert results["valid_nfe"] == 8.0  # per sentence: 2 layers x 4 rk4 stages, one pass
    history = json.loads((tmp_path / "log_history.json").read_text())
    assert any(entry.get("nfe_f") == 8.0 for entry in history)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "final")
    batch = tokenizer(["two", "nine hundred"], return_tensors="pt", padding=True)
    assert tokenizer.padding_side == "left" and batch["input_ids"][1, 0].item() == 2
    assert model.generate(**batch, max_new_tokens=3).shape[1] >= batch["input_ids"].shape[1]


@pytest.mark.parametrize("argv, message", [
    (["--node-method", "rk4", "--node-steps", "0"], "--node-steps: must be an integer >= 1, got 0"),
    (["--node-encoder"], "unrecognized arguments: --node-encoder"),
    (["--heads", "3"], "--heads: must divide --embed-dim 64, got 3"),
    (["--lang", "xx"], "--data/--lang:"),
])
def test_train_lm_refuses_bad_options_before_any_work(argv, message, lm_data, tmp_path, capsys):
    from node_seq.hf.cli import train_lm

    with pytest.raises(SystemExit):
        train_lm.parse_args(["--data", str(lm_data.parent / "raw"), "--lang", "tgt", "--out", str(tmp_path / "out"),
                             *argv])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
