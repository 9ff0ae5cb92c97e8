"""Several processes train as one: ``node-seq-train-hf`` with FSDP2 and with DDP against one process.

One process trains on the whole batch; ``torchrun`` processes (every GPU of the machine, or two CPU
processes with ``--device cpu``) each train on their share of it, with ``--fsdp full_shard`` and
with plain DDP. Same seed, data order and fixed-grid solver, dropout 0: each step's loss must match
one process's. Reported per run: the largest relative loss difference to one process, whether the
logged NFE match, and the Trainer's training samples/s (the machine's, not a tuned figure)::

    python -m benchmarks.fsdp_parity --device cuda --out benchmarks/results/gpu/fsdp
    python -m benchmarks.fsdp_parity --device cpu --quick    # two CPU processes (gloo)

FSDP shards over two processes at least, one per GPU: on a machine with one GPU the result says
so and has no rows.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
from pathlib import Path

import torch

from .common import command_line, machine, markdown_table, write_outputs

SIZES = {"quick": dict(dim=16, ffn=32, layers=1, heads=2, steps=3, batch=16, train=160),
         "full": dict(dim=256, ffn=1024, layers=3, heads=4, steps=30, batch=64, train=4000)}


def processes_for(device: str) -> int:
    return torch.cuda.device_count() if torch.device(device).type == "cuda" else 2


def free_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def train(out: Path, data: Path, *, processes: int, batch: int, sizes: dict, cpu: bool, extra: list[str]) -> list[dict]:
    """One ``node_seq.hf.cli.train`` run (under torchrun with ``processes`` > 1); its log history."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                "--master_port", free_port()] if processes > 1 else [sys.executable]
    subprocess.run([
        *launcher, "-m", "node_seq.hf.cli.train", "--data", str(data), "--out", str(out), "--vocab-size", "128",
        "--embed-dim", str(sizes["dim"]), "--ffn-dim", str(sizes["ffn"]), "--layers", str(sizes["layers"]),
        "--heads", str(sizes["heads"]), "--dropout", "0", "--node-method", "rk4", "--max-steps", str(sizes["steps"]),
        "--batch-size", str(batch), "--warmup-steps", "1", "--logging-steps", "1", "--eval-steps", "100000",
        "--eval-limit", "16", "--beam", "1", "--max-target-length", "8", *(["--cpu"] if cpu else []), *extra],
        check=True)
    return json.loads((out / "log_history.json").read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fsdp_parity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="a tiny model, three steps (a smoke run)")
    parser.add_argument("--work", default="/tmp/bench_work/fsdp_parity", help="data and training runs")
    parser.add_argument("--out", default="benchmarks/results/gpu/fsdp")
    args = parser.parse_args(argv)
    from node_seq.text.numbers import write_task

    sizes, processes = SIZES["quick" if args.quick else "full"], processes_for(args.device)
    meta = {"machine": machine(), "device": args.device, "processes": processes, "sizes": sizes}
    command = command_line("benchmarks.fsdp_parity", argv)
    header = ["run", "processes", "batch per process", "max relative loss difference to one process", "same NFE",
              "training samples/s"]
    if processes < 2:
        meta["skipped"] = f"FSDP shards over two processes at least, one per GPU; this machine has {processes} GPU"
        write_outputs(args.out, command=command, meta=meta, rows=[],
                      table=markdown_table(header, []) + "\n\nNot run: " + meta["skipped"])
        return 0
    work, cpu = Path(args.work), torch.device(args.device).type == "cpu"
    write_task(work / "data", sizes={"train": sizes["train"], "valid": 16, "test": 16})
    global_batch = sizes["batch"]
    runs = {"one process": (1, global_batch, []),
            "FSDP2 full_shard": (processes, global_batch // processes, ["--fsdp", "full_shard"]),
            "DDP": (processes, global_batch // processes, [])}
    histories = {name: train(work / name.replace(" ", "_"), work / "data", processes=n, batch=batch, sizes=sizes,
                             cpu=cpu, extra=extra)
                 for name, (n, batch, extra) in runs.items()}

    def steps(history):
        return [entry for entry in history if "loss" in entry]

    reference = steps(histories["one process"])
    rows = []
    for name, history in histories.items():
        n, batch, _ = runs[name]
        logged = steps(history)
        summary = next(entry for entry in history if "train_samples_per_second" in entry)
        rows.append({"run": name, "processes": n, "batch_per_process": batch,
                     "max_loss_rel_difference": max(abs(a["loss"] - b["loss"]) / abs(b["loss"])
                                                    for a, b in zip(logged, reference)),
                     "same_nfe": [a["nfe_f"] for a in logged] == [b["nfe_f"] for b in reference],
                     "train_samples_per_s": summary["train_samples_per_second"]})
    table = markdown_table(header,
                           [[r["run"], r["processes"], r["batch_per_process"], f"{r['max_loss_rel_difference']:.1e}",
                             r["same_nfe"], r["train_samples_per_s"]] for r in rows])
    if cpu:
        table += "\n\nTwo CPU processes (gloo) on a machine whose cores other jobs shared: samples/s are indicative only."
    write_outputs(args.out, command=command, meta=meta, rows=rows, table=table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
