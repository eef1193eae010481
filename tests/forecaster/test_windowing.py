"""Sliding windows, the time-ordered split and the target transforms."""

from __future__ import annotations

import numpy as np
import pytest

from forecaster.transforms import WindowTransform
from forecaster.windowing import feature_matrix, sliding, split_counts
from tests.forecaster.synthetic import sine_candles


def test_sliding_windows_are_consecutive_rows_in_order():
    values = np.arange(20.0).reshape(10, 2)  # (time, feature)
    windows = sliding(values, 4)
    assert windows.shape == (7, 4, 2)
    for i in range(7):
        np.testing.assert_array_equal(windows[i], values[i : i + 4])


def test_split_is_time_ordered_and_drops_the_overlapping_training_windows():
    assert split_counts(100, 0.2, horizon=1) == (80, 20)
    assert split_counts(100, 0.2, horizon=7) == (74, 20)
    with pytest.raises(ValueError, match="too short"):
        split_counts(3, 0.2, horizon=3)


@pytest.mark.parametrize("target", ["logreturn", "level"])
def test_targets_map_back_to_the_future_closes(target):
    candles = sine_candles(60)
    features = ("close", "range", "volume")
    raw = feature_matrix(candles, features, target)
    blocks = sliding(raw, 7 + 3)  # (n, window + horizon, feature)
    transform = WindowTransform.fit(blocks, 7, target, features)
    scaled = transform.targets(blocks, 7).astype("float64")
    future = np.stack([candles["close"].to_numpy()[i + 7 : i + 10] for i in range(len(blocks))])
    np.testing.assert_allclose(transform.to_price(scaled, blocks[:, :7]), future, rtol=1e-5)
    np.testing.assert_allclose(
        transform.last_close(blocks[:, :7]), candles["close"].to_numpy()[6 : 6 + len(blocks)]
    )


def test_logreturn_inputs_are_scale_free():
    candles = sine_candles(60)
    raw = feature_matrix(candles, ("close",), "logreturn")
    blocks = sliding(raw, 8)
    transform = WindowTransform.fit(blocks, 7, "logreturn", ("close",))
    bigger = feature_matrix(candles.assign(close=candles["close"] * 1000), ("close",), "logreturn")
    np.testing.assert_allclose(
        transform.inputs(sliding(bigger, 7)), transform.inputs(sliding(raw, 7)), atol=1e-5
    )
    # targets are scaled by their RMS, not centred: zero output is the naive forecast
    assert transform.target_mean.tolist() == [0.0]
    np.testing.assert_allclose(
        transform.to_price(np.zeros((len(blocks), 1)), blocks[:, :7])[:, 0],
        transform.last_close(blocks[:, :7]),
    )


def test_transform_state_round_trips():
    candles = sine_candles(60)
    raw = feature_matrix(candles, ("close", "volume"), "logreturn")
    transform = WindowTransform.fit(sliding(raw, 10), 7, "logreturn", ("close", "volume"))
    again = WindowTransform.from_state(transform.to_state())
    np.testing.assert_array_equal(again.inputs(sliding(raw, 7)), transform.inputs(sliding(raw, 7)))
