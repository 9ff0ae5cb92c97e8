"""Language models on the English side of Multi30k: a plain Transformer LM against NODE LMs of the same weights.

    python -m benchmarks.multi30k_lm --data-dir /work/shared/data/multi30k --runs runs/multi30k-lm \\
        --updates 300 --out benchmarks/results/multi30k_lm

1. prepares ``train.en``/``val.en``/``test_2016_flickr.en`` as LM data (``node_seq.text.prepare_lm``:
   the project's BPE learnt on the training side, ``fairseq-preprocess --only-source``);
2. trains every variant with ``fairseq-train --arch node_transformer_lm_tiny`` (same sizes, so the
   same parameter count: an ODE layer has exactly the plain layer's weights), the same recipe and
   the same number of updates;
3. scores valid and test perplexity with ``fairseq-eval-lm``, the NFE per forward pass, tokens/s
   of training and of evaluation, and the paired bootstrap p-value of each variant's test
   perplexity against the plain LM's (the same test sentences resampled for both);
4. sweeps every NODE variant over other solvers and step counts (``node_seq.fairseq.elastic_lm``):
   perplexity against NFE, a table and a PNG per variant.

``--quick``: 3 updates per variant and a small sweep (a smoke run of the pipeline, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from .common import command_line, machine, markdown_table, write_outputs

#: name -> (fairseq-train options, what it is). Every variant: node_transformer_lm_tiny (2 layers, width 64).
VARIANTS = {
    "plain": (["--no-node-decoder"], "plain pre-norm Transformer LM"),
    "midpoint": (["--node-method", "midpoint", "--node-steps", "1"], "each layer one midpoint step"),
    "euler-kinetic": (["--node-method", "euler", "--node-steps", "2", "--node-kinetic-weight", "0.01"],
                      "Euler, 2 steps, kinetic penalty 0.01 (OT-Transformer style)"),
    "dopri5": (["--node-method", "dopri5", "--node-rtol", "1e-2", "--node-atol", "1e-3"],
               "adaptive dopri5, rtol 1e-2, atol 1e-3"),
}
RECIPE = ["--task", "node_language_modeling", "--arch", "node_transformer_lm_tiny", "--share-decoder-input-output-embed",
          "--sample-break-mode", "eos", "--tokens-per-sample", "128", "--optimizer", "adam", "--adam-betas",
          "(0.9, 0.98)", "--lr", "3e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "50",
          "--dropout", "0.1", "--criterion", "cross_entropy", "--num-workers", "0", "--cpu", "--seed", "1",
          "--no-epoch-checkpoints", "--no-save-optimizer-state", "--log-format", "json", "--log-interval", "50",
          "--no-progress-bar", "--validate-interval-updates", "100000"]
SWEEP = {"methods": ["euler", "midpoint", "rk4", "dopri5"], "factors": [0.5, 1.0, 2.0, 4.0]}


def prepare(data_dir: Path, runs: Path, vocab_size: int) -> Path:
    from node_seq.text.prepare_lm import prepare_lm

    if (runs / "data" / "bin" / "dict.txt").exists():
        return runs / "data" / "bin"
    return prepare_lm(data_dir, runs / "data", lang="en", vocab_size=vocab_size,
                      splits={"train": "train", "valid": "val", "test": "test_2016_flickr"})


def train(bin_dir: Path, run: Path, options: list[str], *, updates: int, max_tokens: int) -> dict:
    """fairseq-train one variant; its wall time and training tokens/s (fairseq's ``wps``)."""
    from node_seq.fairseq import inprocess

    checkpoint = run / "checkpoints" / "checkpoint_last.pt"
    if not checkpoint.exists():
        run.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        inprocess.train([str(bin_dir), *RECIPE, "--max-tokens", str(max_tokens), "--max-update", str(updates),
                         "--save-dir", str(run / "checkpoints"), "--log-file", str(run / "train.log"), *options])
        (run / "train_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    records = inprocess.json_records((run / "train.log").read_text())
    epochs = [r for r in records if "train_loss" in r]
    words = sum(float(r["train_wpb"]) * float(r["train_ups"]) * float(r["train_train_wall"]) for r in epochs)
    wall = sum(float(r["train_train_wall"]) for r in epochs)
    return {"checkpoint": checkpoint, "train_seconds": float((run / "train_seconds.txt").read_text()),
            "train_tokens_per_second": words / wall if wall else float("nan"),
            "train_nfe_f": float(epochs[-1].get("train_nfe_f", 0)), "train_nfe_b": float(epochs[-1].get("train_nfe_b", 0))}


def eval_lm_perplexity(bin_dir: Path, checkpoint: Path, split: str) -> float:
    from node_seq.fairseq import inprocess

    out = inprocess.eval_lm([str(bin_dir), "--path", str(checkpoint), "--sample-break-mode", "eos", "--gen-subset",
                             split, "--max-tokens", "4096", "--num-workers", "0", "--cpu"])
    line = next(line for line in out.splitlines() if "Perplexity:" in line)
    return float(line.rsplit("Perplexity:", 1)[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="/work/shared/data/multi30k", help="train/val/test_2016_flickr .en(.gz)")
    parser.add_argument("--runs", default="runs/multi30k-lm", help="data, checkpoints and logs go here")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--vocab-size", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sweep-methods", default=",".join(SWEEP["methods"]), help="elastic depth: test methods")
    parser.add_argument("--sweep-factors", default=",".join(f"{f:g}" for f in SWEEP["factors"]),
                        help="elastic depth: test step = train step / factor")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/multi30k_lm")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    if not Path(args.data_dir).is_dir():
        parser.error(f"--data-dir: not a directory: {args.data_dir}")
    sweep = {"methods": [m for m in args.sweep_methods.split(",") if m],
             "factors": [float(f) for f in args.sweep_factors.split(",") if f]}
    updates, sweep = (3, {"methods": ["euler", "rk4"], "factors": [1.0, 2.0]}) if args.quick else (args.updates, sweep)
    torch.set_num_threads(args.threads)
    from fairseq import checkpoint_utils

    from node_seq.fairseq import elastic_lm

    runs = Path(args.runs)
    bin_dir = prepare(Path(args.data_dir), runs, args.vocab_size)
    rows, sweeps, test_samples = [], {}, {}
    for name in variants:
        options, description = VARIANTS[name]
        trained = train(bin_dir, runs / name, options, updates=updates, max_tokens=args.max_tokens)
        models, _, task = checkpoint_utils.load_model_ensemble_and_task(
            [str(trained["checkpoint"])], arg_overrides={"data": str(bin_dir)})
        model = models[0]
        row = {"variant": name, "what": description, "parameters": sum(p.numel() for p in model.parameters()),
               "updates": updates, **{k: v for k, v in trained.items() if k != "checkpoint"}}
        for split in ("valid", "test"):
            task.load_dataset(split)
            measured = elastic_lm.evaluate(model, task, split, per_sample=split == "test")
            row[f"{split}_perplexity"] = eval_lm_perplexity(bin_dir, trained["checkpoint"], split)
            row[f"{split}_nfe"] = measured["nfe"]
            row[f"{split}_tokens_per_second"] = measured["tokens_per_second"]
            if split == "test":
                test_samples[name] = measured["samples"]
        row["test_p_vs_plain"] = (elastic_lm.paired_bootstrap(test_samples["plain"], test_samples[name])
                                  if "plain" in test_samples and name != "plain" else None)
        rows.append(row)
        if name != "plain":
            sweep_rows = elastic_lm.sweep(model, task, "test", **sweep)
            elastic_lm.write(sweep_rows, Path(f"{args.out}_elastic") / name,
                             title=f"Multi30k en LM, {name} ({description}): test perplexity against NFE")
            sweeps[name] = sweep_rows
    table = markdown_table(
        ["variant", "what", "params", "valid ppl", "test ppl", "p vs plain (test)", "NFE/pass", "train tok/s",
         "eval tok/s", "train s"],
        [[r["variant"], r["what"], r["parameters"], r["valid_perplexity"], r["test_perplexity"],
          "-" if r["test_p_vs_plain"] is None else r["test_p_vs_plain"], r["test_nfe"],
          r["train_tokens_per_second"], r["test_tokens_per_second"], r["train_seconds"]] for r in rows])
    meta = {"machine": machine(), "device": "cpu", "updates": updates, "max_tokens": args.max_tokens,
            "recipe": RECIPE, "variants": {v: VARIANTS[v][0] for v in variants}}
    write_outputs(args.out, command=command_line("benchmarks.multi30k_lm", argv), meta=meta, rows=rows, table=table)
    elastic = "\n\n".join(f"### {name}\n\n{elastic_lm.format_rows(r)}" for name, r in sweeps.items())
    Path(f"{args.out}_elastic.md").write_text(elastic + "\n")
    Path(f"{args.out}_elastic.json").write_text(json.dumps(sweeps, indent=1, default=str))
    print(table)
    print(elastic)


if __name__ == "__main__":
    main()
