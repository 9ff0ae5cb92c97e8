"""``benchmarks.adaptive_sentences``: NFE per sentence of an adaptive encoder, per sentence, alone and
batch-wide (issue #29, item 4), on a tiny model trained a few updates on the numbers task."""

from __future__ import annotations

import json
import math
import re

import pytest

pytest.importorskip("fairseq")

from fairseq_helpers import fairseq_generate, fairseq_train, make_task  # noqa: E402

@pytest.fixture(scope="module")
def adaptive_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("adaptive-sentences")
    bins = make_task(root)
    fairseq_train(bins, root / "m", ["--no-node-decoder", "--node-method", "dopri5", "--node-rtol", "1e-2",
                                     "--node-atol", "1e-3", "--max-update", "3"])
    return bins.parent, root / "m" / "checkpoint_last.pt"


@pytest.mark.slow  # trains a model (fairseq-train)
def test_every_sentence_gets_its_own_nfe_and_its_own_loss(adaptive_model, tmp_path):
    from benchmarks import adaptive_sentences

    data, checkpoint = adaptive_model
    out = tmp_path / "result"
    rows = adaptive_sentences.main([str(checkpoint), str(data), "--rtols", "0.01,1e-5", "--max-tokens", "60",
                                    "--out", str(out), "--note", "four updates"])
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["rows"] == rows and record["meta"]["model"]["note"] == "four updates"
    assert [r["rtol"] for r in rows] == [0.01, 1e-5]
    tight = record["sentences"]["1e-05"]
    # per-sentence control gives each sentence what it needs alone, in whatever batch
    assert tight["nfe_sequence"] == tight["nfe_alone"]
    assert all(r["sequence_differs_from_alone"] == 0 for r in rows)
    assert rows[1]["nfe_mean"] > rows[0]["nfe_mean"]  # a tighter tolerance takes more steps
    assert rows[1]["nfe_max"] > rows[1]["nfe_min"], "sentences should differ at a tight tolerance"
    # batch-wide control: all of a batch pay the same, so sentences that need different NFE alone do not
    assert rows[1]["batch_pays_more_share"] > 0 and rows[1]["batch_pays_less_share"] > 0
    assert rows[1]["batch_over_alone"] == pytest.approx(sum(tight["nfe_batch"]) / sum(tight["nfe_alone"]), abs=1e-3)
    assert sum(rows[1]["nfe_counts"].values()) == rows[1]["sentences"] == len(tight["length"])
    assert (tmp_path / "result_nfe.png").stat().st_size > 0 and (tmp_path / "result_length.png").stat().st_size > 0
    # the loss per sentence is fairseq's own score of the reference (base 2, per token, </s> included)
    scored = fairseq_generate(data / "bin", checkpoint, ["--score-reference", "--model-overrides",
                                                         "{'node_rtol': 1e-5, 'node_atol': 1e-6}"])
    reference_scores = {int(i): float(s) for i, s in re.findall(r"^H-(\d+)\t(\S+)\t", scored, re.M)}
    assert len(reference_scores) == len(tight["loss"])
    for index, loss in enumerate(tight["loss"]):
        assert loss == pytest.approx(-reference_scores[index] * math.log(2), rel=1e-3, abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("argv, message", [
    (["--rtols", "0.1,x"], "--rtols: '0.1,x' is not a comma-separated list of positive tolerances"),
    (["--rtols", "-1"], "--rtols: '-1' is not"),
])
def test_bad_tolerances_are_refused_before_any_work(adaptive_model, tmp_path, argv, message):
    from benchmarks import adaptive_sentences

    data, checkpoint = adaptive_model
    with pytest.raises(SystemExit, match=re.escape(message)):
        adaptive_sentences.main([str(checkpoint), str(data), "--out", str(tmp_path / "r"), *argv])
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_a_model_without_an_adaptive_encoder_is_refused(one_step_models, tmp_path):
    from benchmarks import adaptive_sentences

    data, models = one_step_models
    with pytest.raises(SystemExit, match="needs a model whose encoder layers are adaptive ODE blocks"):
        adaptive_sentences.main([str(models["euler"]), str(data), "--out", str(tmp_path / "r")])


def test_correlations_are_scipys():
    """Spearman's rho with tied ranks (NFE takes few values) and Pearson's r, against scipy's."""
    import random

    stats = pytest.importorskip("scipy.stats")
    from benchmarks.adaptive_sentences import correlations

    rng = random.Random(0)
    nfe = [rng.choice([7, 7, 13, 19]) for _ in range(200)]
    loss = [rng.random() + 0.05 * n for n in nfe]
    ours = correlations("x", nfe, loss)
    assert ours["spearman_x"] == pytest.approx(stats.spearmanr(nfe, loss).statistic, abs=5e-4)
    assert ours["pearson_x"] == pytest.approx(stats.pearsonr(nfe, loss).statistic, abs=5e-4)
    assert correlations("x", [7] * 5, [1, 2, 3, 4, 5]) == {"spearman_x": None, "pearson_x": None}
