"""Eager against ``torch.compile`` for a training step and a cached decoding step, plain and NODE.

Four models per cell, the HF classes at the sizes of ``benchmarks.fairseq_train`` and ``benchmarks.decoding`` (width 64, ffn 128,
4 heads): a plain pre-norm Transformer with ``L`` + ``L`` layers, and a NODE-Transformer with one
tied ODE layer per side integrated by ``rk4`` in ``L / 4`` steps, so both make the same ``L``
evaluations per side. Each is run eager and compiled (``fullgraph=True``); the four variants of a
cell are timed in the same interleaved rounds, against the compiled plain model. Cells:

* ``train``: forward, backward and an Adam step on a padded batch (the compiled model is the
  forward and backward; the optimizer runs eager in every variant);
* ``decode``: one cached decoding step of ``beam x sentences`` rows after ``prefix`` positions
  (``use_cache``: the per-stage cache for NODE), then the cache is cropped back, so every timed
  call does the same work.

Compile time is the wall time of the first calls (tracing and code generation)::

    python -m benchmarks.compile --out benchmarks/results/compile
"""

from __future__ import annotations

import argparse
import time

import torch

from .common import add_common_args, command_line, interleaved_ratios, machine, markdown_table, synchronize, \
    write_outputs

VARIANTS = ("plain eager", "plain compiled", "NODE eager", "NODE compiled")
BASELINE = "plain compiled"


