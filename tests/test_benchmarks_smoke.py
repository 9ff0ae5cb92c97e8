"""Each benchmark's ``--quick`` run finishes and writes results of the documented shape.

Timings are never asserted: on a shared CPU they mean nothing in a test. What is asserted is the
structure of the outputs, and the facts that do not depend on the machine (NFE, memory ordering).
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fairseq")

from fairseq_helpers import REPO, make_task  # noqa: E402

pytestmark = pytest.mark.slow  # every test runs a benchmark end to end (its quick settings)


def _load(prefix, package="benchmarks"):
    with open(f"{prefix}.json", encoding="utf-8") as f:
        result = json.load(f)
    with open(f"{prefix}.md", encoding="utf-8") as f:
        markdown = f.read()
    assert markdown.startswith(f"Command: `python -m {package}.")
    assert "torch" in markdown and "|---|" in markdown
    assert {"torch", "date", "cpu"} <= set(result["meta"]["machine"])
    return result


def test_solver_overhead_quick(tmp_path):
    from benchmarks import solver_overhead

    out = tmp_path / "solver"
    assert solver_overhead.main(["--quick", "--repeats", "1", "--methods", "rk4", "--out", str(out)]) == 0
    rows = _load(out)["rows"]
    assert len(rows) == 2 * 1 * 2  # fields x methods x passes
    for row in rows:
        assert row["nfe"] == {"euler": 1, "rk4": 4}[row["method"]] * row["steps"]
        # One round: its ratio is the median and the whole range; the derived columns follow from it.
        assert row["solve_vs_loop_range"] == [row["solve_vs_loop"]] * 2
        assert row["solve_vs_torchdiffeq"] == pytest.approx(row["solve_vs_loop"] / row["torchdiffeq_vs_loop"])
        assert row["overhead_us_per_nfe"] == pytest.approx(1e3 * (row["solve_vs_loop"] - 1) * row["loop_ms"] / row["nfe"])
        assert row["max_rel_diff_vs_loop"] < 1e-4
    assert {r["pass"] for r in rows} == {"fwd", "fwd+bwd"}


def test_memory_quick(tmp_path):
    from benchmarks import memory

    out = tmp_path / "memory"
    assert memory.main(["--quick", "--steps", "2,8", "--out", str(out)]) == 0
    result = _load(out)
    peaks = {(r["gradient"], r["steps"]): r["peak_bytes"] for r in result["rows"]}
    gradients = {"backprop", "checkpoint", "checkpoint:4", "adjoint", "reversible"}
    assert set(peaks) == {(g, s) for g in gradients for s in (2, 8)}
    assert peaks[("backprop", 8)] > peaks[("backprop", 2)]  # backprop stores every step's activations
    assert peaks[("checkpoint:4", 8)] < peaks[("checkpoint", 8)]  # 4 stored states instead of 8
    assert {s["gradient"] for s in result["meta"]["summary"]} == gradients
    assert (tmp_path / "memory.png").stat().st_size > 0


def test_import_time_quick(tmp_path):
    from benchmarks import import_time

    out = tmp_path / "imports"
    assert import_time.main(["--quick", "--modules", "node_seq.ode", "--out", str(out)]) == 0
    rows = _load(out)["rows"]
    assert [(r["tree"], r["module"]) for r in rows] == [("this", "torch"), ("this", "node_seq.ode")]
    assert rows[1]["imports"] == []  # the core pulls in neither transformers nor fairseq
    assert rows[0]["vs_torch"] == 1.0 and rows[1]["median_seconds"] > 0


def test_fairseq_train_quick(tmp_path):
    from benchmarks import fairseq_train

    out = tmp_path / "train"
    argv = ["--quick", "--updates", "2", "--work", str(tmp_path / "work"), "--out", str(out)]
    assert fairseq_train.main(argv) == 0
    rows = _load(out)["rows"]
    throughput = [r for r in rows if r["part"] == "throughput"]
    assert len(throughput) == 3 and throughput[0]["ratio"] == 1.0
    for r in throughput:  # one round: the ratio is that round's, to the baseline's throughput
        assert r["ratios"] == [r["ratio"]] == [pytest.approx(r["wps_median"] / throughput[0]["wps_median"])]
    assert throughput[2]["nfe_f_b"] == "6/0"  # 1+1 ODE layers x 3 euler steps, backprop
    adaptive = [r for r in rows if r["part"] == "adaptive"]
    assert [r["nfe_b_mean"] > 0 for r in adaptive] == [False, True, True]  # backprop has no backward solve
    assert [r for r in rows if r["part"] == "seminorm"]


def test_decoding_quick(tmp_path):
    from benchmarks import decoding

    out = tmp_path / "decoding"
    assert decoding.main(["--quick", "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    rows = _load(out)["rows"]
    assert len(rows) == 3
    assert all(r["sentences"] == 16 for r in rows)
    assert rows[0]["nfe_per_sentence"] is None and rows[1]["nfe_per_sentence"] == rows[2]["nfe_per_sentence"]
    for r in rows:  # one round: the ratio is that round's, to the plain Transformer's speed
        assert r["ratios"] == [r["ratio_to_transformer"]]
        assert r["ratio_to_transformer"] == pytest.approx(r["sentences_per_s"] / rows[0]["sentences_per_s"])
    assert rows[1]["speedup_over_recompute"] == pytest.approx(rows[1]["sentences_per_s"] / rows[2]["sentences_per_s"])


def _prepared_numbers(root):
    data = make_task(root).parent  # make_task returns the binaries' folder, data/bin
    (data / "raw" / "test.en").symlink_to(data / "raw" / "test.tgt")  # the Multi30k scripts' reference name
    return data


def _table(path):
    lines = [line for line in path.read_text().splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[1:]]


def test_multi30k_quality_quick(tmp_path):
    import subprocess

    data = _prepared_numbers(tmp_path)
    subprocess.run(["bash", str(REPO / "benchmarks" / "multi30k_quality.sh"), str(data), str(tmp_path / "runs"),
                    "--variants", "baseline,node-encoder-rk2-gated", "--quick"], check=True, capture_output=True,
                   timeout=900)
    rows = _table(tmp_path / "runs" / "quality.md")
    assert [r["variant"] for r in rows] == ["baseline", "node-encoder-rk2-gated"]
    assert rows[0]["train_nfe_f"] == "-" and float(rows[1]["train_nfe_f"]) == 6  # 3 encoder layers x 2 stages
    assert all(0 <= float(r["bleu"]) <= 100 for r in rows)
    records = json.loads((tmp_path / "runs" / "quality.json").read_text())
    assert [(r["variant"], r["method"], r["sides"]) for r in records] == [
        ("baseline", None, "none"), ("node-encoder-rk2-gated", "rk2_gated", "encoder")]
    # one gate, Linear(2d, 1), per ODE layer, and the pre-norm encoder's final LayerNorm (the baseline is post-norm)
    assert records[1]["params"] == records[0]["params"] + 3 * (2 * 256 + 1) + 2 * 256
    assert records[0]["p_vs_baseline"] is None and 0 < records[1]["p_vs_baseline"] <= 1
    assert records[1]["nfe_train"] == 6 and records[1]["nfe_decode"] > 0 and records[0]["nfe_decode"] == 0


def test_multi30k_quality_speed_times_short_runs_in_rounds(tmp_path):
    import subprocess

    data = _prepared_numbers(tmp_path)
    script = [str(REPO / "benchmarks" / "multi30k_quality.sh"), str(data), str(tmp_path / "runs")]
    bad = subprocess.run(["bash", *script, "--speed", "5"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--speed: '5' is not a number of updates >= 20" in bad.stderr
    assert not (tmp_path / "runs").exists()  # refused before any work
    subprocess.run(["bash", *script, "--variants", "baseline,node-encoder-rk2-gated", "--speed", "20", "--rounds", "2",
                    "--out", str(tmp_path / "speed")], check=True, capture_output=True, timeout=900)
    rows = json.loads((tmp_path / "speed.json").read_text())["rows"]
    assert [(r["variant"], r["rounds"], r["nfe_f_per_update"]) for r in rows] == [
        ("baseline", 2, 0), ("node-encoder-rk2-gated", 2, 6)]
    assert rows[0]["ratio_to_baseline"] == 1 and rows[1]["ratio_to_baseline"] > 0
    assert not list((tmp_path / "runs" / "speed").rglob("*.pt"))  # a timing run saves nothing


def test_kinetic_quick(tmp_path):
    import subprocess

    data = _prepared_numbers(tmp_path)
    subprocess.run(["bash", str(REPO / "benchmarks" / "kinetic.sh"), str(tmp_path / "runs"), "--weights", "0,0.5",
                    "--data", str(data), "--quick"], check=True, capture_output=True, timeout=900)
    rows = _table(tmp_path / "runs" / "kinetic.md")
    assert [r["variant"] for r in rows] == ["w0", "w0.5"]
    assert rows[0]["train_kinetic"] == "-" and float(rows[1]["train_kinetic"]) > 0
    assert all(float(r["decode_nfe"]) > 0 for r in rows)


def test_adaptive_path_quick(tmp_path):
    from benchmarks import adaptive_path

    out = tmp_path / "adaptive"
    assert adaptive_path.main(["--quick", "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    rows = {row["variant"]: row for row in _load(out)["rows"]}
    assert set(rows) == set(adaptive_path.VARIANTS)
    assert rows[adaptive_path.BASELINE]["nfe_f_per_update"] == 0
    for name, row in rows.items():
        if name == adaptive_path.BASELINE:
            continue
        stages = 3 if "bosh3" in name else 6
        per_solve_start = 2 if "estimate" in row["flags"] else 1  # f0, and the estimate's probe
        for run in row["runs"]:  # every evaluation is accounted for by the steps taken
            assert run["nfe_f"] == per_solve_start * run["solves"] + stages * (run["accepted"] + run["rejected"])
            assert run["nfe_b"] == 0  # backprop: autograd re-evaluates nothing
        assert row["time_ratio_to_plain"] > 0 and row["relative_rms_deviation_from_tight_solve"] >= 0
    # what the change is for: no more evaluations than before, from the same weights and batches
    assert rows["after: own loop, first step = interval (default)"]["nfe_f_per_update"] <= \
        rows[adaptive_path.BEFORE]["nfe_f_per_update"]


def test_compile_quick(tmp_path):
    from benchmarks import compile as compile_benchmark

    out = tmp_path / "compile"
    assert compile_benchmark.main(["--quick", "--backend", "aot_eager", "--out", str(out)]) == 0
    rows = _load(out)["rows"]
    assert [(r["cell"], r["variant"]) for r in rows] == [
        (cell, variant) for cell in ("train", "decode") for variant in compile_benchmark.VARIANTS]
    for r in rows:
        assert r["median_ms"] > 0 and r["first_calls_s"] > 0
        if r["variant"] == compile_benchmark.BASELINE:
            assert r["ratio_to_plain_compiled"] == 1.0


def test_mixed_precision_quick(tmp_path):
    from benchmarks import mixed_precision

    out = tmp_path / "mixed_precision"
    assert mixed_precision.main(["--quick", "--train-steps", "2", "--out", str(out)]) == 0
    rows = {(r["method"], r["precision"]): r for r in _load(out)["rows"]}
    assert set(rows) == {(m, p) for m in ("rk4", "dopri5") for p in ("float32", "bf16 autocast")}
    for method in ("rk4", "dopri5"):
        fp32, bf16 = rows[method, "float32"], rows[method, "bf16 autocast"]
        assert fp32["logits_max_rel_diff_vs_float32"] == 0.0
        assert 0.0 < bf16["logits_max_rel_diff_vs_float32"] < 0.05  # autocast changed the logits, by bf16's rounding
        assert bf16["peak_bytes"] < fp32["peak_bytes"]  # bfloat16 activations
        assert bf16["first_loss"] == pytest.approx(fp32["first_loss"], rel=0.01)
    assert rows["rk4", "bf16 autocast"]["nfe_forward_per_step"] == 8  # 2 layers x 4 stages, whatever the precision


def test_gpu_suite_smoke_on_cpu(tmp_path):
    """The GPU session's one script, at its smallest sizes on the CPU: every part runs and is summarised."""
    from benchmarks import gpu_suite

    out = tmp_path / "gpu"
    assert gpu_suite.main(["--device", "cpu", "--quick", "--out-dir", str(out), "--work", str(tmp_path / "work")]) == 0
    summary = _load(out / "gpu_suite")
    assert {"solver overhead", "compile", "training", "decoding", "odenet4", "mixed precision", "fsdp"} == \
        {r["benchmark"] for r in summary["rows"]}
    assert set(summary["meta"]["seconds"]) == {"solver_overhead", "compile", "fairseq_train", "decoding", "odenet4",
                                               "mixed_precision", "fsdp"}
    for name in ("solver_overhead", "compile", "fairseq_train", "decoding", "mixed_precision", "fsdp"):
        _load(out / name)
    fsdp = {r["run"]: r for r in _load(out / "fsdp")["rows"]}  # two CPU processes share the batch of one
    assert fsdp["FSDP2 full_shard"]["processes"] == 2 and fsdp["FSDP2 full_shard"]["same_nfe"]
    assert fsdp["FSDP2 full_shard"]["max_loss_rel_difference"] < 1e-5
    _load(out / "odenet4", package="vision")  # vision.throughput: benchmarks may not import vision


