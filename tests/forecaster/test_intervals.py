"""Validation calibration: shrinkage toward naive and split-conformal quantiles."""

from __future__ import annotations

import numpy as np

from forecaster.intervals import conformal_quantiles, shrinkage


def test_shrinkage_keeps_signal_and_drops_noise():
    rng = np.random.default_rng(0)
    targets = rng.normal(size=(500, 3))  # (n, horizon)
    anchor = np.zeros_like(targets)
    perfect = shrinkage(targets, targets, anchor)
    noise = shrinkage(rng.normal(size=(500, 3)), targets, anchor)
    wrong_way = shrinkage(-targets, targets, anchor)
    overconfident = shrinkage(3 * targets, targets, anchor)
    np.testing.assert_allclose(perfect, 1.0)
    assert (noise < 0.15).all()
    np.testing.assert_array_equal(wrong_way, 0.0)
    np.testing.assert_allclose(overconfident, 1 / 3)


def test_shrinkage_is_relative_to_the_naive_anchor():
    anchor = np.full((4, 1), 10.0)
    targets = anchor + np.array([[1.0], [-1.0], [2.0], [-2.0]])
    predicted = anchor + 2 * (targets - anchor)
    np.testing.assert_allclose(shrinkage(predicted, targets, anchor), [0.5])


def test_conformal_quantile_covers_at_least_the_level():
    rng = np.random.default_rng(1)
    calibration = rng.normal(size=(400, 2))
    q = conformal_quantiles(calibration, 0.8)
    fresh = rng.normal(size=(20000, 2))
    coverage = (np.abs(fresh) <= q).mean(axis=0)
    assert ((coverage > 0.77) & (coverage < 0.85)).all()
    assert (conformal_quantiles(calibration[:3], 0.95) == np.abs(calibration[:3]).max(axis=0)).all()