def build_model(kind: str, *, dim: int, ffn: int, heads: int, evaluations: int, device: str):
    from node_seq.hf import NodeTransformerConfig, NodeTransformerForConditionalGeneration

    sizes = dict(vocab_size=256, encoder_embed_dim=dim, decoder_embed_dim=dim, encoder_ffn_dim=ffn,
                 decoder_ffn_dim=ffn, encoder_attention_heads=heads, decoder_attention_heads=heads, dropout=0.1,
                 share_all_embeddings=True, max_position_embeddings=256)
    if kind == "plain":
        config = NodeTransformerConfig(**sizes, encoder_layers=evaluations, decoder_layers=evaluations,
                                       node_encoder=False, node_decoder=False)
    else:
        config = NodeTransformerConfig(**sizes, encoder_layers=1, decoder_layers=1, node_method="rk4",
                                       node_steps=evaluations // 4)
    torch.manual_seed(0)
    return NodeTransformerForConditionalGeneration(config).to(device)


def batch(*, rows: int, source: int, target: int, device: str, seed: int = 0) -> dict:
    """Token ids with the padding of a real batch: each row shorter than the widest by 0..3 positions."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 256, (rows, source), generator=generator)
    labels = torch.randint(4, 256, (rows, target), generator=generator)
    short = torch.arange(rows) % 4
    for row, n in enumerate(short.tolist()):
        if n:
            ids[row, -n:] = 1
            labels[row, -n:] = -100
    return {"input_ids": ids.to(device), "attention_mask": ids.ne(1).long().to(device), "labels": labels.to(device)}


def training_step(model, compile_kwargs: dict | None, inputs: dict):
    model.train()
    forward = torch.compile(model, fullgraph=True, **compile_kwargs) if compile_kwargs is not None else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        forward(**inputs).loss.backward()
        optimizer.step()

    return step


def decoding_step(model, compile_kwargs: dict | None, inputs: dict, prefix: int):
    """One cached step after ``prefix`` positions; the cache is cropped back after each call."""
    from node_seq.hf.modeling_node_transformer import NodeCache

    model.eval()
    forward = torch.compile(model.forward, fullgraph=True, **compile_kwargs) if compile_kwargs is not None \
        else model.forward
    rows = inputs["input_ids"].shape[0]
    with torch.no_grad():
        encoder_outputs = model.get_encoder()(inputs["input_ids"], inputs["attention_mask"])
        cache = NodeCache(model.config.decoder_layers)
        tokens = torch.randint(4, 256, (rows, prefix + 1), generator=torch.Generator().manual_seed(1)).to(
            inputs["input_ids"].device)
        model(encoder_outputs=encoder_outputs, attention_mask=inputs["attention_mask"],
              decoder_input_ids=tokens[:, :prefix], cache=cache, use_cache=True)

    def step():
        with torch.no_grad():
            forward(encoder_outputs=encoder_outputs, attention_mask=inputs["attention_mask"],
                    decoder_input_ids=tokens[:, prefix:], cache=cache, use_cache=True)
        cache.crop(-1)

    return step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--mode", default=None, help="torch.compile mode (e.g. reduce-overhead: CUDA graphs)")
    parser.add_argument("--decode-mode", default=None,
                        help="torch.compile mode of the decoding cell only (default: --mode)")
    parser.add_argument("--cells", default="train,decode", help="which cells to run")
    add_common_args(parser, default_out="benchmarks/results/compile")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # Fresh compile caches: compile times are measured from nothing, and code objects compiled
    # earlier in the same process (other benchmarks, a test session) count against dynamo's
    # recompile limit, which fullgraph turns into a hard failure.
    torch._dynamo.reset()
    if args.quick:
        dim, ffn, heads, evaluations, rows, source, target, beam_rows, prefix = 16, 32, 2, 4, 8, 6, 5, 8, 4
        repeats = args.repeats or 1
    else:
        dim, ffn, heads, evaluations, rows, source, target, beam_rows, prefix = 64, 128, 4, 4, 64, 12, 10, 100, 16
        repeats = args.repeats or 7
    models = {kind: build_model(kind, dim=dim, ffn=ffn, heads=heads, evaluations=evaluations, device=args.device)
              for kind in ("plain", "NODE")}
    rows_out = []
    for cell in args.cells.split(","):
        mode = args.decode_mode or args.mode if cell == "decode" else args.mode
        compile_kwargs = {"backend": args.backend, **({"mode": mode} if mode else {})}
        steps, compile_seconds = {}, {}
        for name in VARIANTS:
            kind, how = name.split()
            model = models[kind]
            if cell == "train":
                step = training_step(model, compile_kwargs if how == "compiled" else None,
                                     batch(rows=rows, source=source, target=target, device=args.device))
            else:
                step = decoding_step(model, compile_kwargs if how == "compiled" else None,
                                     batch(rows=beam_rows, source=source, target=target, device=args.device), prefix)
            start = time.perf_counter()
            for _ in range(3):  # tracing, then the recompilations a changing cache or optimizer state causes
                step()
            synchronize(args.device)
            compile_seconds[name] = time.perf_counter() - start
            steps[name] = step
        timings = interleaved_ratios(steps, baseline=BASELINE, repeats=repeats, device=args.device)
        for name in VARIANTS:
            kind, how = name.split()
            eager, compiled = timings[f"{kind} eager"], timings[f"{kind} compiled"]
            rows_out.append({
                "cell": cell, "variant": name, "evaluations_per_side": evaluations,
                "median_ms": 1e3 * timings[name]["median_seconds"], "ratio_to_plain_compiled": timings[name]["ratio"],
                "ratio_range": [timings[name]["ratio_min"], timings[name]["ratio_max"]],
                "compiled_speedup": eager["ratio"] / compiled["ratio"],
                "first_calls_s": compile_seconds[name], "compile_mode": mode or "default",
            })
    table = markdown_table(
        ["cell", "variant", "median ms", "time / plain compiled", "eager / compiled (same model)",
         "first 3 calls, s (compile)"],
        [[r["cell"], r["variant"], r["median_ms"], r["ratio_to_plain_compiled"],
          r["compiled_speedup"] if r["variant"].endswith("compiled") else "",
          r["first_calls_s"]] for r in rows_out])
    table += (f"\n\nWidth {dim}, ffn {ffn}, {heads} heads; plain: {evaluations}+{evaluations} layers; NODE: 1+1 ODE "
              f"layers, rk4 x {evaluations // 4} step ({evaluations} evaluations per side). train: {rows} sentences, "
              f"source {source}, target {target}, Adam; decode: {beam_rows} rows after {prefix} cached positions. "
              f"Backend {args.backend}; {repeats} interleaved rounds.")
    meta = {"machine": machine(), "device": args.device, "threads": args.threads, "backend": args.backend,
            "mode": args.mode, "decode_mode": args.decode_mode, "repeats": repeats, "dim": dim, "ffn": ffn,
            "heads": heads, "evaluations_per_side": evaluations}
    write_outputs(args.out, command=command_line("benchmarks.compile", argv), meta=meta, rows=rows_out, table=table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
