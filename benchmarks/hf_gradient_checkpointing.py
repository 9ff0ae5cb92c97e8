"""Peak memory and time of an HF training step with transformers' activation checkpointing off and on.

For each model (seq2seq, LM) and method, three ways to take the gradient of one training step
(forward + backward of the loss, dropout on): ``off``; ``activation checkpointing``
(``model.activation_checkpointing_enable()``: each layer keeps its input and recomputes its solve
in the backward pass); and, on fixed grids, the ODE's own ``node_gradient="checkpoint"`` (one state
kept per step). Each row also gives the NFE and the largest gradient difference from ``off`` (the
same seed, so the same dropout masks: 0 up to rounding).

Peak memory on the CPU is the peak of live tensor storage created during the step
(``node_seq.memory.LiveTensorBytes``: parameters excluded, gradients included); on a GPU,
``torch.cuda.max_memory_allocated`` above what was allocated before. Times are the median ratio to
``off`` over interleaved rounds (``benchmarks.common.interleaved_ratios``)::

    python -m benchmarks.hf_gradient_checkpointing --out benchmarks/results/hf_gradient_checkpointing
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from node_seq.hf import (
    NodeTransformerConfig, NodeTransformerForCausalLM, NodeTransformerForConditionalGeneration, NodeTransformerLMConfig,
)
from node_seq.memory import LiveTensorBytes
from node_seq.nn.layers import collect_stats

from .common import add_common_args, command_line, interleaved_ratios, machine, markdown_table, synchronize, \
    write_outputs

MODELS = ("seq2seq", "lm")
METHODS = {"rk4": dict(node_method="rk4", node_steps=4), "dopri5": dict(node_method="dopri5")}
OFF, SWITCH, ODE_CHECKPOINT = "off", "activation checkpointing", "node_gradient=checkpoint"


@dataclasses.dataclass(frozen=True)
class Size:
    width: int
    layers: int
    heads: int
    batch: int
    length: int
    vocab: int = 1000


FULL, QUICK = Size(width=128, layers=2, heads=4, batch=8, length=32), Size(width=16, layers=1, heads=2, batch=2, length=6)


def build(kind: str, size: Size, node: dict, device: str) -> tuple[torch.nn.Module, dict]:
    """A freshly initialised model in train mode, and a batch of random tokens with labels."""
    torch.manual_seed(0)
    common = dict(vocab_size=size.vocab, decoder_embed_dim=size.width, decoder_ffn_dim=4 * size.width,
                  decoder_layers=size.layers, decoder_attention_heads=size.heads, dropout=0.1, **node)
    tokens = torch.randint(4, size.vocab, (size.batch, size.length), device=device)
    if kind == "lm":
        model = NodeTransformerForCausalLM(NodeTransformerLMConfig(**common))
        batch = dict(input_ids=tokens, labels=tokens)
    else:
        model = NodeTransformerForConditionalGeneration(NodeTransformerConfig(
            encoder_embed_dim=size.width, encoder_ffn_dim=4 * size.width, encoder_layers=size.layers,
            encoder_attention_heads=size.heads, **common))
        batch = dict(input_ids=tokens, labels=tokens.roll(1, dims=1))
    return model.to(device).train(), batch


def training_step(model: torch.nn.Module, batch: dict) -> None:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same dropout masks in every variant
    model(**batch).loss.backward()


def peak_bytes(model: torch.nn.Module, batch: dict, device: str) -> int:
    if torch.device(device).type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        training_step(model, batch)
        synchronize(device)
        return torch.cuda.max_memory_allocated() - base
    with LiveTensorBytes() as tracker:
        training_step(model, batch)
    return tracker.peak


def variants(kind: str, method: str, size: Size, device: str) -> dict[str, tuple[torch.nn.Module, dict]]:
    """The models of one (kind, method): the same weights, each with its way of taking gradients."""
    out = {OFF: build(kind, size, METHODS[method], device)}
    switched = build(kind, size, METHODS[method], device)
    switched[0].activation_checkpointing_enable()
    out[SWITCH] = switched
    if method != "dopri5":  # the ODE's own checkpointing needs a fixed grid
        out[ODE_CHECKPOINT] = build(kind, size, {**METHODS[method], "node_gradient": "checkpoint"}, device)
    return out


def measure(kind: str, method: str, size: Size, args: argparse.Namespace) -> list[dict]:
    models = variants(kind, method, size, args.device)
    grads, rows = {}, []
    for name, (model, batch) in models.items():
        training_step(model, batch)  # warm-up: first-call allocations are not the step's
        peak = peak_bytes(model, batch, args.device)
        stats = collect_stats(model)
        grads[name] = [p.grad for p in model.parameters()]
        rows.append({"model": kind, "method": method, "variant": name, "peak_bytes": int(peak),
                     "nfe_forward": stats.nfe_forward, "nfe_backward": stats.nfe_backward,
                     "max_grad_diff_vs_off": max(float((g - g0).abs().max()) for g, g0 in zip(grads[name], grads[OFF]))})
    timings = interleaved_ratios({name: (lambda m=model, b=batch: training_step(m, b))
                                  for name, (model, batch) in models.items()},
                                 baseline=OFF, repeats=args.repeats or (1 if args.quick else 5), device=args.device)
    off_peak = rows[0]["peak_bytes"]
    for row in rows:
        timing = timings[row["variant"]]
        row.update(peak_vs_off=row["peak_bytes"] / off_peak, seconds_per_step=timing["median_seconds"],
                   time_vs_off=timing["ratio"], time_vs_off_range=[timing["ratio_min"], timing["ratio_max"]])
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hf_gradient_checkpointing",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    add_common_args(parser, default_out="benchmarks/results/hf_gradient_checkpointing")
    args = parser.parse_args(argv)
    models, methods = args.models.split(","), args.methods.split(",")
    for option, given, allowed in (("--models", models, MODELS), ("--methods", methods, tuple(METHODS))):
        if unknown := [value for value in given if value not in allowed]:
            parser.error(f"{option}: unknown {unknown[0]!r}; choose from {', '.join(allowed)}")
    torch.set_num_threads(args.threads)
    size = QUICK if args.quick else FULL
    rows = []
    for kind in models:
        for method in methods:
            for row in measure(kind, method, size, args):
                rows.append(row)
                print(f"{kind:>7} {method:>6} {row['variant']:>24}: peak {row['peak_bytes'] / 2**20:8.2f} MiB "
                      f"({row['peak_vs_off']:.2f}x)  time {row['time_vs_off']:.2f}x  "
                      f"nfe {row['nfe_forward']}/{row['nfe_backward']}", flush=True)
    meta = {"machine": machine(), "device": args.device, "size": dataclasses.asdict(size),
            "measure": "cuda max_memory_allocated" if args.device != "cpu" else "live tensor storage bytes",
            "note": "The machine's cores were shared with other jobs while this ran: times are ratios "
                    "over interleaved rounds, memory is counted, not timed"}
    header = ["model", "method", "gradients", "peak (MiB)", "peak vs off", "time vs off (range)", "s / step",
              "NFE f/b", "max grad diff vs off"]
    table = markdown_table(header, [
        [r["model"], r["method"], r["variant"], r["peak_bytes"] / 2**20, f"{r['peak_vs_off']:.2f}x",
         f"{r['time_vs_off']:.2f}x ({r['time_vs_off_range'][0]:.2f}-{r['time_vs_off_range'][1]:.2f})",
         r["seconds_per_step"], f"{r['nfe_forward']}/{r['nfe_backward']}", f"{r['max_grad_diff_vs_off']:.1e}"]
        for r in rows])
    table += (f"\n\nModels: width {size.width}, FFN {4 * size.width}, {size.layers} layer(s) per side, {size.heads} "
              f"heads, batch {size.batch} x {size.length} tokens, dropout 0.1; rk4 takes 4 steps. {meta['note']}.")
    write_outputs(args.out, command=command_line("benchmarks.hf_gradient_checkpointing", argv), meta=meta, rows=rows,
                  table=table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
