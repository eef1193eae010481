"""Interval scores, pinball losses, coverage per volatility tercile and DM in score_forecasts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from forecaster.metrics import COLUMNS, score_forecasts
from forecaster.probabilistic import SCORE_COLUMNS

DAYS = pd.date_range("2024-01-01", periods=400, freq="D", tz="UTC")


def frame(n: int, *, model_noise: float, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """n one-step forecasts of a random walk: naive, a noisy model, LSTM and naive bands."""
    rng = np.random.default_rng(seed)
    close = pd.Series(100 * np.exp(np.cumsum(rng.normal(0, 0.02, len(DAYS)))), index=DAYS)
    as_of = DAYS[:n]
    naive = close.iloc[:n].to_numpy()
    value = naive * np.exp(rng.normal(0, model_noise, n))
    forecasts = pd.DataFrame(
        {
            "as_of": as_of,
            "target_time": DAYS[1 : n + 1],
            "horizon": 1,
            "value": value,
            "naive": naive,
            "lower_80": value * 0.98,
            "upper_80": value * 1.02,
            "lower_95": value * 0.96,
            "upper_95": value * 1.04,
            "lstm_value": value,
            "lstm_lower_80": value * 0.99,
            "lstm_upper_80": value * 1.01,
            "lstm_lower_95": value * 0.98,
            "lstm_upper_95": value * 1.02,
            "naive_lower_80": naive * 0.975,
            "naive_upper_80": naive * 1.025,
            "naive_lower_95": naive * 0.96,
            "naive_upper_95": naive * 1.04,
            "volatility": np.arange(n, dtype=float),
        }
    )
    return forecasts, close


def test_interval_score_and_pinball_relative_to_the_close():
    t = DAYS[:3]
    forecasts = pd.DataFrame(
        {
            "as_of": t[:2],
            "target_time": t[1:],
            "horizon": 1,
            "value": [10.0, 10.0],
            "naive": [10.0, 20.0],
            "lower_80": [9.0, 9.0],
            "upper_80": [11.5, 11.0],
        }
    )
    scores = score_forecasts(forecasts, pd.Series([10.0, 11.0, 12.0], index=t)).loc[0]
    # first: inside, width 2.5 / close 10; second: 1 above, 2 + 2 / 0.2 × 1 = 12 / close 20
    assert scores["interval_score_80"] == pytest.approx((0.25 + 0.6) / 2)
    assert scores["pinball_80"] == pytest.approx(0.2 / 4 * (0.25 + 0.6) / 2)
    assert math.isnan(scores["lstm_interval_score_80"]) and math.isnan(scores["naive_coverage_80"])


def test_every_score_column_is_there_for_the_model_the_lstm_and_the_naive_reference():
    forecasts, close = frame(300, model_noise=0.01)
    scores = score_forecasts(forecasts, close)
    assert list(scores.columns) == COLUMNS and set(SCORE_COLUMNS) <= set(scores.columns)
    pooled = scores.loc[0]
    assert pooled[SCORE_COLUMNS].notna().all(), pooled[pooled.isna()].index.tolist()
    assert pooled["lstm_rmse"] == pytest.approx(pooled["rmse"])  # the same values here
    assert pooled["lstm_interval_score_80"] != pooled["interval_score_80"]  # other bands


def test_diebold_mariano_says_a_noisy_model_is_significantly_worse_than_naive():
    forecasts, close = frame(300, model_noise=0.02)
    pooled = score_forecasts(forecasts, close).loc[0]
    assert pooled["dm_statistic"] > 2 and pooled["dm_p_value"] < 0.01
    same = forecasts.assign(value=forecasts["naive"])
    pooled = score_forecasts(same, close).loc[0]
    assert pooled["dm_statistic"] == 0 and pooled["dm_p_value"] == 1


def test_coverage_by_volatility_tercile():
    forecasts, close = frame(9, model_noise=0.0)
    actual = close.reindex(forecasts["target_time"]).to_numpy()
    # inside for the calm third, outside for the others
    forecasts["lower_80"] = np.where(np.arange(9) < 3, actual * 0.9, actual * 1.1)
    forecasts["upper_80"] = forecasts["lower_80"] * 1.3
    pooled = score_forecasts(forecasts, close).loc[0]
    assert pooled["coverage_80_low_vol"] == 1.0
    assert pooled["coverage_80_mid_vol"] == 0.0 and pooled["coverage_80_high_vol"] == 0.0
    one_run = score_forecasts(forecasts.assign(as_of=DAYS[0]), close).loc[0]
    assert math.isnan(one_run["coverage_80_low_vol"])  # fewer than 3 as_of times
