"""Helpers shared by the benchmark scripts: interleaved timing, run metadata, tables, output files."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch


def add_common_args(parser, *, default_out: str) -> None:
    parser.add_argument("--quick", action="store_true", help="a small, fast smoke run")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (median is reported)")
    parser.add_argument("--out", default=default_out, help="path prefix for <out>.json / .md (/.png)")


def machine() -> dict:
    """Where and when a result was measured: this goes next to every table."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "date": datetime.date.today().isoformat()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def synchronize(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved_ratios(variants: Mapping[str, Callable[[], object]], *, baseline: str, repeats: int,
                       device: str = "cpu", warmup: int = 1, min_seconds: float = 0.05) -> dict[str, dict]:
    """Time every variant in the same rounds and report its median ratio to ``baseline``.

    Each round runs every variant once (the order rotates from round to round, so no variant always
    follows another) with ``number`` calls per sample, chosen so a sample lasts ``min_seconds``.
    A round's ratio is variant time / baseline time of that round: load that drifts across rounds
    (other users of a shared CPU) cancels out, which a ratio of two separate medians would not.
    """
    names = list(variants)
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    synchronize(device)
    start = time.perf_counter()
    variants[baseline]()
    synchronize(device)
    number = max(1, round(min_seconds / max(time.perf_counter() - start, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            fn = variants[name]
            synchronize(device)
            start = time.perf_counter()
            for _ in range(number):
                fn()
            synchronize(device)
            samples[name].append((time.perf_counter() - start) / number)
    base = samples[baseline]
    return {name: {"ratio": statistics.median(s / b for s, b in zip(samples[name], base)),
                   "median_seconds": statistics.median(samples[name]),
                   "ratio_min": min(s / b for s, b in zip(samples[name], base)),
                   "ratio_max": max(s / b for s, b in zip(samples[name], base))}
            for name in names}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def write_outputs(out: str, *, command: str, meta: dict, rows: list[dict], table: str) -> None:
    """``<out>.json`` (everything) and ``<out>.md`` (the table with its command and machine)."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{out}.json", "w", encoding="utf-8") as f:
        json.dump({"command": command, "meta": meta, "rows": rows}, f, indent=2)
    m = meta["machine"]
    header = (f"Command: `{command}`  \nMachine: {m['cpu']} ({m['cpu_count']} cores, {m['threads']} torch "
              f"thread(s){', ' + m['gpu'] if 'gpu' in m else ''}), device {meta.get('device', 'cpu')}; "
              f"torch {m['torch']}; {m['date']}\n\n")
    with open(f"{out}.md", "w", encoding="utf-8") as f:
        f.write(header + table + "\n")


def command_line(module: str, argv: Sequence[str] | None) -> str:
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python -m", module, *args])
