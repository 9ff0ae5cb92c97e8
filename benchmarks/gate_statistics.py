"""What the gates of a trained ``rk2_gated`` translation model do, layer by layer, on a data split.

    python -m benchmarks.gate_statistics CHECKPOINT DATA_BIN [--split test] [--out FILE.json]

A gated RK2 step is ``y + g k1 + (1 - g) k2`` with ``k1 = f(y)``, ``k2 = f(y + k1)``: ``g = 1`` is
an Euler step (a plain pre-norm residual layer), ``g = 0.5`` Heun's method. For every gated layer
this reports the mean and spread of ``g`` over the split's real tokens (teacher-forced, one sentence
per batch, so no padding is counted) and the mean relative stage difference ``|k2 - k1| / |k1|``
(0: the field is constant over the step, and every method gives the same layer). Together they say
whether the learned block is a second-order step or has collapsed to a first-order one, which is
what ``benchmarks.elastic_depth`` can only infer from BLEU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Iterator

import torch

from node_seq.nn.coefficients import StageGate


@contextlib.contextmanager
def recording_gates(model: torch.nn.Module) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Within the block, each call of a gate appends ``(g, |k2 - k1| / |k1|)`` per token, flattened,
    under the gate's module name (e.g. ``encoder.layers.0.coefficients``)."""
    records: dict[str, list[torch.Tensor]] = {}
    gates = [(name, module) for name, module in model.named_modules() if isinstance(module, StageGate)]
    if not gates:
        raise SystemExit("CHECKPOINT: the model has no rk2_gated layer (no learned gate to read)")

    def recorder(name: str, gate):
        def gate_and_record(k1: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
            g = gate(k1, k2)
            difference = (k2 - k1).norm(dim=-1) / k1.norm(dim=-1).clamp_min(1e-12)
            records.setdefault(name, []).append(torch.stack([g.reshape(-1), difference.reshape(-1)]))
            return g
        return gate_and_record

    for name, module in gates:
        module.gate = recorder(name, module.gate)  # an instance attribute shadows the method
    try:
        yield records
    finally:
        for _, module in gates:
            del module.gate


def summarise(records: dict[str, list[torch.Tensor]]) -> list[dict]:
    """One row per gated layer: tokens seen, mean and standard deviation of ``g``, mean stage difference."""
    rows = []
    for name, parts in records.items():
        g, difference = torch.cat(parts, dim=1)
        rows.append({"layer": name, "tokens": g.numel(), "gate_mean": round(g.mean().item(), 4),
                     "gate_std": round(g.std().item(), 4), "stage_difference": round(difference.mean().item(), 4)})
    return rows


def measure(model: torch.nn.Module, task, split: str) -> list[dict]:
    """Teacher-forced forward passes over ``split``, one sentence at a time, in eval mode."""
    task.load_dataset(split)
    batches = task.get_batch_iterator(task.dataset(split), max_sentences=1).next_epoch_itr(shuffle=False)
    model.eval()
    with recording_gates(model) as records, torch.no_grad():
        for sample in batches:
            model(**sample["net_input"])
    return summarise(records)


def markdown(rows: list[dict]) -> str:
    lines = ["| gated layer | tokens | mean g (1: Euler, 0.5: Heun) | std of g | mean \\|k2 - k1\\| / \\|k1\\| |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['layer']} | {r['tokens']} | {r['gate_mean']:.3f} | {r['gate_std']:.3f} | "
              f"{r['stage_difference']:.3f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("data_bin", type=Path, help="the binarised data the model was trained on")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    for flag, path in (("CHECKPOINT", args.checkpoint), ("DATA_BIN", args.data_bin)):
        if not path.exists():
            raise SystemExit(f"{flag}: {path} not found")
    from fairseq import checkpoint_utils

    from node_seq.fairseq import model as _registers_node_transformer  # noqa: F401  (and allow-lists checkpoints)

    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(args.checkpoint)],
                                                                    arg_overrides={"data": str(args.data_bin)})
    rows = measure(models[0], task, args.split)
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print(markdown(rows), end="")
    return rows


if __name__ == "__main__":
    main()
