"""Interval score, pinball loss, the Diebold–Mariano test and Holm's adjustment."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from forecaster.scores import diebold_mariano, holm, interval_score, pinball_loss


def test_interval_score_is_the_width_inside_and_adds_the_penalty_outside():
    lower, upper = np.array([9.0, 9.0, 9.0]), np.array([11.0, 11.0, 11.0])
    actual = np.array([10.0, 8.0, 12.5])
    assert interval_score(lower, upper, actual, level=0.8) == pytest.approx([2.0, 12.0, 17.0])


def test_pinball_loss_weights_the_sides_by_the_quantile():
    assert pinball_loss(np.array([10.0]), np.array([12.0]), quantile=0.9)[0] == pytest.approx(1.8)
    assert pinball_loss(np.array([10.0]), np.array([8.0]), quantile=0.9)[0] == pytest.approx(0.2)


def test_dm_finds_a_clearly_worse_forecast_significant():
    rng = np.random.default_rng(0)
    truth = rng.normal(0, 1, 500)
    worse = (truth + rng.normal(0, 1, 500)) ** 2
    better = (truth * 0.1) ** 2
    result = diebold_mariano(worse, better, horizon=1)
    assert result.statistic > 0 and result.p_worse < 0.001 and result.p_value < 0.002


@pytest.mark.parametrize("horizon", [1, 7])
def test_dm_rejects_equal_forecasts_about_as_often_as_its_level(horizon):
    """The test's size: with equally good forecasts, p < 0.05 in about 5 % of samples."""
    rng = np.random.default_rng(1)
    kernel = np.ones(horizon)  # h-step errors share h - 1 shocks
    rejected = 0
    for _ in range(300):
        a = np.convolve(rng.normal(0, 1, 400 + horizon - 1), kernel, "valid") ** 2
        b = np.convolve(rng.normal(0, 1, 400 + horizon - 1), kernel, "valid") ** 2
        rejected += diebold_mariano(a, b, horizon=horizon).p_value < 0.05
    assert 0.015 < rejected / 300 < 0.10


def test_dm_with_overlapping_errors_uses_the_longer_run_variance():
    """h-step losses made of overlapping shocks: the HAC variance is larger than the naive one."""
    rng = np.random.default_rng(2)
    shocks = rng.normal(0, 1, 1010)
    overlapping = np.convolve(shocks, np.ones(7), mode="valid")[:1000] ** 2
    h7 = diebold_mariano(overlapping + 0.3, overlapping, horizon=7)
    h1 = diebold_mariano(overlapping + 0.3 + rng.normal(0, 3, 1000), overlapping, horizon=1)
    assert h7.n == 1000 and math.isfinite(h7.statistic) and math.isfinite(h1.statistic)


def test_dm_needs_enough_pairs_and_drops_non_finite_ones():
    assert math.isnan(diebold_mariano(np.ones(2), np.zeros(2), horizon=1).statistic)
    result = diebold_mariano(np.array([1.0, np.nan, 2, 3, 4, 5]), np.zeros(6), horizon=1)
    assert result.n == 5
    with pytest.raises(ValueError, match="pair"):
        diebold_mariano(np.ones(3), np.ones(4), horizon=1)


def holm_rejects(p_values: list[float], alpha: float) -> set[int]:
    """Holm's procedure as he stated it: test the smallest p-value at α / m, the next at
    α / (m − 1) and so on, stopping at the first that is above its level (compared as
    p × (m − step) against α, as `holm` computes it, so that rounding cannot split them)."""
    ranked = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    rejected = set()
    for step, (p, i) in enumerate(ranked):
        if p * (len(ranked) - step) > alpha:
            break
        rejected.add(i)
    return rejected


p_values = st.lists(
    st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 0.01, 0.05, 1.0, math.nan])),
    max_size=40,
)


@given(p_values, st.sampled_from([0.001, 0.01, 0.05, 0.1, 0.2]))
def test_holm_adjusted_p_values_reject_what_the_step_down_procedure_rejects(p, alpha):
    adjusted = holm(np.array(p, dtype=np.float64))
    assert {i for i, a in enumerate(adjusted) if a <= alpha} == holm_rejects(p, alpha)
    finite = [i for i, value in enumerate(p) if math.isfinite(value)]
    assert all(p[i] <= adjusted[i] <= 1.0 for i in finite)
    assert all(math.isnan(adjusted[i]) for i in range(len(p)) if i not in finite)


def test_holm_multiplies_the_smallest_by_the_number_of_tests_and_keeps_the_order():
    adjusted = holm(np.array([0.034, 0.263, 0.5, 0.8, 0.01]))
    assert adjusted == pytest.approx([0.136, 0.789, 1.0, 1.0, 0.05])
    assert holm(np.array([])).shape == (0,)
