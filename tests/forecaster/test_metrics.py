"""score_forecasts: hand-checked figures, pooling, and ignored rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from forecaster.metrics import COLUMNS, score_forecasts, skill

T = pd.date_range("2024-01-01", periods=6, freq="D", tz="UTC")


def _forecasts() -> pd.DataFrame:
    # two as-of times, horizons 1 and 2; actual closes 100, 110, 90, 100, 120 (and no 6th)
    return pd.DataFrame(
        {
            "as_of": [T[0], T[0], T[1], T[1], T[4]],
            "target_time": [T[1], T[2], T[2], T[3], T[5]],
            "horizon": [1, 2, 1, 2, 1],
            "value": [105.0, 100.0, 100.0, 100.0, 130.0],
            "naive": [100.0, 100.0, 110.0, 110.0, 120.0],
            "lower_80": [100.0, 95.0, 95.0, 90.0, 125.0],
            "upper_80": [115.0, 105.0, 105.0, 105.0, 135.0],
            "lower_95": [90.0, 80.0, 80.0, 80.0, 100.0],
            "upper_95": [120.0, 120.0, 120.0, 120.0, 140.0],
        }
    )


ACTUALS = pd.Series([100.0, 110.0, 90.0, 100.0, 120.0], index=T[:5])


def test_per_horizon_and_pooled_figures():
    scores = score_forecasts(_forecasts(), ACTUALS)
    assert list(scores.columns) == COLUMNS
    assert list(scores.index) == [0, 1, 2]
    one = scores.loc[1]
    # horizon 1: errors -5 (105 vs 110) and +10 (100 vs 90); naive errors -10 and +20
    assert one["n"] == 2
    assert one["rmse"] == pytest.approx(np.sqrt((25 + 100) / 2))
    assert one["mae"] == pytest.approx(7.5)
    assert one["mape"] == pytest.approx(100 * (5 / 110 + 10 / 90) / 2)
    assert one["smape"] == pytest.approx(100 * (5 / 107.5 + 10 / 95) / 2)
    assert one["naive_rmse"] == pytest.approx(np.sqrt((100 + 400) / 2))
    assert one["mase"] == pytest.approx(7.5 / 15)
    assert one["skill"] == pytest.approx(1 - one["rmse"] / one["naive_rmse"])
    assert one["direction"] == pytest.approx(1.0)  # both moved the way the model said
    assert one["coverage_80"] == pytest.approx(0.5)  # 110 in [100, 115]; 90 not in [95, 105]
    assert one["width_80"] == pytest.approx(12.5)
    assert one["coverage_95"] == pytest.approx(1.0)
    pooled = scores.loc[0]
    assert pooled["n"] == 4
    errors = np.array([-5.0, 10.0, 10.0, 0.0])
    assert pooled["rmse"] == pytest.approx(np.sqrt(np.mean(errors**2)))


def test_rows_without_an_actual_are_ignored():
    scores = score_forecasts(_forecasts(), ACTUALS)
    assert scores.loc[0, "n"] == 4  # the target T[5] has no actual yet


def test_naive_scores_as_zero_skill():
    naive = _forecasts().assign(value=lambda f: f["naive"]).drop(columns=["lower_80", "upper_80"])
    scores = score_forecasts(naive, ACTUALS)
    assert scores.loc[0, "skill"] == pytest.approx(0.0)
    assert scores.loc[0, "mase"] == pytest.approx(1.0)
    assert np.isnan(scores.loc[0, "coverage_80"])


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match=r"\['naive'\]"):
        score_forecasts(_forecasts().drop(columns="naive"), ACTUALS)


PRICE = st.floats(0.01, 1e6, allow_nan=False)


@given(
    values=st.lists(st.one_of(PRICE, st.just(np.nan)), min_size=0, max_size=5),
    naive=st.lists(PRICE, min_size=5, max_size=5),
    known=st.integers(0, 5),  # how many of the 5 targets have an actual
)
def test_skill_alone_is_the_pooled_skill_of_score_forecasts(values, naive, known):
    """The retrain policy's fast skill against the full scoring it stands for, bit for bit."""
    forecasts = _forecasts().iloc[: len(values)].assign(value=values, naive=naive[: len(values)])
    actuals = ACTUALS.iloc[:known]
    full = score_forecasts(forecasts, actuals).loc[0, "skill"]
    fast = skill(forecasts, actuals)
    assert (np.isnan(fast) and np.isnan(full)) or fast == full


def test_skill_refuses_what_score_forecasts_refuses():
    with pytest.raises(ValueError, match="duplicate time"):
        skill(_forecasts(), pd.concat([ACTUALS, ACTUALS]))
    with pytest.raises(ValueError, match=r"\['naive'\]"):
        skill(_forecasts().drop(columns="naive"), ACTUALS)
