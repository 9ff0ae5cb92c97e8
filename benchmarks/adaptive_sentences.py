"""What an adaptive translation model does with per-sentence step control: NFE per sentence.

    python -m benchmarks.adaptive_sentences CHECKPOINT DATA_DIR [--rtols 0.1,0.01,0.001,0.0001,1e-5]
        [--max-tokens 8000] [--split test] [--out benchmarks/results/adaptive_sentences] [--note TEXT]

For each inference tolerance (``rtol``, ``atol = rtol / 10``, as ``benchmarks.elastic_depth``'s
``METHOD@RTOL``) the model's adaptive ODE layers are solved three ways over ``split``:

* **per sentence** (``step_control='sequence'``), in the batches fairseq-generate makes of
  ``--max-tokens``: each sentence's NFE is its own (``SolveStats.row_nfe``, summed over layers);
  with it, the model's own loss on the reference (teacher forced, nats per token) and the source
  length, for their correlations (does a harder sentence get more compute?);
* **alone** (one sentence per batch): the NFE a sentence needs on its own, which per-sentence control
  must give in any batch;
* **batch-wide** (``step_control='batch'``), in the same batches: every sentence pays its batch's
  NFE, which shows how much compute a sentence spends because of its neighbours (more, beside a
  harder one; fewer, for a hard sentence whose error the batch's RMS dilutes with easy ones').

The NFE counted is the forward NFE of the ODE layers on the source (the encoder's, the one solve per
sentence of an encoder-only adaptive model; a decoder's solves would add per decoding step). BLEU
against NFE over the same tolerances is ``benchmarks.elastic_depth`` with ``--settings dopri5@RTOL``.
Writes ``OUT.json`` (command, machine, date, one row per tolerance and the per-sentence values),
``OUT_nfe.png`` (the distribution of NFE per sentence at each tolerance) and ``OUT_length.png``
(mean NFE against source length).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import torch

from benchmarks.common import command_line, machine

DEFAULT_RTOLS = "0.1,0.01,0.001,0.0001,1e-5"


@dataclasses.dataclass
class Sentences:
    """Per-sentence values over the split, in dataset order (index = sentence id)."""

    length: list[int]
    loss: list[float]  # nats per reference token, teacher forced
    nfe_sequence: list[int]
    nfe_alone: list[int]
    nfe_batch: list[int]


def encoder_nfe(encoder, rows: int) -> torch.Tensor:
    """Forward NFE of each row in the encoder's last solves (a row's own count under per-row control,
    the solve's, which every row paid, otherwise)."""
    from node_seq.nn.layers import collect_stats

    return collect_stats(encoder).nfe_per_row(rows).cpu()


def measure(model, task, split: str, layers, solver, max_tokens: int) -> Sentences:
    """One tolerance: the three solves of every sentence of ``split`` (see the module docstring)."""
    from fairseq import utils

    from node_seq.elastic import solver_swapped

    dataset = task.dataset(split)
    size = len(dataset)
    values = {name: [0] * size for name in ("length", "nfe_sequence", "nfe_alone", "nfe_batch")}
    loss = [0.0] * size
    pad = task.target_dictionary.pad()

    def batches():
        return task.get_batch_iterator(dataset, max_tokens=max_tokens, required_batch_size_multiple=1,
                                       max_positions=utils.resolve_max_positions(task.max_positions(),
                                                                                 model.max_positions()),
                                       ).next_epoch_itr(shuffle=False)

    with torch.no_grad():
        with solver_swapped(layers, dataclasses.replace(solver, step_control="sequence")):
            for sample in batches():
                ids = sample["id"].tolist()
                output = model(**sample["net_input"])
                nfe = encoder_nfe(model.encoder, len(ids)).tolist()
                lprobs = model.get_normalized_probs(output, log_probs=True)
                target = sample["target"]
                nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
                real = target.ne(pad)
                per_token = (nll * real).sum(1) / real.sum(1)
                for row, index in enumerate(ids):
                    values["nfe_sequence"][index] = nfe[row]
                    values["length"][index] = int(sample["net_input"]["src_lengths"][row])
                    loss[index] = float(per_token[row])
            for index in range(size):
                source = dataset[index]["source"]
                model.encoder(source.unsqueeze(0), src_lengths=torch.tensor([source.numel()]))
                values["nfe_alone"][index] = int(encoder_nfe(model.encoder, 1))
        with solver_swapped(layers, dataclasses.replace(solver, step_control="batch")):
            for sample in batches():
                net_input = sample["net_input"]
                model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
                ids = sample["id"].tolist()
                for index, nfe in zip(ids, encoder_nfe(model.encoder, len(ids)).tolist()):
                    values["nfe_batch"][index] = nfe
    return Sentences(loss=loss, **values)