def test_multi30k_lm_quick(tmp_path):
    """The LM comparison's pipeline on a tiny corpus in Multi30k's file names (the real one is not in the repo)."""
    from benchmarks import multi30k_lm
    from node_seq.text.numbers import write_task

    write_task(tmp_path / "task", sizes={"train": 200, "valid": 12, "test": 12}, max_digits=3)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split, name in (("train", "train"), ("valid", "val"), ("test", "test_2016_flickr")):
        (corpus / f"{name}.en").write_text((tmp_path / "task" / f"{split}.tgt").read_text())
    out = tmp_path / "results" / "multi30k_lm"
    multi30k_lm.main(["--quick", "--data-dir", str(corpus), "--runs", str(tmp_path / "runs"), "--vocab-size", "64",
                      "--variants", "plain,midpoint", "--out", str(out)])
    result = json.loads(out.with_suffix(".json").read_text())
    assert [row["variant"] for row in result["rows"]] == ["plain", "midpoint"]
    assert len({row["parameters"] for row in result["rows"]}) == 1  # the same weights
    assert result["rows"][1]["test_nfe"] == 4.0  # 2 layers x 2 midpoint stages
    assert result["rows"][0]["test_p_vs_plain"] is None and 0 < result["rows"][1]["test_p_vs_plain"] <= 1
    assert (tmp_path / "results" / "multi30k_lm_elastic" / "midpoint" / "elastic.csv").exists()
    assert out.with_suffix(".md").read_text().startswith("Command: `python -m benchmarks.multi30k_lm")


