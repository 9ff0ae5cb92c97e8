"""The LM tests' corpus and fairseq runs: the English side of the numbers task, node-seq's BPE,
``fairseq-preprocess --only-source``, and a tiny ``node_transformer_lm`` trained in this process."""

from __future__ import annotations

from pathlib import Path

TINY_LM = ["--arch", "node_transformer_lm_tiny", "--decoder-embed-dim", "16", "--decoder-ffn-embed-dim", "32",
           "--decoder-layers", "2", "--decoder-attention-heads", "2", "--share-decoder-input-output-embed",
           "--sample-break-mode", "eos", "--tokens-per-sample", "64"]
TRAIN_LM = ["--optimizer", "adam", "--lr", "1e-2", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "10",
            "--criterion", "cross_entropy", "--max-tokens", "1024", "--num-workers", "0", "--log-format", "json",
            "--log-interval", "1", "--seed", "1", "--no-progress-bar", "--no-epoch-checkpoints", "--cpu",
            "--dropout", "0.0", "--no-save-optimizer-state"]


def make_lm_data(root: Path, train_size: int = 400) -> Path:
    """The numbers task's English side as LM data in ``root/lm/bin`` (raw text in ``root/lm/raw``)."""
    from node_seq.text.numbers import write_task
    from node_seq.text.prepare_lm import prepare_lm

    write_task(root / "task", sizes={"train": train_size, "valid": 24, "test": 24}, max_digits=4)
    return prepare_lm(root / "task", root / "lm", lang="tgt", splits={s: s for s in ("train", "valid", "test")},
                      vocab_size=64)


def train_lm(data: Path, save_dir: Path, extra: list[str] = (), *, log_file: Path | None = None,
             updates: int = 30) -> Path:
    """fairseq-train a tiny LM in this process; the checkpoint it saved last."""
    from node_seq.fairseq import inprocess

    task = [] if "--task" in extra else ["--task", "language_modeling"]
    argv = [str(data), *task, *TINY_LM, *TRAIN_LM, "--max-update", str(updates), "--save-dir", str(save_dir), *extra]
    inprocess.train(argv + (["--log-file", str(log_file)] if log_file is not None else []))
    return save_dir / "checkpoint_last.pt"