def ranks(values: list[float]) -> list[float]:
    """Each value's rank (1-based), ties sharing the mean of their ranks."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranked = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start:end + 1]:
            ranked[i] = (start + end) / 2 + 1
        start = end + 1
    return ranked


def correlations(name: str, x: list[float], y: list[float]) -> dict[str, float | None]:
    """Spearman's rho (Pearson's r of the ranks) and Pearson's r of ``x`` and ``y``, under
    ``spearman_<name>``/``pearson_<name>`` (None where one side is constant: none is defined)."""
    defined = len(set(x)) > 1 and len(set(y)) > 1
    return {f"spearman_{name}": round(statistics.correlation(ranks(x), ranks(y)), 3) if defined else None,
            f"pearson_{name}": round(statistics.correlation(x, y), 3) if defined else None}


def summary(rtol: float, s: Sentences) -> dict:
    """One tolerance's row: the NFE distribution, its correlations, and what batch-wide control costs."""
    nfe = s.nfe_sequence
    quantiles = statistics.quantiles(nfe, n=10, method="inclusive")
    mismatched = sum(a != b for a, b in zip(s.nfe_sequence, s.nfe_alone))
    return {
        "rtol": rtol, "atol": rtol / 10, "sentences": len(nfe),
        "nfe_mean": round(statistics.fmean(nfe), 2), "nfe_sd": round(statistics.pstdev(nfe), 2),
        "nfe_min": min(nfe), "nfe_p10": quantiles[0], "nfe_median": statistics.median(nfe),
        "nfe_p90": quantiles[-1], "nfe_max": max(nfe),
        **correlations("nfe_length", s.length, nfe),
        **correlations("nfe_loss", s.loss, nfe),
        "sequence_differs_from_alone": mismatched,
        "batch_control_nfe_mean": round(statistics.fmean(s.nfe_batch), 2),
        "alone_nfe_mean": round(statistics.fmean(s.nfe_alone), 2),
        # compute a sentence spends because of its neighbours, under batch-wide control
        "batch_over_alone": round(sum(s.nfe_batch) / sum(s.nfe_alone), 3),
        "batch_pays_more_share": round(sum(b > a for b, a in zip(s.nfe_batch, s.nfe_alone)) / len(nfe), 3),
        # the batch's RMS error dilutes a hard sentence's with its easy neighbours': it may get fewer steps
        "batch_pays_less_share": round(sum(b < a for b, a in zip(s.nfe_batch, s.nfe_alone)) / len(nfe), 3),
        "nfe_counts": {str(k): nfe.count(k) for k in sorted(set(nfe))},
    }