def test_hf_gradient_checkpointing_quick(tmp_path, capsys):
    from benchmarks import hf_gradient_checkpointing

    out = tmp_path / "hf_gc"
    assert hf_gradient_checkpointing.main(["--quick", "--repeats", "1", "--models", "lm", "--out", str(out)]) == 0
    rows = {(r["method"], r["variant"]): r for r in _load(out)["rows"]}
    off, switch, ode = "off", "activation checkpointing", "node_gradient=checkpoint"
    assert set(rows) == {("rk4", off), ("rk4", switch), ("rk4", ode), ("dopri5", off), ("dopri5", switch)}
    for (method, variant), row in rows.items():
        off_row = rows[(method, off)]
        assert row["max_grad_diff_vs_off"] <= 1e-6  # the same dropout masks: the same gradients
        assert row["nfe_forward"] == off_row["nfe_forward"]
        assert row["nfe_backward"] == (0 if variant == off else row["nfe_forward"])  # one recompute per solve
        assert (row["peak_bytes"] < off_row["peak_bytes"]) == (variant != off)
    with pytest.raises(SystemExit):
        hf_gradient_checkpointing.main(["--quick", "--methods", "rk45", "--out", str(tmp_path / "refused")])
    assert "--methods: unknown 'rk45'; choose from rk4, dopri5" in capsys.readouterr().err
    assert not (tmp_path / "refused.json").exists()


