"""fairseq's command lines on the embedded task (in this process, node_seq.fairseq.inprocess), and what they log."""

from __future__ import annotations

import re
from pathlib import Path


def prepare_numbers(root: Path, *, train: int, valid: int, test: int) -> Path:
    """The embedded numbers task, binarised for fairseq; reused when it already exists."""
    from node_seq.text.numbers import prepare_numbers as prepare

    return prepare(root / f"numbers-{train}-{valid}-{test}", sizes={"train": train, "valid": valid, "test": test},
                   vocab_size=128, reuse=True)


def model_args(*, arch: str, dim: int, ffn: int, heads: int, layers: int, extra: list[str] = ()) -> list[str]:
    """Same width, heads and depth flags for fairseq's ``transformer`` and our ``node_transformer``."""
    args = ["--arch", arch, "--share-all-embeddings", "--dropout", "0.1"]
    for side in ("encoder", "decoder"):
        args += [f"--{side}-embed-dim", str(dim), f"--{side}-ffn-embed-dim", str(ffn),
                 f"--{side}-attention-heads", str(heads), f"--{side}-layers", str(layers)]
    if arch == "transformer":
        args += ["--encoder-normalize-before", "--decoder-normalize-before"]  # pre-norm, as our layers
    return [*args, *extra]


def fairseq_train(data: Path, save_dir: Path, args: list[str], *, max_update: int, log_interval: int,
                  device: str, threads: int, save: bool = False) -> list[dict]:
    """Run fairseq-train; return its JSON log records."""
    import torch

    from node_seq.fairseq import inprocess

    torch.set_num_threads(threads)
    save_dir.mkdir(parents=True, exist_ok=True)
    log = save_dir / "train.log"
    if log.exists():
        log.unlink()
    argv = [str(data), *args,
            "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "5e-4",
            "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--max-tokens", "1024", "--max-update", str(max_update), "--max-epoch", "1000", "--seed", "1",
            "--num-workers", "0", "--log-format", "json", "--log-interval", str(log_interval), "--no-progress-bar",
            "--disable-validation", "--save-dir", str(save_dir), "--log-file", str(log)]
    argv += ["--no-epoch-checkpoints"] if save else ["--no-save"]  # saves checkpoint_last.pt
    if device == "cpu":
        argv.append("--cpu")
    inprocess.train(argv)
    return inprocess.json_records(log.read_text(encoding="utf-8"))


def train_intervals(records: list[dict]) -> list[dict]:
    """The per-log-interval records (fairseq's ``train_inner``), once each."""
    seen, out = set(), []
    for r in records:
        if "loss" in r and "wps" in r and r["num_updates"] not in seen:
            seen.add(r["num_updates"])
            out.append(r)
    return out


GENERATE_SUMMARY = re.compile(r"Translated ([\d,]+) sentences \(([\d,]+) tokens\) in ([\d.]+)s "
                              r"\(([\d.]+) sentences/s, ([\d.]+) tokens/s\)")


def fairseq_generate(data: Path, checkpoint: Path, args: list[str], *, device: str, threads: int) -> dict:
    """Run fairseq-generate; return sentences, tokens, seconds, rates, NFE."""
    import torch

    from node_seq.fairseq import inprocess
    from node_seq.text.generate_log import read_nfe

    torch.set_num_threads(threads)
    argv = [str(data), "--path", str(checkpoint), "--gen-subset", "test", "--num-workers", "0",
            "--required-batch-size-multiple", "1", *args]
    if device == "cpu":
        argv.append("--cpu")
    text = inprocess.generate(argv)
    match = GENERATE_SUMMARY.search(text)
    if match is None:
        raise RuntimeError(f"fairseq-generate printed no summary:\n{text[-3000:]}")
    return {"sentences": int(match[1].replace(",", "")), "tokens": int(match[2].replace(",", "")),
            "seconds": float(match[3]), "sentences_per_s": float(match[4]), "tokens_per_s": float(match[5]),
            "nfe_per_sentence": read_nfe(text), "output": text}
