"""Every benchmark on one device in one go, with the headline figures in one table (for a GPU session).

Runs, each writing its own ``<name>.{json,md}`` under ``--out-dir`` (default ``benchmarks/results/gpu``):

* ``solver_overhead``: ``solve`` against a plain loop and torchdiffeq at small batch (launch-bound sizes);
* ``compile``: eager against ``torch.compile`` for a training step and a cached decoding step, plain
  and NODE; on CUDA a second decoding run with ``mode="reduce-overhead"`` (CUDA graphs);
* ``fairseq_train``: NODE training tokens/s against fairseq's Transformer (same evaluations);
* ``decoding``: fairseq-generate sentences/s with the per-stage cache;
* ``odenet4``: ODENet4 training images/s on CIFAR-sized inputs, fp32 and bf16 autocast (AMP), by
  ``python -m vision.throughput``;
* ``mixed_precision``: an HF NODE-Transformer's training step in float32 and under bf16 autocast
  (rk4 and dopri5): time, peak memory, NFE, final loss.
* ``fsdp``: ``node-seq-train-hf`` on every GPU with ``--fsdp full_shard`` and with DDP against one
  process with the whole batch (``benchmarks.fsdp_parity``; needs two GPUs, says so on one).

then ``gpu_suite.{json,md}``: one line per headline figure. Meant to finish well inside ten
minutes on one GPU; ``--device cpu --quick`` is its smoke test::

    python -m benchmarks.gpu_suite --device cuda
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from . import compile as compile_benchmark
from . import decoding, fairseq_train, fsdp_parity, mixed_precision, solver_overhead
from .common import command_line, machine, markdown_table, write_outputs


def odenet4_throughput(out: str, *, device: str, quick: bool, repeats: int) -> None:
    """``python -m vision.throughput`` (vision sits beside the benchmarks: run, not imported), then
    its rows as a table with this suite's header."""
    batch = 8 if quick else 128
    subprocess.run([sys.executable, "-m", "vision.throughput", "--model", "odenet4", "--device", device,
                    "--batch-size", str(batch), "--repeats", str(repeats), "--out", out], check=True)
    rows = json.loads(Path(out + ".json").read_text(encoding="utf-8"))["rows"]
    table = markdown_table(["precision", "batch", "images/s (median)"],
                           [[r["precision"], r["batch"], r["images_per_s"]] for r in rows])
    write_outputs(out, command=f"python -m vision.throughput --model odenet4 --device {device} --batch-size {batch}",
                  meta={"machine": machine(), "device": device, "repeats": repeats}, rows=rows, table=table)