def test_fsdp_parity_on_one_gpu_says_why_it_did_not_run(tmp_path, monkeypatch):
    """FSDP needs a process per GPU and two of them: on a one-GPU machine the result says so (the
    GPU suite goes on) and no training starts."""
    from benchmarks import fsdp_parity

    monkeypatch.setattr(fsdp_parity, "processes_for", lambda device: 1)
    monkeypatch.setattr(fsdp_parity, "train", lambda *args, **kwargs: pytest.fail("trained on one GPU"))
    assert fsdp_parity.main(["--device", "cuda", "--out", str(tmp_path / "fsdp"), "--work", str(tmp_path / "w")]) == 0
    result = _load(tmp_path / "fsdp")
    assert result["rows"] == [] and result["meta"]["skipped"].endswith("this machine has 1 GPU")


def test_row_compaction_quick(tmp_path):
    """A tiny dopri5 model, its fields scaled up so that sentences need different steps, decoded four ways:
    compaction changes no translation and no NFE and evaluates fewer rows, as many per sentence at every
    batch size (each sentence's own evaluations)."""
    import torch

    from benchmarks import pages, row_compaction
    from fairseq_helpers import fairseq_train

    data = make_task(tmp_path / "numbers")
    fairseq_train(data, tmp_path / "model", ["--node-method", "dopri5", "--max-update", "4"])
    import node_seq.fairseq  # noqa: F401  (allow-lists what a fairseq checkpoint holds for weights_only loading)

    checkpoint = torch.load(tmp_path / "model" / "checkpoint_last.pt", weights_only=True)
    generator = torch.Generator().manual_seed(0)
    for name, parameter in checkpoint["model"].items():
        if ".field." in name and parameter.dim() == 2:
            parameter.mul_(4.0)
        elif name.endswith("embed_tokens.weight"):
            parameter.normal_(0, 1, generator=generator)
    torch.save(checkpoint, tmp_path / "scaled.pt")
    out = tmp_path / "results" / "row_compaction.json"
    rows = row_compaction.main([str(data.parent), str(tmp_path / "decode"), "--model", str(tmp_path / "scaled.pt"),
                                "--quick", "--rtol", "1e-3", "--out", str(out), "--", "--max-len-b", "6"])
    assert {(r["solver"], r.get("node_rtol"), r.get("node_atol")) for r in rows if r["batch_size"] == 1} == {
        ("batch", 1e-3, 1e-4), ("sequence", 1e-3, 1e-4), ("sequence, compacted", 1e-3, 1e-4), ("fixed rk4:2", None, None)}
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["rows"] == rows and result["command"].startswith("python -m benchmarks.row_compaction ")
    assert {"torch", "date", "cpu"} <= set(result["meta"]["machine"]) and "shared" in result["meta"]["note"]
    assert [(r["batch_size"], r["solver"]) for r in rows] == [
        (size, solver) for size in (1, 4) for solver in ("batch", "sequence", "sequence, compacted", "fixed rk4:2")]
    compacted_work = set()
    for size in (1, 4):
        by_solver = {r["solver"]: r for r in rows if r["batch_size"] == size}
        per_row, compacted = by_solver["sequence"], by_solver["sequence, compacted"]
        assert compacted["translations_differing_from_sequence"] == 0
        assert (compacted["bleu"], compacted["nfe_per_sentence"]) == (per_row["bleu"], per_row["nfe_per_sentence"])
        assert compacted["row_evaluations_per_sentence"] < per_row["row_evaluations_per_sentence"]
        assert per_row["ratio_to_sequence"] == 1.0 and all(r["words_per_s"] > 0 for r in by_solver.values())
        compacted_work.add(compacted["row_evaluations_per_sentence"])
    assert len(compacted_work) == 1
    # the results page reads what the benchmark writes
    page, _ = pages.render(next(t for t in pages.TOPICS if t.slug == "row-compaction"), out.parent)
    assert "What it means: compaction pays" in page and "Not measured yet" not in page
