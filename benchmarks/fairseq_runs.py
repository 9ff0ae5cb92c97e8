"""Running fairseq's command-line tools on the embedded task, and reading what they log."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def prepare_numbers(root: Path, *, train: int, valid: int, test: int) -> Path:
    """The embedded numbers task, binarised for fairseq; reused when it already exists."""
    from node_seq.text.numbers import write_task
    from node_seq.text.prepare import prepare

    tag = root / f"numbers-{train}-{valid}-{test}"
    if (tag / "data" / "bin" / "dict.src.txt").exists():
        return tag / "data" / "bin"
    write_task(tag / "raw", sizes={"train": train, "valid": valid, "test": test})
    with contextlib.redirect_stdout(io.StringIO()):
        return prepare(tag / "raw", tag / "data", src="src", tgt="tgt",
                       splits={"train": "train", "valid": "valid", "test": "test"}, vocab_size=128)


def model_args(*, arch: str, dim: int, ffn: int, heads: int, layers: int, extra: list[str] = ()) -> list[str]:
    """Same width, heads and depth flags for fairseq's ``transformer`` and our ``node_transformer``."""
    args = ["--arch", arch, "--share-all-embeddings", "--dropout", "0.1"]
    for side in ("encoder", "decoder"):
        args += [f"--{side}-embed-dim", str(dim), f"--{side}-ffn-embed-dim", str(ffn),
                 f"--{side}-attention-heads", str(heads), f"--{side}-layers", str(layers)]
    if arch == "transformer":
        args += ["--encoder-normalize-before", "--decoder-normalize-before"]  # pre-norm, as our layers
    return [*args, *extra]


def _quiet_console() -> list:
    """fairseq logs at INFO to the console; keep the console to warnings, the log files get INFO."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    changed = []
    for handler in root.handlers:
        if not isinstance(handler, logging.FileHandler) and handler.level < logging.WARNING:
            changed.append((handler, handler.level))
            handler.setLevel(logging.WARNING)
    return changed


def _restore(changed: list) -> None:
    for handler, level in changed:
        handler.setLevel(level)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):  # fairseq-train's --log-file handler
            root.removeHandler(handler)
            handler.close()


def fairseq_train(data: Path, save_dir: Path, args: list[str], *, max_update: int, log_interval: int,
                  device: str, threads: int, save: bool = False) -> list[dict]:
    """Run fairseq-train's ``main`` in this process; return its JSON log records.

    In-process rather than a subprocess: no interpreter and import start-up per run, and the same
    ``torch.set_num_threads`` for every run.
    """
    import torch
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq_cli import train

    torch.set_num_threads(threads)
    save_dir.mkdir(parents=True, exist_ok=True)
    log = save_dir / "train.log"
    if log.exists():
        log.unlink()
    argv = [str(data), "--user-dir", str(REPO / "user_dir"), *args,
            "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "5e-4",
            "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--max-tokens", "1024", "--max-update", str(max_update), "--max-epoch", "1000", "--seed", "1",
            "--num-workers", "0", "--log-format", "json", "--log-interval", str(log_interval), "--no-progress-bar",
            "--disable-validation", "--save-dir", str(save_dir), "--log-file", str(log)]
    argv += ["--no-epoch-checkpoints"] if save else ["--no-save"]  # saves checkpoint_last.pt
    if device == "cpu":
        argv.append("--cpu")
    parsed = options.parse_args_and_arch(options.get_training_parser(), argv)
    changed = _quiet_console()
    try:
        train.main(convert_namespace_to_omegaconf(parsed))
    finally:
        _restore(changed)
    return json_records(log.read_text(encoding="utf-8"))


def json_records(text: str) -> list[dict]:
    records = []
    for line in text.splitlines():
        start = line.find('{"')
        if start >= 0:
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line[start:]))
    return records


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
    """Run fairseq-generate's ``main`` in this process; return sentences, tokens, seconds, rates, NFE."""
    import torch
    from fairseq import options
    from fairseq_cli import generate

    from node_seq.fairseq.nfe_logging import GENERATION
    from node_seq.text.generate_log import read_nfe

    torch.set_num_threads(threads)
    GENERATION.sentences, GENERATION.weighted_nfe = 0, 0.0  # a process-wide counter: start each run at zero
    argv = [str(data), "--user-dir", str(REPO / "user_dir"), "--path", str(checkpoint), "--gen-subset", "test",
            "--num-workers", "0", "--required-batch-size-multiple", "1", *args]
    if device == "cpu":
        argv.append("--cpu")
    parsed = options.parse_args_and_arch(options.get_generation_parser(), argv)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("fairseq_cli.generate")
    logger.addHandler(handler)
    changed = _quiet_console()
    try:
        with contextlib.redirect_stdout(stream):
            generate.main(parsed)
    finally:
        logger.removeHandler(handler)
        _restore(changed)
    text = stream.getvalue()
    match = GENERATE_SUMMARY.search(text)
    if match is None:
        raise RuntimeError(f"fairseq-generate printed no summary:\n{text[-3000:]}")
    return {"sentences": int(match[1].replace(",", "")), "tokens": int(match[2].replace(",", "")),
            "seconds": float(match[3]), "sentences_per_s": float(match[4]), "tokens_per_s": float(match[5]),
            "nfe_per_sentence": read_nfe(text), "output": text}
