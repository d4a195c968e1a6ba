"""The paired bootstrap against brute force and a closed form."""
import itertools

import numpy as np
import pytest

from crmt_mm.evaluation.statistics import paired_bootstrap


def test_single_seed_matches_the_exact_bootstrap_distribution():
    a = np.array([1, 1, 0, 1, 0])
    b = np.array([0, 1, 0, 0, 1])
    d = a - b
    # Every one of the 5^5 equally likely resamples of the clips.
    exact = np.array([d[list(idx)].mean()
                      for idx in itertools.product(range(5), repeat=5)])
    out = paired_bootstrap(a, b, n_boot=40000, seed=1)
    lo, hi = np.quantile(exact, [0.025, 0.975])
    assert out['mean'] == pytest.approx(d.mean())
    assert out['low'] == pytest.approx(lo, abs=0.21)  # grid step 0.2
    assert out['high'] == pytest.approx(hi, abs=0.21)


def test_large_sample_matches_the_normal_closed_form():
    rng = np.random.default_rng(0)
    a = rng.random(2000) < 0.6
    b = rng.random(2000) < 0.5
    d = a.astype(float) - b
    se = d.std() / np.sqrt(d.size)  # the bootstrap's own variance
    out = paired_bootstrap(a, b, n_boot=4000, seed=0)
    assert out['low'] == pytest.approx(d.mean() - 1.96 * se, abs=0.15 * se
                                       + 1e-3)
    assert out['high'] == pytest.approx(d.mean() + 1.96 * se, abs=0.15 * se
                                        + 1e-3)


def test_two_stage_resampling_of_seeds_and_clips():
    # Seeds that disagree widen the interval; identical seeds equal one.
    one = np.array([1, 0, 1, 1, 0, 1, 0, 1])
    same = paired_bootstrap(np.stack([one] * 3), np.zeros((3, 8)),
                            n_boot=3000, seed=0)
    alone = paired_bootstrap(one, np.zeros(8), n_boot=3000, seed=0)
    assert same['mean'] == alone['mean']
    assert same['high'] - same['low'] < alone['high'] - alone['low'] + 0.05
    spread = paired_bootstrap(np.stack([np.ones(8), np.zeros(8),
                                        np.ones(8)]), np.zeros((3, 8)),
                              n_boot=3000, seed=0)
    assert spread['low'] == 0.0 and spread['high'] == 1.0
    # Seeded: the same draws twice.
    assert paired_bootstrap(one, 1 - one, seed=3) == \
        paired_bootstrap(one, 1 - one, seed=3)
    assert (spread['seeds'], spread['clips']) == (3, 8)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match='same shape'):
        paired_bootstrap([1, 0], [1])
    with pytest.raises(ValueError, match='n_boot'):
        paired_bootstrap([1], [0], n_boot=0)
    with pytest.raises(ValueError, match='level'):
        paired_bootstrap([1], [0], level=1.5)
