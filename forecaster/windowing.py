"""Per-candle feature columns, vectorised sliding windows over them, and the windows that
fit between holes.

>>> import numpy as np
>>> sliding(np.arange(5.0)[:, None], 3)[:, :, 0].tolist()
[[0.0, 1.0, 2.0], [1.0, 2.0, 3.0], [2.0, 3.0, 4.0]]
>>> index = pd.date_range("2024-01-01", periods=6, freq="D", tz="UTC").delete(3)
>>> block_starts(index, pd.Timedelta("1D"), 2).tolist()   # no block spans 01-03 -> 01-05
[0, 1, 3]
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

FEATURE_COLUMNS = {"close": ("close",), "range": ("high", "low"), "volume": ("volume_base",)}


def required_columns(features: tuple[str, ...]) -> list[str]:
    """The candle columns that ``features`` read."""
    return [column for feature in features for column in FEATURE_COLUMNS[feature]]


def feature_matrix(candles: pd.DataFrame, features: tuple[str, ...], target: str) -> np.ndarray:
    """Raw per-candle features ``(time, feature)``; column 0 is the close.

    The close is log(close) for ``target="logreturn"`` and the price for ``"level"``;
    ``range`` is log(high / low); ``volume`` is log(1 + volume_base).
    """
    close = candles["close"].to_numpy()
    columns = [np.log(close) if target == "logreturn" else close]
    for feature in features[1:]:
        if feature == "range":
            high, low = candles["high"].to_numpy(), candles["low"].to_numpy()
            bad = high < low
            if bad.any():
                raise ValueError(
                    f"candles have high < low at {candles.index[int(np.argmax(bad))]}; "
                    "fix the candle or drop the 'range' feature"
                )
            columns.append(np.log(high / low))
        elif feature == "volume":
            columns.append(np.log1p(candles["volume_base"].to_numpy()))
    return np.stack(columns, axis=1)  # (time, feature)


def sliding(values: np.ndarray, length: int) -> np.ndarray:
    """All windows of ``length`` consecutive rows: ``(time, f) -> (n, length, f)``."""
    return np.moveaxis(sliding_window_view(values, length, axis=0), -1, 1)


def split_counts(n_windows: int, validation_fraction: float, horizon: int) -> tuple[int, int]:
    """``(n_train, n_validation)`` of a time-ordered split.

    The ``horizon - 1`` windows just before the validation part are dropped from training,
    so that no training target is also a validation target.
    """
    n_validation = max(1, int(round(n_windows * validation_fraction)))
    n_train = n_windows - n_validation - (horizon - 1)
    if n_train < 1:
        raise ValueError(
            f"candles are too short: {n_windows} windows leave no training window after a "
            f"validation part of {n_validation} and a gap of {horizon - 1}; pass a longer history"
        )
    return n_train, n_validation


def block_starts(index: pd.DatetimeIndex, period: pd.Timedelta, length: int) -> np.ndarray:
    """Positions ``i`` where rows ``i .. i + length - 1`` are ``length`` consecutive periods.

    A block (a window and its targets) never spans a hole: it lies inside one contiguous
    stretch of candles. ``index`` is ascending and on the period's grid.
    """
    times = index.as_unit("ns").asi8
    if len(times) < length:
        return np.zeros(0, dtype="int64")
    span = times[length - 1 :] - times[: len(times) - length + 1]
    return np.flatnonzero(span == (length - 1) * period.value)


def min_windows(validation_fraction: float, horizon: int) -> int:
    """The fewest windows `split_counts` accepts (one training window at least)."""
    n = 1
    while True:
        try:
            split_counts(n, validation_fraction, horizon)
            return n
        except ValueError:
            n += 1


def training_split(
    starts: np.ndarray, window: int, horizon: int, validation_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Block starts ``(train, validation)``: the newest blocks validate.

    A training block ends (its last target) at or before the first validation block's last
    input candle, so no training target is a validation target, holes or not.
    """
    _, n_validation = split_counts(len(starts), validation_fraction, horizon)
    validation = starts[-n_validation:]
    train = starts[starts + horizon <= validation[0]]
    return train, validation