def plots(rows: list[dict], sentences: dict[float, Sentences], out: str) -> None:
    """The NFE distribution per tolerance (share of sentences with at most x evaluations), and mean NFE
    against source length."""
    from node_seq.plotting import plot_lines

    cumulative = {}
    for row in rows:
        total, running, points = row["sentences"], 0, []
        for nfe, count in row["nfe_counts"].items():
            running += count
            points.append((int(nfe), running / total))
        cumulative[f"rtol {row['rtol']:g}"] = points
    plot_lines(cumulative, f"{out}_nfe.png", title="NFE per sentence under per-sentence step control",
               xlabel="NFE per sentence (ODE layers, forward)", ylabel="share of sentences with at most this NFE")
    by_length = {}
    for rtol, s in sorted(sentences.items(), reverse=True):  # loosest first, as the rows
        groups: dict[int, list[int]] = {}
        for length, nfe in zip(s.length, s.nfe_sequence):
            groups.setdefault(length, []).append(nfe)
        by_length[f"rtol {rtol:g}"] = [(length, statistics.fmean(v)) for length, v in sorted(groups.items())
                                       if len(v) >= 5]
    plot_lines(by_length, f"{out}_length.png", title="Mean NFE per sentence against source length "
               "(lengths with at least 5 sentences)", xlabel="source length (BPE tokens + </s>)",
               ylabel="mean NFE per sentence")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("data_dir", type=Path, help="prepared by scripts/prepare_multi30k.sh (holds bin/)")
    parser.add_argument("--rtols", default=DEFAULT_RTOLS, help=f"comma-separated (default {DEFAULT_RTOLS})")
    parser.add_argument("--max-tokens", type=int, default=8000, help="batch size in tokens, as fairseq-generate's")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", default="benchmarks/results/adaptive_sentences", help="path prefix of the outputs")
    parser.add_argument("--note", default="", help="how the model was trained (kept in the JSON)")
    args = parser.parse_args(argv)
    try:
        rtols = [float(r) for r in args.rtols.split(",") if r]
    except ValueError:
        rtols = []
    if not rtols or min(rtols) <= 0:
        raise SystemExit(f"--rtols: {args.rtols!r} is not a comma-separated list of positive tolerances")
    if not args.checkpoint.is_file():
        raise SystemExit(f"CHECKPOINT: {args.checkpoint} not found")
    if not (args.data_dir / "bin").is_dir():
        raise SystemExit(f"DATA_DIR: {args.data_dir / 'bin'} not found (run scripts/prepare_multi30k.sh)")
    from fairseq import checkpoint_utils

    from node_seq.fairseq import model as _registers_node_transformer  # noqa: F401  (and allow-lists checkpoints)
    from node_seq.nn.layers import node_layers

    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(args.checkpoint)],
                                                                    arg_overrides={"data": str(args.data_dir / "bin")})
    model = models[0].eval()
    layers = node_layers(model.encoder)
    if not layers or any(layer.solver.is_fixed_grid for layer in layers) or node_layers(model.decoder):
        raise SystemExit("CHECKPOINT: the analysis needs a model whose encoder layers are adaptive ODE blocks and "
                         "whose decoder has none (NFE per sentence is then the encoder's)")
    task.load_dataset(args.split)
    trained = layers[0].solver
    rows, sentences = [], {}
    for rtol in rtols:
        solver = dataclasses.replace(trained, rtol=rtol, atol=rtol / 10)
        sentences[rtol] = measure(model, task, args.split, layers, solver, args.max_tokens)
        rows.append(summary(rtol, sentences[rtol]))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "nfe_counts"}), flush=True)
    rows.sort(key=lambda row: -row["rtol"])  # loosest first, whatever order they were measured in
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    model_info = {"checkpoint": str(args.checkpoint), "method": trained.method, "trained_rtol": trained.rtol,
                  "trained_atol": trained.atol, "max_tokens": args.max_tokens, "split": args.split, "note": args.note}
    record = {"command": command_line("benchmarks.adaptive_sentences", argv),
              "meta": {"machine": machine(), "model": model_info}, "rows": rows,
              "sentences": {f"{rtol:g}": dataclasses.asdict(sentences[rtol]) for rtol in sorted(sentences, reverse=True)}}
    Path(f"{args.out}.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    plots(rows, sentences, args.out)
    return rows


if __name__ == "__main__":
    main()
