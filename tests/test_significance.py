"""The one paired bootstrap (:mod:`node_seq.significance`), with the statistic passed in."""

import random

import numpy as np
import pytest

from node_seq.significance import paired_bootstrap


def accuracy(sums):
    return sums[..., 0] / sums[..., 1]


def _examples(n: int = 200, hit_rate: float = 0.6, seed: int = 0) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    return [(float(rng.random() < hit_rate), 1.0) for _ in range(n)]


def test_the_p_value_is_that_of_a_sample_by_sample_loop():
    baseline, system = _examples(seed=0), _examples(hit_rate=0.65, seed=1)
    draws = np.random.default_rng(7).integers(0, len(baseline), size=(50, len(baseline)))
    observed = np.mean([s[0] for s in system]) - np.mean([b[0] for b in baseline])
    deltas = [np.mean([system[i][0] for i in draw]) - np.mean([baseline[i][0] for i in draw]) for draw in draws]
    far = sum(abs(d - np.mean(deltas)) >= abs(observed) for d in deltas)
    assert paired_bootstrap(baseline, system, accuracy, resamples=50, seed=7) == pytest.approx((far + 1) / 51)


def test_no_difference_is_p_one_a_clear_one_is_the_smallest_p_and_the_order_does_not_matter():
    baseline = _examples()
    assert paired_bootstrap(baseline, baseline, accuracy) == 1.0
    better = [(1.0, 1.0)] * len(baseline)
    assert paired_bootstrap(baseline, better, accuracy) == pytest.approx(1 / 1001)
    noisy = _examples(seed=3)  # the same hit rate, other examples
    assert paired_bootstrap(baseline, noisy, accuracy) == paired_bootstrap(noisy, baseline, accuracy) > 0.05


def test_systems_scored_on_other_samples_are_refused():
    with pytest.raises(ValueError, match=r"not scored on the same samples \(statistics of shape \(200, 2\) and "
                                         r"\(199, 2\)\)"):
        paired_bootstrap(_examples(), _examples()[1:], accuracy)
