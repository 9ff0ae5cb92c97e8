#!/usr/bin/env python
"""Train a NODE-Transformer with HF ``Seq2SeqTrainer`` on parallel text files; report BLEU and NFE.

    python -m node_seq.text.numbers /tmp/numbers            # the embedded demo task (no download)
    python -m node_seq.hf.cli.train --data /tmp/numbers --src src --tgt tgt --out /tmp/hf_numbers

reads ``DATA/{train,valid,test}.{SRC,TGT}`` (one sentence per line) with ``datasets``, learns the
project's BPE on the training split (or takes ``--tokenizer tokenizer.json`` from
``node_seq.text.prepare``), trains, logs ``nfe_f``/``nfe_b`` next to the loss, evaluates sacrebleu BLEU
on the validation split during training and on the test split at the end, and saves a folder that
``AutoModelForSeq2SeqLM.from_pretrained``/``AutoTokenizer.from_pretrained`` load (``OUT/final``),
with every log line in ``OUT/log_history.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from node_seq.nn.options import HF, TRAIN_HF, NodeOptions, add_arguments
from node_seq.ode import OptionError

if TYPE_CHECKING:  # transformers is imported when training starts, not for --help
    from transformers import PreTrainedModel


def add_data_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """The data and tokenizer options both trainers share (``what``: the examples, e.g. "pairs")."""
    add = parser.add_argument
    add("--out", required=True, help="output folder (checkpoints, tokenizer, final model)")
    add("--tokenizer", default=None, help="tokenizer.json to use (default: learn a BPE on the training split)")
    add("--vocab-size", type=int, default=128, help="BPE vocabulary size when learning one")
    add("--train-limit", type=int, default=None, help=f"use only the first N training {what}")
    add("--eval-limit", type=int, default=200, help=f"evaluate on the first N validation/test {what}")


def add_model_arguments(parser: argparse.ArgumentParser, front_end: str) -> None:
    """Sizes (every layer the same) and ``front_end``'s NODE options."""
    add = parser.add_argument
    add("--embed-dim", type=int, default=64)
    add("--ffn-dim", type=int, default=128)
    add("--layers", type=int, default=2)
    add("--heads", type=int, default=4)
    add("--dropout", type=float, default=0.1)
    add_arguments(parser.add_argument_group("NODE options (node_seq.nn.options)"), front_end)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--epochs", type=float, default=3.0)
    add("--max-steps", type=int, default=-1, help="stop after this many updates (overrides --epochs)")
    add("--batch-size", type=int, default=64)
    add("--lr", type=float, default=3e-3)
    add("--warmup-steps", type=int, default=100)
    add("--eval-steps", type=int, default=200)
    add("--logging-steps", type=int, default=50)
    add("--seed", type=int, default=1)
    add("--threads", type=int, default=1, help="torch CPU threads")
    add("--cpu", action="store_true", help="train on the CPU even when a GPU is available")
    add("--activation-checkpointing", action="store_true",
        help="keep only each layer's input and recompute its solve in the backward pass (the Trainer's "
             "activation_checkpointing: less memory, the same gradients, one more forward solve)")
    add("--bf16", action="store_true",
        help="mixed precision: the forward pass under bfloat16 autocast, parameters, optimizer and ODE state in "
             "float32 (the Trainer's bf16; also on the CPU)")
    add("--torch-compile", action="store_true",
        help="compile the model for training (the Trainer's torch_compile; fixed-grid solves compile whole)")
    add("--torch-compile-backend", default=None, help="torch.compile backend (default inductor; implies --torch-compile)")
    add("--torch-compile-mode", default=None, help="torch.compile mode, e.g. reduce-overhead (implies --torch-compile)")
    add("--fsdp", choices=sorted(FSDP_STYLES), default=None,
        help="shard parameters, gradients and optimizer state over the torchrun processes with FSDP2 (transformers' "
             "DistributedConfig, one group per layer; CPU or GPU): full_shard frees a layer's gathered weights "
             "after its forward, shard_grad_op keeps them until its backward")


