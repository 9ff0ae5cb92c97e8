#!/usr/bin/env python
"""Translate with an HF NODE-Transformer folder (converted from fairseq or trained with node_seq.hf.cli.train).

    python -m node_seq.hf.cli.translate --model HF_DIR --beam 4 "4 0 7 1 3" "1 2"
    printf '4 0 7 1 3\\n1 2\\n' | python -m node_seq.hf.cli.translate --model HF_DIR

prints one translation per input line, in order. Decoding follows the folder's generation config
(fairseq-generate's rules for converted models: length penalty 1, ``max_len_b`` 200 tokens).
"""

from __future__ import annotations

import argparse
import sys


def translate(model, tokenizer, sentences: list[str], *, beam: int | None = None, batch_size: int = 32,
              **generate_kwargs) -> list[str]:
    import torch

    outputs = []
    for start in range(0, len(sentences), batch_size):
        batch = tokenizer(sentences[start:start + batch_size], return_tensors="pt", padding=True)
        with torch.no_grad():
            generated = model.generate(**batch, **({"num_beams": beam} if beam else {}), **generate_kwargs)
        outputs += [text.strip() for text in tokenizer.batch_decode(generated, skip_special_tokens=True)]
    return outputs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="folder written by save_pretrained (config, weights, tokenizer)")
    parser.add_argument("--beam", type=int, default=None, help="beam size (default: the generation config's)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-len-a", type=float, default=None, help="fairseq's max_len_a (default: config's)")
    parser.add_argument("--max-len-b", type=int, default=None, help="fairseq's max_len_b (default: config's)")
    parser.add_argument("--nfe", action="store_true", help="print the NFE per sentence of each batch to stderr")
    parser.add_argument("sentences", nargs="*", help="sentences to translate (default: read stdin, one per line)")
    args = parser.parse_args(argv)
    if args.beam is not None and args.beam < 1:
        parser.error(f"--beam: must be >= 1, got {args.beam}")

    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    import node_seq  # noqa: F401  (registers node_transformer with the Auto classes)

    torch.set_num_threads(1)
    sentences = args.sentences or [line.rstrip("\n") for line in sys.stdin]
    try:  # strict: a weight missing from the folder would translate with its random init
        model = AutoModelForSeq2SeqLM.from_pretrained(args.model, strict=True).eval()
    except ValueError as error:
        parser.error(f"--model: {error}")
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    lengths = {k: v for k, v in (("max_len_a", args.max_len_a), ("max_len_b", args.max_len_b)) if v is not None}
    for start in range(0, len(sentences), args.batch_size):
        chunk = sentences[start:start + args.batch_size]
        for line in translate(model, tokenizer, chunk, beam=args.beam, batch_size=args.batch_size, **lengths):
            print(line, flush=True)
        if args.nfe:
            print(f"NFE per sentence: {model.generation_nfe.nfe_forward}", file=sys.stderr)


if __name__ == "__main__":
    main()
