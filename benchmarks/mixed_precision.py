"""Mixed precision: float32 against bfloat16 autocast for an HF NODE-Transformer, on a fixed grid and dopri5.

What ``Trainer(bf16=True)`` (``node-seq-train-hf --bf16``) does: the forward pass and the loss under
``torch.autocast(device, dtype=torch.bfloat16)``, the backward pass and Adam on the float32
parameters. The model is the seq2seq model at the sizes of ``benchmarks.fairseq_train`` and
``benchmarks.decoding`` (width 64, ffn 128, 4 heads) with one ODE layer per side; the task is copying
random token sequences (padded like a real batch), so the loss has somewhere to go in a few hundred
updates. Per method and precision:

* cost: milliseconds per training step (forward, backward, Adam), both precisions timed in the same
  interleaved rounds (:func:`~benchmarks.common.interleaved_ratios`); peak bytes of the tensors one
  training step creates (:class:`node_seq.memory.LiveTensorBytes`);
* work: NFE per training step, forward and backward (dopri5's depends on the precision);
* accuracy: the mean loss of the last tenth of the training, both precisions from the same
  initialisation on the same batches; and, at that initialisation, the largest difference of the
  logits from float32's (relative to the largest float32 logit).

Each method's two precisions start from the same weights::

    python -m benchmarks.mixed_precision --out benchmarks/results/mixed_precision
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch

from .common import add_common_args, command_line, interleaved_ratios, machine, markdown_table, write_outputs

PRECISIONS = ("float32", "bf16 autocast")


def build_model(method: str, *, dim: int, ffn: int, heads: int, vocab: int, device: str):
    from node_seq.hf import NodeTransformerConfig, NodeTransformerForConditionalGeneration

    solver = dict(node_method=method, node_steps=1) if method == "rk4" else dict(node_method=method)
    config = NodeTransformerConfig(vocab_size=vocab, encoder_embed_dim=dim, decoder_embed_dim=dim, encoder_ffn_dim=ffn,
                                   decoder_ffn_dim=ffn, encoder_attention_heads=heads, decoder_attention_heads=heads,
                                   encoder_layers=1, decoder_layers=1, dropout=0.0, share_all_embeddings=True,
                                   max_position_embeddings=256, **solver)
    torch.manual_seed(0)
    return NodeTransformerForConditionalGeneration(config).to(device)


def copy_batch(step: int, *, rows: int, length: int, vocab: int, device: str) -> dict:
    """Random sentences to copy, each row shorter than the widest by 0..3 positions (padding 1, labels -100)."""
    generator = torch.Generator().manual_seed(step)
    ids = torch.randint(4, vocab, (rows, length), generator=generator)
    labels = ids.clone()
    for row, short in enumerate((torch.arange(rows) % 4).tolist()):
        if short:
            ids[row, -short:] = 1
            labels[row, -short:] = -100
    return {"input_ids": ids.to(device), "attention_mask": ids.ne(1).long().to(device), "labels": labels.to(device)}


def autocast(precision: str, device: str):
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision != "float32")


class Training:
    """One model trained in one precision: a step on the next batch, and the NFE and losses it saw."""

    def __init__(self, model, precision: str, batches, device: str):
        from node_seq.nn.layers import collect_stats

        self.model, self.precision, self.batches, self.device = model.train(), precision, batches, device
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        self.collect_stats = collect_stats
        self.losses: list[float] = []
        self.nfe: list[tuple[int, int]] = []
        self.steps = 0

    def step(self) -> None:
        inputs = self.batches(self.steps)
        self.steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.precision, self.device):
            loss = self.model(**inputs).loss
        loss.backward()
        self.optimizer.step()
        stats = self.collect_stats(self.model)
        self.losses.append(float(loss.detach()))
        self.nfe.append((stats.nfe_forward, stats.nfe_backward))


def peak_bytes(training: Training) -> int:
    """Peak bytes of the tensors one training step creates (forward and backward, not Adam's state):
    the CUDA allocator's peak above what was allocated before, or on the CPU :class:`LiveTensorBytes`'s."""
    from node_seq.memory import LiveTensorBytes

    inputs = training.batches(0)
    training.model.zero_grad(set_to_none=True)
    cuda = torch.device(training.device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    with LiveTensorBytes() as tracked:
        with autocast(training.precision, training.device):
            loss = training.model(**inputs).loss
        loss.backward()
    peak = torch.cuda.max_memory_allocated() - before if cuda else tracked.peak
    training.model.zero_grad(set_to_none=True)
    return peak


def logits_difference(models: dict, inputs: dict, device: str) -> dict[str, float]:
    """Per precision: max |logits - float32 logits| / max |float32 logits|, in evaluation mode."""
    logits = {}
    for precision, model in models.items():
        with torch.no_grad(), autocast(precision, device):
            logits[precision] = model.eval()(**inputs).logits.float()
        model.train()
    reference = logits["float32"]
    return {p: float((x - reference).abs().max() / reference.abs().max()) for p, x in logits.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mixed_precision", description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="rk4,dopri5", help="NODE methods, comma-separated")
    parser.add_argument("--train-steps", type=int, default=None, help="updates of each training (default 300)")
    parser.add_argument("--shared-cores", action="store_true",
                        help="say under the table that other jobs shared the machine's cores while measuring")
    add_common_args(parser, default_out="benchmarks/results/mixed_precision")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        dim, ffn, heads, vocab, rows, length, train_steps, repeats = 16, 32, 2, 32, 4, 6, 4, args.repeats or 1
    else:
        dim, ffn, heads, vocab, rows, length, train_steps, repeats = 64, 128, 4, 64, 32, 12, 300, args.repeats or 15
    train_steps = args.train_steps or train_steps

    def batches(step: int) -> dict:
        return copy_batch(step, rows=rows, length=length, vocab=vocab, device=args.device)

    rows_out = []
    for method in args.methods.split(","):
        initial = build_model(method, dim=dim, ffn=ffn, heads=heads, vocab=vocab, device=args.device)
        models = {precision: copy.deepcopy(initial) for precision in PRECISIONS}
        difference = logits_difference(models, batches(10 ** 6), args.device)
        trainings = {p: Training(models[p], p, batches, args.device) for p in PRECISIONS}
        peaks = {p: peak_bytes(training) for p, training in trainings.items()}
        for _ in range(train_steps):
            for training in trainings.values():
                training.step()
        # The cost of a step of the trained models, both precisions in the same rounds.
        timing = interleaved_ratios({p: t.step for p, t in trainings.items()}, baseline="float32",
                                    repeats=repeats, device=args.device)
        last = max(1, train_steps // 10)
        for precision, training in trainings.items():
            nfe = training.nfe[:train_steps]
            rows_out.append({
                "method": method, "precision": precision, "ms_per_step": 1e3 * timing[precision]["median_seconds"],
                "time_vs_float32": timing[precision]["ratio"],
                "time_vs_float32_range": [timing[precision]["ratio_min"], timing[precision]["ratio_max"]],
                "peak_bytes": peaks[precision], "peak_vs_float32": peaks[precision] / peaks["float32"],
                "nfe_forward_per_step": statistics.mean(f for f, _ in nfe),
                "nfe_backward_per_step": statistics.mean(b for _, b in nfe),
                "first_loss": training.losses[0], "final_loss": statistics.mean(training.losses[train_steps - last:
                                                                                                train_steps]),
                "logits_max_rel_diff_vs_float32": difference[precision],
            })
    table = markdown_table(
        ["method", "precision", "ms / step", "time / float32", "peak MB", "peak / float32", "NFE-F / step",
         "NFE-B / step", "loss at start", "final loss", "max logit diff / max logit"],
        [[r["method"], r["precision"], r["ms_per_step"], r["time_vs_float32"], r["peak_bytes"] / 2 ** 20,
          r["peak_vs_float32"], r["nfe_forward_per_step"], r["nfe_backward_per_step"], r["first_loss"],
          r["final_loss"], f"{r['logits_max_rel_diff_vs_float32']:.2e}"] for r in rows_out])
    table += (f"\n\nSeq2seq NODE-Transformer, width {dim}, ffn {ffn}, {heads} heads, 1+1 ODE layers (rk4: one step; "
              f"dopri5: the default tolerances, rtol 1e-3, atol 1e-4); copying {rows} random sentences of up to "
              f"{length} tokens per step; Adam, lr 1e-3, {train_steps} updates from the same initialisation, final "
              f"loss the mean of the last {last}. Time: {repeats} interleaved rounds of a step of the trained models. "
              "Peak: tensors created by one forward and backward pass.")
    if args.shared_cores:
        table += " The machine's cores were shared with other jobs while measuring."
    if torch.device(args.device).type == "cpu":
        table += " bfloat16 speed on a CPU says nothing about a GPU's."
    meta = {"machine": machine(), "device": args.device, "threads": args.threads, "repeats": repeats, "dim": dim,
            "ffn": ffn, "heads": heads, "rows": rows, "length": length, "train_steps": train_steps,
            "shared_cores": args.shared_cores}
    write_outputs(args.out, command=command_line("benchmarks.mixed_precision", argv), meta=meta, rows=rows_out,
                  table=table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