def _rows(prefix: Path) -> list[dict]:
    return json.loads(prefix.with_suffix(".json").read_text())["rows"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_suite", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="the smallest sizes, one round: a smoke run")
    parser.add_argument("--out-dir", default="benchmarks/results/gpu")
    parser.add_argument("--work", default="/tmp/bench_work/gpu_suite", help="fairseq data and checkpoints")
    parser.add_argument("--backend", default=None, help="torch.compile backend (default: inductor; "
                        "aot_eager with --quick on a CPU, where inductor's code generation takes minutes)")
    args = parser.parse_args(argv)
    out, work, dev = Path(args.out_dir), Path(args.work), ["--device", args.device]
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.device(args.device).type == "cuda"
    backend = args.backend or ("aot_eager" if args.quick and not cuda else "inductor")
    quick = ["--quick", "--repeats", "1"] if args.quick else []
    seconds: dict[str, float] = {}

    def run(name: str, fn) -> None:
        start = time.perf_counter()
        fn()
        seconds[name] = time.perf_counter() - start
        print(f"gpu_suite: {name} done in {seconds[name]:.0f} s", flush=True)

    run("solver_overhead", lambda: solver_overhead.main(
        [*dev, "--quick", "--repeats", "1" if args.quick else "15", *(["--methods", "rk4"] if args.quick else []),
         "--out", str(out / "solver_overhead")]))
    run("compile", lambda: compile_benchmark.main([*dev, *quick, "--backend", backend, "--out", str(out / "compile")]))
    if cuda:
        run("compile_cudagraphs", lambda: compile_benchmark.main(
            [*dev, *quick, "--backend", backend, "--cells", "decode", "--decode-mode", "reduce-overhead",
             "--out", str(out / "compile_cudagraphs")]))
    run("fairseq_train", lambda: fairseq_train.main(
        [*dev, "--no-adaptive", "--work", str(work / "train"), "--out", str(out / "fairseq_train"),
         *(["--quick", "--updates", "2"] if args.quick else [])]))
    run("decoding", lambda: decoding.main(
        [*dev, "--work", str(work / "decoding"), "--out", str(out / "decoding"), *(["--quick"] if args.quick else [])]))
    run("odenet4", lambda: odenet4_throughput(str(out / "odenet4"), device=args.device, quick=args.quick,
                                              repeats=1 if args.quick else 20))
    run("mixed_precision", lambda: mixed_precision.main(
        [*dev, *(["--quick", "--repeats", "1", "--train-steps", "2"] if args.quick else []),
         "--out", str(out / "mixed_precision")]))
    run("fsdp", lambda: fsdp_parity.main(
        [*dev, "--work", str(work / "fsdp"), "--out", str(out / "fsdp"), *(["--quick"] if args.quick else [])]))

    headline = []
    for r in _rows(out / "solver_overhead"):
        headline.append(("solver overhead", f"{r['field']} {r['method']} {r['pass']}: solve / torchdiffeq",
                         r["solve_vs_torchdiffeq"]))
    for name in ("compile", "compile_cudagraphs"):
        if (out / name).with_suffix(".json").exists():
            for r in _rows(out / name):
                if r["variant"].endswith("compiled"):
                    headline.append((name, f"{r['cell']} {r['variant']} ({r['compile_mode']}): eager / compiled",
                                     r["compiled_speedup"]))
                    headline.append((name, f"{r['cell']} {r['variant']}: time / plain compiled",
                                     r["ratio_to_plain_compiled"]))
    for r in _rows(out / "fairseq_train"):
        if r.get("part") == "throughput":
            headline.append(("training", f"{r['variant']}: target tokens/s", r["wps_median"]))
    for r in _rows(out / "decoding"):
        headline.append(("decoding", f"length {r['length']}, {r['variant']}: sentences/s", r["sentences_per_s"]))
    for r in _rows(out / "odenet4"):
        headline.append(("odenet4", f"{r['precision']}, batch {r['batch']}: images/s", r["images_per_s"]))
    for r in _rows(out / "mixed_precision"):
        if r["precision"] != "float32":
            headline.append(("mixed precision", f"{r['method']} {r['precision']}: step time / float32",
                             r["time_vs_float32"]))
            headline.append(("mixed precision", f"{r['method']} {r['precision']}: peak memory / float32",
                             r["peak_vs_float32"]))
    fsdp = json.loads((out / "fsdp.json").read_text())
    if "skipped" in fsdp["meta"]:
        headline.append(("fsdp", "not run", fsdp["meta"]["skipped"]))
    for r in fsdp["rows"]:
        headline.append(("fsdp", f"{r['run']}, {r['processes']} processes: max relative loss difference to one",
                         r["max_loss_rel_difference"]))
        headline.append(("fsdp", f"{r['run']}, {r['processes']} processes: training samples/s",
                         r["train_samples_per_s"]))
    table = markdown_table(["benchmark", "figure", "value"], headline)
    table += "\n\nSeconds per benchmark: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())
    meta = {"machine": machine(), "device": args.device, "backend": backend, "quick": args.quick, "seconds": seconds}
    write_outputs(str(out / "gpu_suite"), command=command_line("benchmarks.gpu_suite", argv), meta=meta,
                  rows=[{"benchmark": b, "figure": f, "value": v} for b, f, v in headline], table=table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
