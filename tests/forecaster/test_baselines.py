"""Naive, drift and seasonal-naive baselines: values and intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecaster import DriftForecaster, NaiveForecaster, SeasonalNaiveForecaster
from tests.forecaster.synthetic import random_walk

COLUMNS = [
    "as_of",
    "target_time",
    "horizon",
    "value",
    "lower_80",
    "upper_80",
    "lower_95",
    "upper_95",
]


def test_naive_repeats_the_close_at_as_of():
    series = random_walk(100)
    forecast = NaiveForecaster(horizon=4).fit(series).predict(series, as_of=series.index[60])
    assert list(forecast.columns) == COLUMNS
    assert (forecast["value"] == series.iloc[60]).all()
    assert forecast["target_time"].iloc[-1] == series.index[64]


def test_drift_grows_by_the_mean_log_return():
    series = pd.Series(
        100 * np.exp(0.01 * np.arange(50)),
        index=pd.date_range("2024-01-01", periods=50, freq="D", tz="UTC"),
    )
    model = DriftForecaster(horizon=3).fit(series)
    assert model.drift_ == pytest.approx(0.01)
    expected = series.iloc[-1] * np.exp(0.01 * np.arange(1, 4))
    np.testing.assert_allclose(model.predict(series)["value"], expected)


def test_seasonal_naive_repeats_the_last_season():
    series = random_walk(50)
    forecast = SeasonalNaiveForecaster(season=7, horizon=9).fit(series).predict(series)
    last_week = series.iloc[-7:].to_numpy()
    np.testing.assert_allclose(forecast["value"], np.r_[last_week, last_week[:2]])


def test_baseline_intervals_widen_with_the_horizon_and_cover_about_their_level():
    series = random_walk(600, seed=3)
    model = NaiveForecaster(horizon=5).fit(series.iloc[:400])
    forecast = model.predict(series.iloc[:400])
    widths = (forecast["upper_80"] - forecast["lower_80"]).to_numpy()
    assert (np.diff(widths) > 0).all()
    hits = []
    for t in range(400, 599):
        one = model.predict(series, as_of=series.index[t])
        hits.append(one["lower_80"].iloc[0] <= series.iloc[t + 1] <= one["upper_80"].iloc[0])
    assert 0.7 <= np.mean(hits) <= 0.9


def test_baseline_needs_enough_history():
    with pytest.raises(ValueError, match="too short"):
        SeasonalNaiveForecaster(season=7, horizon=2).fit(random_walk(8))
    with pytest.raises(RuntimeError, match="not fitted"):
        NaiveForecaster().predict(random_walk(10))