def checked(parser: argparse.ArgumentParser, args: argparse.Namespace, front_end: str) -> argparse.Namespace:
    """Refuse a missing data folder and invalid NODE options (naming the flag) before any work."""
    if not Path(args.data).is_dir():
        parser.error(f"--data: not a directory: {args.data}")
    if args.fsdp and world_size() < 2:
        parser.error("--fsdp: shards over several processes; start them with torchrun --nproc_per_node N (N >= 2)")
    for flag in ("embed_dim", "ffn_dim", "layers", "heads", "batch_size", "threads"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')}: must be an integer >= 1, got {getattr(args, flag)}")
    if args.embed_dim % args.heads:
        parser.error(f"--heads: must divide --embed-dim {args.embed_dim}, got {args.heads}")
    try:
        args.node_options = NodeOptions.from_front_end(args, front_end)
    except OptionError as error:
        parser.error(str(error))
    return args


def training_arguments(args: argparse.Namespace, out: Path, *, has_valid: bool) -> dict:
    """The ``TrainingArguments`` both trainers share, from the shared options."""
    return dict(
        output_dir=str(out), use_cpu=args.cpu, bf16=args.bf16, report_to=[], seed=args.seed, num_train_epochs=args.epochs,
        max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size, learning_rate=args.lr, warmup_steps=args.warmup_steps,
        lr_scheduler_type="inverse_sqrt", adam_beta2=0.98, weight_decay=0.0, logging_steps=args.logging_steps,
        eval_strategy="steps" if has_valid else "no", eval_steps=args.eval_steps, save_strategy="no",
        dataloader_num_workers=0, disable_tqdm=True,
        ddp_find_unused_parameters=False,  # every parameter takes part in every forward pass
        activation_checkpointing=args.activation_checkpointing,
        torch_compile=args.torch_compile, torch_compile_backend=args.torch_compile_backend,
        torch_compile_mode=args.torch_compile_mode,
    )


#: ``--fsdp`` -> the FSDP2 style of every layer of the model's ``base_model_fsdp_plan``.
FSDP_STYLES = {"full_shard": "free_full_weight", "shard_grad_op": "keep_full_weight"}


def world_size() -> int:
    """The number of processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def sharded(model: PreTrainedModel, args: argparse.Namespace) -> PreTrainedModel:
    """``model`` sharded over the processes by transformers' own FSDP2 (what ``from_pretrained(
    distributed_config=...)`` does), with ``--fsdp``; else ``model`` as it is.

    Not ``TrainingArguments(fsdp=...)``: accelerate applies that only on accelerators, and on a CPU
    trains with DDP instead, silently. transformers' ``DistributedConfig`` shards on CPU and GPU
    alike; the ``Trainer`` then neither wraps the model in DDP nor shards it again.
    """
    if not args.fsdp:
        return model
    from torch.distributed.fsdp import register_fsdp_forward_method
    from transformers import DistributedConfig

    plan = dict.fromkeys(model.fsdp_plan, FSDP_STYLES[args.fsdp])
    config, _, mesh = type(model).prepare_distribute_model(DistributedConfig(fsdp_size=world_size(), fsdp_plan=plan))
    model = type(model).maybe_distribute_model(model, config, mesh)
    # generate runs the encoder and the decoder steps without the model's forward: gather the root
    # group (embeddings, lm_head) around it as around forward
    register_fsdp_forward_method(model, "generate")
    return model


def start(args: argparse.Namespace) -> Path:
    """Threads, seed and the output folder, set up the same way by both trainers."""
    import torch
    from transformers import set_seed

    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def limited(data, args: argparse.Namespace):
    """``data`` with only the first ``--train-limit`` training and ``--eval-limit`` validation/test examples."""
    if args.train_limit:
        data["train"] = data["train"].select(range(min(args.train_limit, len(data["train"]))))
    for split in ("valid", "test"):
        if split in data and args.eval_limit:
            data[split] = data[split].select(range(min(args.eval_limit, len(data[split]))))
    return data


def tokenizer_definition(args: argparse.Namespace, training_files: list[Path]) -> dict:
    """The JSON of ``--tokenizer``, or of a BPE learnt on ``training_files`` with ``--vocab-size``."""
    if args.tokenizer:
        return json.loads(Path(args.tokenizer).read_text(encoding="utf-8"))
    from node_seq.text.tokenizer import train_tokenizer

    return json.loads(train_tokenizer(training_files, vocab_size=args.vocab_size).to_str())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--data", required=True, help="folder with {train,valid,test}.{src,tgt}")
    add("--src", default="src")
    add("--tgt", default="tgt")
    add_data_arguments(parser, "pairs")
    add_model_arguments(parser, TRAIN_HF)
    add_training_arguments(parser)
    add("--label-smoothing", type=float, default=0.1)
    add("--beam", type=int, default=4, help="beam size of evaluation decoding")
    add("--max-target-length", type=int, default=64, help="longest generated output during evaluation")
    return checked(parser, parser.parse_args(argv), TRAIN_HF)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainingArguments

    import node_seq  # noqa: F401  (registers the Auto classes)
    from node_seq.hf import NodeTransformerConfig, NodeTransformerForConditionalGeneration
    from node_seq.hf.tokenization_node_transformer import build_tokenizer
    from node_seq.hf.training import NodeSeq2SeqTrainer, bleu_metrics, load_parallel_text, tokenize, train_and_report

    out = start(args)
    data = limited(load_parallel_text(args.data, args.src, args.tgt, cache_dir=out / "datasets_cache"), args)
    tokenizer_json = tokenizer_definition(args, [Path(args.data) / f"train.{lang}" for lang in (args.src, args.tgt)])
    tokenizer = build_tokenizer(tokenizer_json)
    encoded = tokenize(data, tokenizer, args.src, args.tgt)

    config = NodeTransformerConfig(
        vocab_size=len(tokenizer), encoder_embed_dim=args.embed_dim, decoder_embed_dim=args.embed_dim,
        encoder_ffn_dim=args.ffn_dim, decoder_ffn_dim=args.ffn_dim, encoder_layers=args.layers,
        decoder_layers=args.layers, encoder_attention_heads=args.heads, decoder_attention_heads=args.heads,
        dropout=args.dropout, **args.node_options.to_front_end(HF),
    )
    model = sharded(NodeTransformerForConditionalGeneration(config), args)
    has_valid = "valid" in encoded
    training_args = Seq2SeqTrainingArguments(
        **training_arguments(args, out, has_valid=has_valid), label_smoothing_factor=args.label_smoothing,
        predict_with_generate=True, generation_num_beams=args.beam, generation_max_length=args.max_target_length,
    )
    trainer = NodeSeq2SeqTrainer(
        model=model, args=training_args, train_dataset=encoded["train"],
        eval_dataset=encoded["valid"] if has_valid else None, processing_class=tokenizer,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model), compute_metrics=bleu_metrics(tokenizer),
    )
    return train_and_report(trainer, encoded, out)


def cli(argv: list[str] | None = None) -> int:
    """``node-seq-train-hf``: a console script exits with what it returns, so not with ``main``'s results."""
    main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
