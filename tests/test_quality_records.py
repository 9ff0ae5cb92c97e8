"""``benchmarks.quality_records``: a run's logs as a results record, with the paired bootstrap."""

from __future__ import annotations

import json

import pytest

from benchmarks import quality_records, quality_seeds

REFERENCES = [f"a small dog number {i} runs across the green field" for i in range(60)]


def _run(path, hypotheses, *, nfe=None, params="7,285,760", wps=(900.0, 1400.5), nfe_f=None, seed=2):
    path.mkdir()
    lines = [f"D-{i}\t-0.5\t{h}" for i, h in reversed(list(enumerate(hypotheses)))]  # fairseq's order is not ours
    if nfe is not None:
        lines.append(f"INFO:fairseq_cli.generate:NODE NFE: {nfe} function evaluations per sentence (encoder + ...)")
    (path / "generate-test.log").write_text("\n".join(lines) + "\n")
    extra = f" | nfe_f {nfe_f} | nfe_b 0" if nfe_f is not None else ""
    log = [f"{{'seed': {seed}, 'arch': 'x'}}", f"num. shared model params: {params} (num. trained: {params})"]
    log += [f"2026-12-01 | INFO | train | epoch {e:03d} | loss 3.1 | wps {w} | ups 0.3{extra} | train_wall 9"
            for e, w in enumerate(wps, 1)]
    (path / "train.log").write_text("\n".join(log) + "\n")
    return path


def test_a_record_reads_the_logs_and_tests_against_the_baseline(tmp_path):
    refs = tmp_path / "test.en"
    refs.write_text("\n".join(REFERENCES) + "\n")
    worse = [r.replace("green", "red").replace("runs", "walks") for r in REFERENCES]
    baseline = _run(tmp_path / "base", worse)
    system = _run(tmp_path / "node", REFERENCES, nfe=42.5, nfe_f=6)
    results = tmp_path / "results.json"
    new = quality_records.main([str(system), "--variant", "node-encoder-rk2-gated", "--method", "rk2_gated",
                                "--sides", "encoder", "--references", str(refs), "--baseline", str(baseline),
                                "--results", str(results)])
    assert (new["bleu"], new["params"], new["epochs"], new["seed"]) == (100.0, 7285760, 2, 2)
    assert (new["train_wps"], new["nfe_train"], new["nfe_decode"]) == (1400.5, 6.0, 42.5)
    # every sentence better: the bootstrap sees it every time, in both metrics
    assert new["p_vs_baseline"] < 0.05 and new["p_chrf_vs_baseline"] < 0.05
    one_better = _run(tmp_path / "one", [REFERENCES[0], *worse[1:]])  # a difference chance explains
    close = quality_records.main([str(one_better), "--variant", "close", "--sides", "none", "--references",
                                  str(refs), "--baseline", str(baseline), "--results", str(results)])
    assert close["p_vs_baseline"] > 0.05 and close["p_chrf_vs_baseline"] > 0.05
    assert close["nfe_train"] == 0 and close["nfe_decode"] == 0
    assert [r["variant"] for r in json.loads(results.read_text())] == ["node-encoder-rk2-gated", "close"]


def test_a_rerun_replaces_its_record(tmp_path):
    refs = tmp_path / "test.en"
    refs.write_text("\n".join(REFERENCES) + "\n")
    run = _run(tmp_path / "base", REFERENCES)
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"variant": "baseline", "seed": 2, "bleu": 1.0},
                                   {"variant": "baseline", "seed": 1, "bleu": 2.0}]))
    quality_records.main([str(run), "--variant", "baseline", "--sides", "none", "--references", str(refs),
                          "--results", str(results), "--note", "rerun"])
    records = json.loads(results.read_text())
    assert [(r["seed"], r["bleu"]) for r in records] == [(1, 2.0), (2, 100.0)] and records[1]["note"] == "rerun"
    assert records[1]["p_vs_baseline"] is None and records[1]["p_chrf_vs_baseline"] is None  # no --baseline


