#!/usr/bin/env python
"""Train a NODE-Transformer language model with HF ``Trainer`` on a text file per split; report perplexity and NFE.

    python -m node_seq.text.numbers /tmp/numbers            # the embedded demo task (no download)
    python -m node_seq.hf.cli.train_lm --data /tmp/numbers --lang tgt --out /tmp/numbers-lm-hf --node-method rk4

reads ``DATA/{train,valid,test}.{LANG}`` (one sentence per line) with ``datasets``, learns the
project's BPE on the training split (or takes ``--tokenizer tokenizer.json``), trains
``NodeTransformerForCausalLM`` on whole sentences (``</s>`` before and after, as fairseq's
``--sample-break-mode eos`` reads them), logs ``nfe_f``/``nfe_b`` next to the loss, evaluates the
validation perplexity during training and the test perplexity at the end, and saves a folder that
``AutoModelForCausalLM``/``AutoTokenizer`` load (``OUT/final``), with every log line in
``OUT/log_history.json``. The data, model, NODE and training options are ``node-seq-train-hf``'s
(:mod:`node_seq.hf.cli.train`), less the encoder's and the translation's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from node_seq.hf.cli.train import add_data_arguments, add_model_arguments, add_training_arguments, checked, limited, \
    sharded, start, tokenizer_definition, training_arguments
from node_seq.nn.options import HF_LM, TRAIN_HF_LM


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with {train,valid,test}.LANG")
    parser.add_argument("--lang", default="txt", help="file suffix of the text to model (default: txt)")
    add_data_arguments(parser, "sentences")
    parser.add_argument("--max-length", type=int, default=256, help="longest training sentence in tokens")
    add_model_arguments(parser, TRAIN_HF_LM)
    add_training_arguments(parser)
    args = checked(parser, parser.parse_args(argv), TRAIN_HF_LM)
    if not (Path(args.data) / f"train.{args.lang}").is_file():
        parser.error(f"--data/--lang: {Path(args.data) / f'train.{args.lang}'} is missing")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from transformers import TrainingArguments

    import node_seq  # noqa: F401  (registers the Auto classes)
    from node_seq.hf import NodeTransformerForCausalLM, NodeTransformerLMConfig
    from node_seq.hf.tokenization_node_transformer import LANGUAGE_MODEL, build_tokenizer
    from node_seq.hf.training import NodeTrainer, lm_collator, load_text, perplexities, tokenize_lm, \
        train_and_report

    out = start(args)
    data = limited(load_text(args.data, args.lang, cache_dir=out / "datasets_cache"), args)
    tokenizer_json = tokenizer_definition(args, [Path(args.data) / f"train.{args.lang}"])
    tokenizer = build_tokenizer(tokenizer_json, kind=LANGUAGE_MODEL)
    encoded = tokenize_lm(data, tokenizer, max_length=args.max_length)

    config = NodeTransformerLMConfig(
        vocab_size=len(tokenizer), decoder_embed_dim=args.embed_dim, decoder_ffn_dim=args.ffn_dim,
        decoder_layers=args.layers, decoder_attention_heads=args.heads, dropout=args.dropout,
        max_position_embeddings=max(args.max_length, 1024), **args.node_options.to_front_end(HF_LM),
    )
    model = sharded(NodeTransformerForCausalLM(config), args)
    has_valid = "valid" in encoded
    trainer = NodeTrainer(
        model=model, args=TrainingArguments(**training_arguments(args, out, has_valid=has_valid)),
        train_dataset=encoded["train"], eval_dataset=encoded["valid"] if has_valid else None,
        processing_class=tokenizer, data_collator=lm_collator(tokenizer),
    )
    return train_and_report(trainer, encoded, out, derived=perplexities)


def cli(argv: list[str] | None = None) -> int:
    """``node-seq-train-hf-lm``: a console script exits with what it returns, so not with ``main``'s results."""
    main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
