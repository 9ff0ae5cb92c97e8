"""The length penalty chosen on the validation set (``benchmarks.length_penalty``), on two tiny
fairseq models trained a few updates on the numbers task."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fairseq")


@pytest.mark.slow
def test_each_model_is_tuned_on_valid_and_tested_against_the_baseline(one_step_models, tmp_path):
    from benchmarks import length_penalty
    from benchmarks.quality_records import in_order, paired_bootstrap
    from node_seq.text.score import score

    data, models = one_step_models
    out = tmp_path / "out"
    rows = length_penalty.main([str(data), str(out), "--model", f"e={models['euler']}", "--model",
                                f"rk2={models['rk2_gated']}", "--baseline", "e", "--lenpens", "3,1,0.5",
                                "--", "--beam", "3"])
    assert [r["model"] for r in rows] == ["e", "rk2"]
    for r in rows:
        assert [point["lenpen"] for point in r["valid"]] == [0.5, 1.0, 3.0]
        assert r["lenpen"] == length_penalty.choose(r["valid"])
        for lenpen, suffix in ((r["lenpen"], ""), (1.0, "_recipe")):
            log = out / "logs" / f"{r['model']}.test.lenpen-{lenpen:g}.log"
            assert "'lenpen': %r" % lenpen in log.read_text()  # the penalty reached fairseq-generate
            assert r[f"test_bleu{suffix}"] == score(log, data / "raw" / "test.tgt")["bleu"]
        valid_log = out / "logs" / f"{r['model']}.valid.lenpen-3.log"
        assert "'lenpen': 3.0" in valid_log.read_text()
        assert r["valid"][2]["bleu"] == score(valid_log, data / "raw" / "valid.tgt")["bleu"]
    assert rows[0]["p_vs"] == rows[0]["p_valid_vs"] == {}
    references = (data / "raw" / "test.tgt").read_text().splitlines()
    tuned = [in_order(out / "logs" / f"{r['model']}.test.lenpen-{r['lenpen']:g}.log") for r in rows]
    assert rows[1]["p_vs"] == {"e": paired_bootstrap(tuned[0], tuned[1], references)}
    references = (data / "raw" / "valid.tgt").read_text().splitlines()
    at_one = [in_order(out / "logs" / f"{r['model']}.valid.lenpen-1.log") for r in rows]
    assert rows[1]["p_valid_vs"] == {"e": paired_bootstrap(at_one[0], at_one[1], references)}
    assert json.loads((out / "length_penalty.json").read_text()) == rows
    table = (out / "length_penalty.md").read_text().splitlines()
    assert table[0].endswith("| p vs e, test tuned (BLEU / chrF2) | p vs e, valid at 1 (BLEU / chrF2) |")
    assert table[2].endswith("| - | - |") and len(table) == 4

    # the baseline can be named later, from the saved rows; a model named again is tuned again, reusing
    # the decodings it has with the same options and decoding only the new penalties
    logs = {path.name: path.stat().st_mtime_ns for path in (out / "logs").glob("e.*.log")}
    again = length_penalty.main([str(data), str(out), "--model", f"e={models['euler']}", "--baseline", "rk2",
                                 "--lenpens", "1,2", "--", "--beam", "3"])
    assert [r["model"] for r in again] == ["rk2", "e"]
    assert again[0]["valid"] == rows[1]["valid"] and again[0]["p_vs"] == {}
    assert [point["lenpen"] for point in again[1]["valid"]] == [1.0, 2.0]
    assert again[1]["valid"][0] == rows[0]["valid"][1]
    assert set(again[1]["p_vs"]) == set(again[1]["p_valid_vs"]) == {"rk2"}
    now = {path.name: path.stat().st_mtime_ns for path in (out / "logs").glob("e.*.log")}
    assert {name: now[name] for name in logs} == logs and set(now) - set(logs) >= {"e.valid.lenpen-2.log"}
    other_options = length_penalty.main([str(data), str(out), "--model", f"e={models['euler']}", "--lenpens", "1",
                                         "--", "--beam", "2"])
    assert other_options[1]["generate_options"] == ["--beam", "2"]
    assert (out / "logs" / "e.valid.lenpen-1.log").stat().st_mtime_ns > now["e.valid.lenpen-1.log"]


def test_the_nearest_penalty_to_the_recipes_wins_a_tie():
    from benchmarks.length_penalty import choose

    assert choose([{"lenpen": 0.8, "bleu": 30.0}, {"lenpen": 1.0, "bleu": 29.0}, {"lenpen": 1.5, "bleu": 30.0}]) == 0.8
    assert choose([{"lenpen": 1.0, "bleu": 30.0}, {"lenpen": 2.0, "bleu": 30.0}]) == 1.0
    assert choose([{"lenpen": 1.0, "bleu": 30.0}, {"lenpen": 2.0, "bleu": 30.5}]) == 2.0


@pytest.mark.slow
@pytest.mark.parametrize("options, message", [
    (["--lenpens", "0.8,1.2"], r"--lenpens: '0.8,1.2' must be comma-separated numbers > 0, 1 among them"),
    (["--lenpens", "0,1"], r"--lenpens: '0,1' must be"),
    (["--lenpens", "long"], r"--lenpens: 'long' must be"),
    (["--baseline", "nobody"], r"--baseline: 'nobody' is not a model; the models are e"),
])
def test_bad_options_are_refused_before_any_work(one_step_models, tmp_path, options, message):
    from benchmarks import length_penalty

    data, models = one_step_models
    with pytest.raises(SystemExit, match=message):
        length_penalty.main([str(data), str(tmp_path / "out"), "--model", f"e={models['euler']}", *options])
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_missing_validation_references_are_refused_before_any_work(one_step_models, tmp_path):
    import shutil

    from benchmarks import length_penalty

    data, models = one_step_models
    shutil.copytree(data / "bin", tmp_path / "data" / "bin")
    (tmp_path / "data" / "raw").mkdir()
    shutil.copy(data / "raw" / "test.tgt", tmp_path / "data" / "raw" / "test.tgt")
    with pytest.raises(SystemExit, match=r"DATA_DIR: no .*raw/valid.tgt, the valid references"):
        length_penalty.main([str(tmp_path / "data"), str(tmp_path / "out"), "--model", f"e={models['euler']}"])
    assert not (tmp_path / "out").exists()