def test_missing_inputs_are_named_before_anything_is_written(tmp_path):
    results = tmp_path / "results.json"
    with pytest.raises(SystemExit, match="--references: .*nope.en not found"):
        quality_records.main([str(_run(tmp_path / "r", REFERENCES)), "--variant", "v", "--sides", "none",
                              "--references", str(tmp_path / "nope.en"), "--results", str(results)])
    assert not results.exists()


def test_hypotheses_are_kept_beside_the_records_and_serve_as_a_baseline(tmp_path):
    refs = tmp_path / "test.en"
    refs.write_text("\n".join(REFERENCES) + "\n")
    worse = [r.replace("green", "red") if i % 3 else r for i, r in enumerate(REFERENCES)]
    baseline, system = _run(tmp_path / "base", worse), _run(tmp_path / "node", REFERENCES)
    results = tmp_path / "quality.json"
    common = ["--sides", "none", "--references", str(refs), "--results", str(results)]
    quality_records.main([str(baseline), "--variant", "baseline", *common])
    kept = tmp_path / "quality_hypotheses" / "baseline-seed2.txt"
    assert kept.read_text().splitlines() == worse  # in sentence order, not fairseq's
    from_run = quality_records.main([str(system), "--variant", "a", "--baseline", str(baseline), *common])
    from_file = quality_records.main([str(system), "--variant", "b", "--baseline", str(kept), *common])
    assert from_file["p_vs_baseline"] == from_run["p_vs_baseline"] < 0.05
    assert from_file["p_chrf_vs_baseline"] == from_run["p_chrf_vs_baseline"]
    kept.write_text("\n".join(worse[:-1]) + "\n")
    with pytest.raises(SystemExit, match="--baseline: 59 hypotheses in .*baseline-seed2.txt, 60 references"):
        quality_records.main([str(system), "--variant", "c", "--baseline", str(kept), *common])


def test_every_seed_of_a_variant_is_tested_against_every_seed_of_the_baseline(tmp_path):
    refs = tmp_path / "test.en"
    refs.write_text("\n".join(REFERENCES) + "\n")
    results = tmp_path / "quality.json"

    def trained(variant, seed, hypotheses):
        quality_records.main([str(_run(tmp_path / f"{variant}{seed}", hypotheses, seed=seed)), "--variant", variant,
                              "--sides", "none", "--references", str(refs), "--results", str(results)])

    worse = [r.replace("green", "red") for r in REFERENCES]
    trained("baseline", 1, worse)
    trained("baseline", 2, [r if i % 2 else w for i, (r, w) in enumerate(zip(REFERENCES, worse))])
    trained("node", 1, REFERENCES)
    trained("node", 2, [*REFERENCES[:1], *worse[1:]])  # no better than the first baseline
    rows = quality_seeds.main(["--references", str(refs), "--results", str(results), "--out", str(tmp_path / "t.md")])
    base, node = rows
    assert (base["variant"], base["seeds"], "pairs" in base) == ("baseline", [1, 2], False)
    # node seed 1 beats both baselines; node seed 2 beats neither (below the second, level with the first)
    assert (node["pairs"], node["better_bleu"], node["better_chrf"]) == (4, 2, 2)
    assert node["max_p_bleu"] > 0.05
    assert node["delta_bleu"] == round((node["bleu"][0] + node["bleu"][1] - base["bleu"][0] - base["bleu"][1]) / 2, 2)
    assert "| `node` | 1, 2 |" in (tmp_path / "t.md").read_text() and "| 2/4 / 2/4 |" in (tmp_path / "t.md").read_text()
    with pytest.raises(SystemExit, match="--baseline: no kept hypotheses of 'plain'"):
        quality_seeds.main(["--references", str(refs), "--results", str(results), "--baseline", "plain"])
