"""Bad candles are a ValueError that says what is wrong and where."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecaster import ForecasterConfig, LSTMForecaster, NaiveForecaster
from forecaster.validation import as_candles
from tests.forecaster.synthetic import sine_candles


def _close(values, start="2022-01-01", freq="D"):
    index = pd.date_range(start, periods=len(values), freq=freq, tz="UTC")
    return pd.Series(np.asarray(values, dtype=float), index=index)


def test_a_series_of_close_is_accepted_and_converted_to_utc():
    series = _close([1.0, 2.0, 3.0])
    series.index = series.index.tz_convert("Europe/Berlin")
    frame = as_candles(series)
    assert list(frame.columns) == ["close"]
    assert str(frame.index.tz) == "UTC"


def test_nan_is_reported_with_its_time():
    series = _close([1.0, 2.0, np.nan, 4.0])
    with pytest.raises(ValueError, match="missing or infinite value at 2022-01-03"):
        as_candles(series)


def test_unsorted_index_is_reported():
    series = _close([1.0, 2.0, 3.0]).iloc[[0, 2, 1]]
    with pytest.raises(ValueError, match="not in ascending time order: 2022-01-02.* follows"):
        as_candles(series)


def test_duplicate_index_is_reported():
    series = _close([1.0, 2.0, 3.0]).iloc[[0, 1, 1, 2]]
    with pytest.raises(ValueError, match="duplicate time 2022-01-02"):
        as_candles(series)


def test_a_hole_is_accepted_but_a_candle_off_the_grid_is_reported():
    holed = _close([1.0, 2.0, 3.0, 4.0, 5.0]).drop(pd.Timestamp("2022-01-03", tz="UTC"))
    assert len(as_candles(holed)) == 4
    shifted = _close([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).rename(
        lambda t: t + pd.Timedelta(hours=12) if t.day == 3 else t
    )
    with pytest.raises(ValueError, match="not on a regular grid: 2022-01-02.*1 days 12:00"):
        as_candles(shifted)


def test_non_positive_price_is_reported():
    with pytest.raises(ValueError, match="non-positive price 0.0 at 2022-01-02"):
        as_candles(_close([1.0, 0.0, 3.0]))


def test_naive_index_is_reported():
    series = pd.Series([1.0, 2.0], index=pd.date_range("2022-01-01", periods=2))
    with pytest.raises(ValueError, match="tz-aware"):
        as_candles(series)


def test_missing_feature_column_is_reported():
    config = ForecasterConfig(horizon=1, features=("close", "range"))
    with pytest.raises(ValueError, match=r"lack the column\(s\) \['high', 'low'\]"):
        LSTMForecaster(config).fit(_close(np.linspace(1, 2, 50)))


def test_non_final_candles_are_refused():
    candles = sine_candles(30)
    candles.loc[candles.index[-1], "is_final"] = False
    with pytest.raises(ValueError, match="non-final candle at 2021-01-30"):
        as_candles(candles)


def test_series_shorter_than_window_plus_horizon_cannot_be_fitted():
    config = ForecasterConfig(window=7, horizon=3)
    with pytest.raises(ValueError, match="too short: 9 candles.*needs at least 10"):
        LSTMForecaster(config).fit(_close(np.linspace(1, 2, 9)))


def test_series_too_short_to_hold_out_validation_windows_cannot_be_fitted():
    config = ForecasterConfig(window=7, horizon=3)
    with pytest.raises(ValueError, match="too short: 2 windows"):
        LSTMForecaster(config).fit(_close(np.linspace(1, 2, 11)))


def test_baseline_validates_the_same_way():
    with pytest.raises(ValueError, match="missing or infinite"):
        NaiveForecaster(horizon=1).fit(_close([1.0, np.inf, 2.0]))
    with pytest.raises(TypeError, match="DataFrame or a Series"):
        NaiveForecaster(horizon=1).fit([1.0, 2.0])  # type: ignore[arg-type]
