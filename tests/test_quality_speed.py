"""``benchmarks.quality_speed``: words/s of short runs, as ratios to the baseline of the same round."""

from __future__ import annotations

import json

import pytest

from benchmarks import quality_speed


def _log(path, wps, nfe_f=None):
    """A fairseq-train log in the simple format with one train_inner line per logged interval."""
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = f", nfe_f={nfe_f}, nfe_b=0" if nfe_f is not None else ""
    lines = [f"2026-12-02 | INFO | train_inner | epoch 001:     {10 * i} / 131 loss=9.1, wps={w}, ups=0.3{extra}, "
             f"train_wall={i}" for i, w in enumerate(wps, 1)]
    path.write_text("\n".join(["fairseq_cli.train | model ...", *lines, "done training"]) + "\n")


def test_each_round_is_compared_with_its_own_baseline(tmp_path):
    # round 2 ran on a machine twice as slow: absolute words/s halve, the ratio stays 0.5
    _log(tmp_path / "baseline" / "round-1.log", [50, 1000, 1000, 1000])  # the first interval (warm-up) is dropped
    _log(tmp_path / "baseline" / "round-2.log", [50, 500, 500, 500])
    _log(tmp_path / "rk2" / "round-1.log", [10, 500, 400, 600], nfe_f=6)
    _log(tmp_path / "rk2" / "round-2.log", [10, 250, 250, 250], nfe_f=6)
    rows = quality_speed.main([str(tmp_path), "baseline", "rk2", "--out", str(tmp_path / "speed"),
                               "--command", "bash benchmarks/multi30k_quality.sh D R --speed 40"])
    assert [(r["variant"], r["rounds"], r["ratio_to_baseline"], r["nfe_f_per_update"]) for r in rows] == [
        ("baseline", 2, 1.0, 0.0), ("rk2", 2, 0.5, 6.0)]
    assert rows[0]["words_per_s"] == 750 and rows[1]["words_per_s"] == 375
    saved = json.loads((tmp_path / "speed.json").read_text())
    assert saved["rows"] == rows and saved["command"].endswith("--speed 40")
    assert (tmp_path / "speed.md").read_text().startswith("Command: `bash benchmarks/multi30k_quality.sh")


def test_without_the_baseline_there_is_no_ratio(tmp_path):
    _log(tmp_path / "rk2" / "round-1.log", [10, 500, 500], nfe_f=6)
    assert quality_speed.main([str(tmp_path), "rk2"])[0]["ratio_to_baseline"] is None


def test_a_run_too_short_to_time_is_named(tmp_path):
    _log(tmp_path / "rk2" / "round-1.log", [10])
    with pytest.raises(SystemExit, match="round-1.log: fewer than two logged intervals; give --speed at least 20"):
        quality_speed.main([str(tmp_path), "rk2"])
    with pytest.raises(SystemExit, match="SPEED_DIR: no round-\\*.log in .*baseline"):
        quality_speed.main([str(tmp_path), "baseline"])
