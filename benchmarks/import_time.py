"""Issue 13, item 2: how long a fresh interpreter takes to ``import`` each entry point of node-seq.

Every sample is a new ``python -c "import X"`` with the source tree on ``PYTHONPATH``, so nothing is
cached in the process (the OS file cache is warm after the first round). Rounds interleave every
(tree, module) pair, the order rotating, and each sample is also divided by the same round's
``import torch``, the floor every entry point pays. The table lists which of transformers and
fairseq each import pulled in. Compare two checkouts in one session with ``--tree``::

    python -m benchmarks.import_time --tree before=/tmp/base --tree after=. --repeats 9
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .common import command_line, machine, markdown_table, write_outputs

REPO = Path(__file__).resolve().parents[1]
MODULES = ("torch", "node_seq", "node_seq.ode", "vision", "node_seq.hf")
HEAVY = ("transformers", "fairseq")
PROBE = "import sys, json, {module}; print(json.dumps([name for name in {heavy!r} if name in sys.modules]))"


def time_import(tree: Path, module: str) -> tuple[float, list[str]]:
    """Wall seconds of a fresh ``import module`` from ``tree``, and the heavy packages it loaded."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = PROBE.format(module=module, heavy=HEAVY)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True,
                            check=True)
    return time.perf_counter() - start, json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.import_time", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", default=None, metavar="NAME=PATH",
                        help="a source tree to import from (repeatable; default: this checkout, as 'this')")
    parser.add_argument("--modules", default=",".join(MODULES), help="comma-separated modules; torch is the floor")
    parser.add_argument("--quick", action="store_true", help="one round (a smoke run)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 7; the median is reported)")
    parser.add_argument("--out", default="benchmarks/results/import_time", help="path prefix for <out>.json / .md")
    args = parser.parse_args(argv)
    trees = dict(t.split("=", 1) for t in (args.tree or [f"this={REPO}"]))
    trees = {name: Path(path).resolve() for name, path in trees.items()}
    modules = list(dict.fromkeys(["torch", *args.modules.split(",")]))
    repeats = args.repeats or (1 if args.quick else 7)
    pairs = [(tree, module) for tree in trees for module in modules]
    seconds: dict[tuple[str, str], list[float]] = {pair: [] for pair in pairs}
    loaded: dict[tuple[str, str], list[str]] = {}
    floors: dict[str, list[float]] = {tree: [] for tree in trees}
    for r in range(repeats + 1):  # round 0 warms the file cache and is dropped
        order = pairs[r % len(pairs):] + pairs[: r % len(pairs)]
        this_round = {}
        for tree, module in order:
            this_round[tree, module], loaded[tree, module] = time_import(trees[tree], module)
        if r:
            for pair in pairs:
                seconds[pair].append(this_round[pair])
            for tree in trees:
                floors[tree].append(this_round[tree, "torch"])
    rows = []
    for tree, module in pairs:
        samples = seconds[tree, module]
        rows.append({"tree": tree, "module": module, "median_seconds": statistics.median(samples),
                     "min_seconds": min(samples), "max_seconds": max(samples),
                     "vs_torch": statistics.median(s / f for s, f in zip(samples, floors[tree])),
                     "imports": loaded[tree, module]})
    table = markdown_table(["tree", "import", "median s", "min-max s", "x import torch", "pulls in"],
                           [[r["tree"], r["module"], r["median_seconds"],
                             f"{r['min_seconds']:.2f}-{r['max_seconds']:.2f}", r["vs_torch"],
                             ", ".join(r["imports"]) or "-"] for r in rows])
    table += f"\n\n{repeats} rounds after one warm-up round; trees: " + ", ".join(
        f"{name} = `{path}`" for name, path in trees.items())
    meta = {"machine": machine(), "trees": {name: str(path) for name, path in trees.items()},
            "repeats": repeats, "python": sys.executable}
    write_outputs(args.out, command=command_line("benchmarks.import_time", argv), meta=meta, rows=rows, table=table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
