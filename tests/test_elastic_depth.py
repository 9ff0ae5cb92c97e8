"""Elastic depth (``benchmarks.elastic_depth``): trained models decoded with other solvers; what their
learned gates do (``benchmarks.gate_statistics``).

A tiny ``rk2_gated`` model, trained a few updates on the numbers task, is decoded as trained, with
its own method spelled out (which must change nothing), and with other methods (which must drop
its learned coefficients rather than fail to load them).
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fairseq")

pytestmark = pytest.mark.slow  # every test decodes one_step_models (fairseq-train, tests/conftest.py)


def test_a_learned_block_decodes_with_other_methods(one_step_models, tmp_path):
    from benchmarks import elastic_depth

    data, models = one_step_models
    rows = elastic_depth.main([str(data), str(tmp_path / "out"), "--model", f"rk2={models['rk2_gated']}",
                               "--settings", "trained,rk2_gated:1,euler:1,euler:2,dopri5@0.01", "--", "--beam", "2"])
    assert [r["setting"] for r in rows] == ["trained", "rk2_gated:1", "euler:1", "euler:2", "dopri5@0.01"]
    as_trained, spelled_out = rows[0], rows[1]
    assert (spelled_out["bleu"], spelled_out["nfe_per_sentence"]) == (as_trained["bleu"], as_trained["nfe_per_sentence"])
    assert len(list((tmp_path / "out" / "logs").glob("rk2.*.log"))) == len(rows)
    assert rows[3]["nfe_per_sentence"] > rows[2]["nfe_per_sentence"]
    assert rows[4]["node_rtol"] == 0.01 and rows[4]["node_atol"] == pytest.approx(0.001)
    saved = json.loads((tmp_path / "out" / "elastic_depth.json").read_text())
    assert saved == rows
    table = (tmp_path / "out" / "elastic_depth.md").read_text().splitlines()
    assert len(table) == 2 + len(rows) and "| rk2 | euler:2 |" in table[5]
    assert (tmp_path / "out" / "elastic_depth.png").stat().st_size > 0
    # another model, with its own settings, joins the same table; the first model's rows stay
    more = elastic_depth.main([str(data), str(tmp_path / "out"), "--model", f"e={models['euler']}",
                               "--settings", "euler:2", "--", "--beam", "2"])
    assert [(r["model"], r["setting"]) for r in more] == [("rk2", r["setting"]) for r in rows] + [("e", "euler:2")]
    assert json.loads((tmp_path / "out" / "elastic_depth.json").read_text()) == more
    again = elastic_depth.main([str(data), str(tmp_path / "out"), "--model", f"rk2={models['rk2_gated']}",
                                "--settings", "trained", "--", "--beam", "2"])  # a model named again is replaced
    assert [(r["model"], r["setting"]) for r in again] == [("e", "euler:2"), ("rk2", "trained")]
    assert again[1] == rows[0]  # decoding is deterministic


def test_a_model_without_learned_coefficients_is_refused_a_learned_block(one_step_models, tmp_path):
    from benchmarks import elastic_depth

    data, models = one_step_models
    with pytest.raises(ValueError, match="node_method 'rk2_gated' is a learned block, but the checkpoint has no"):
        elastic_depth.main([str(data), str(tmp_path / "out"), "--model", f"e={models['euler']}",
                            "--settings", "rk2_gated:1"])


@pytest.mark.parametrize("setting", ["euler", "euler:0", "dopri5:2", "rk4@0.1", "dopri5@-1", "bogus:1"])
def test_bad_settings_are_refused_before_any_work(one_step_models, tmp_path, setting):
    from benchmarks import elastic_depth

    data, models = one_step_models
    with pytest.raises(SystemExit, match=r"--settings: .* is not a setting; use 'trained', METHOD:STEPS with METHOD "
                                         r"one of euler, .*METHOD@RTOL with METHOD one of dopri5"):
        elastic_depth.main([str(data), str(tmp_path / "out"), "--model", f"e={models['euler']}", "--settings", setting])
    assert not (tmp_path / "out").exists()


def test_gate_statistics_read_every_gate_on_every_real_token(one_step_models, tmp_path):
    from benchmarks import gate_statistics

    data, models = one_step_models
    rows = gate_statistics.main([str(models["rk2_gated"]), str(data / "bin"), "--out", str(tmp_path / "gates.json")])
    assert [r["layer"] for r in rows] == ["encoder.layers.0.coefficients", "decoder.layers.0.coefficients"]
    assert json.loads((tmp_path / "gates.json").read_text()) == rows
    from fairseq import checkpoint_utils

    model_list, _, task = checkpoint_utils.load_model_ensemble_and_task([str(models["rk2_gated"])],
                                                                        arg_overrides={"data": str(data / "bin")})
    task.load_dataset("test")
    test = task.dataset("test")
    # one sentence per batch: the source's and the target's tokens, eos included, and no padding
    assert (rows[0]["tokens"], rows[1]["tokens"]) == (int(test.src_sizes.sum()), int(test.tgt_sizes.sum()))
    assert all(0 < r["gate_mean"] < 1 and r["stage_difference"] > 0 for r in rows)
    model = model_list[0]
    gates = [module for module in model.modules() if isinstance(module, gate_statistics.StageGate)]
    for bias, mean in ((50.0, 1.0), (-50.0, 0.0)):  # saturated gates: Euler's step, then k2 alone
        for gate in gates:
            gate.gate_linear.bias.data.fill_(bias)
        saturated = gate_statistics.measure(model, task, "test")
        assert all(r["gate_mean"] == mean and r["gate_std"] == 0 for r in saturated)
    assert all("gate" not in vars(gate) for gate in gates)  # the recording is undone


def test_gate_statistics_refuse_a_model_without_gates(one_step_models):
    from benchmarks import gate_statistics

    data, models = one_step_models
    with pytest.raises(SystemExit, match="CHECKPOINT: the model has no rk2_gated layer"):
        gate_statistics.main([str(models["euler"]), str(data / "bin")])
