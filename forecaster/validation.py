"""Checks on the candles given to a forecaster; every failure is a ValueError saying what to do.

>>> import pandas as pd
>>> index = pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC")
>>> as_candles(pd.Series([1.0, 2.0, 3.0], index=index))["close"].tolist()
[1.0, 2.0, 3.0]
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

PRICE_COLUMNS = ("open", "high", "low", "close")


def as_candles(
    candles: pd.DataFrame | pd.Series, columns: Iterable[str] = ("close",)
) -> pd.DataFrame:
    """Return ``candles`` as a float frame of ``columns`` on an ascending UTC index.

    Raises ValueError for a missing column, a naive, unsorted or duplicate index, a candle
    off the period's grid, NaN values, non-positive prices or non-final candles. Holes
    (missing candle times) are allowed.
    """
    columns = list(columns)
    if isinstance(candles, pd.Series):
        frame = candles.rename("close").to_frame()
    elif isinstance(candles, pd.DataFrame):
        frame = candles
    else:
        raise TypeError(
            f"candles must be a pandas DataFrame or a Series of close prices, "
            f"got {type(candles).__name__}"
        )
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"candles lack the column(s) {missing} (have {list(frame.columns)}); "
            "pass them or remove the features that need them from the config"
        )
    index = frame.index
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise ValueError(
            "candles must be indexed by a tz-aware DatetimeIndex (UTC candle open times); "
            "use .tz_localize('UTC') on a naive index"
        )
    if index.has_duplicates:
        first = index[index.duplicated()][0]
        raise ValueError(f"candles have a duplicate time {first}; keep one candle per time")
    if not index.is_monotonic_increasing:
        position = int(np.argmax(np.diff(index.asi8) < 0)) + 1
        raise ValueError(
            f"candles are not in ascending time order: {index[position]} follows "
            f"{index[position - 1]}; sort them with .sort_index()"
        )
    if "is_final" in frame.columns:
        final = frame["is_final"].astype(bool).to_numpy()
        if not final.all():
            raise ValueError(
                f"candles contain a non-final candle at {index[int(np.argmin(final))]}; "
                "pass final candles only"
            )
    values = frame[columns].astype("float64")
    values.index = index.tz_convert("UTC")
    for column in columns:
        array = values[column].to_numpy()
        bad = ~np.isfinite(array)
        if bad.any():
            raise ValueError(
                f"candles column {column!r} has a missing or infinite value at "
                f"{values.index[int(np.argmax(bad))]}; fill or drop that candle"
            )
        if column in PRICE_COLUMNS and (array <= 0).any():
            at = values.index[int(np.argmax(array <= 0))]
            raise ValueError(
                f"candles column {column!r} has a non-positive price {array[array <= 0][0]} "
                f"at {at}; prices must be > 0"
            )
        if column.startswith("volume") and (array < 0).any():
            at = values.index[int(np.argmax(array < 0))]
            raise ValueError(f"candles column {column!r} has a negative volume at {at}")
    infer_period(values.index)
    return values


def infer_period(index: pd.DatetimeIndex) -> pd.Timedelta | None:
    """The candle period of ``index``: its most common step (None for fewer than 2 rows).

    Holes are allowed (a step of several periods: missing candles, see `forecaster.holes`);
    a step that is not a whole number of periods is a ValueError (an extra or shifted candle).
    """
    if len(index) < 2:
        return None
    steps = np.diff(index.as_unit("ns").asi8)
    values, counts = np.unique(steps, return_counts=True)
    period = int(values[np.argmax(counts)])  # the smallest of equally common steps
    off_grid = steps % period != 0
    if off_grid.any():
        position = int(np.argmax(off_grid)) + 1
        raise ValueError(
            f"candles are not on a regular grid: {index[position - 1]} -> {index[position]} "
            f"is {pd.Timedelta(int(steps[position - 1]), unit='ns')}, not a whole number of "
            f"the candle period {pd.Timedelta(period, unit='ns')} (an extra or shifted candle); "
            "drop or fix that candle"
        )
    return pd.Timedelta(period, unit="ns")


def require_length(candles: pd.DataFrame, needed: int, purpose: str) -> None:
    """A ValueError when ``candles`` has fewer than ``needed`` rows for ``purpose``."""
    if len(candles) < needed:
        span = f" ({candles.index[0]} .. {candles.index[-1]})" if len(candles) else ""
        raise ValueError(
            f"candles are too short: {len(candles)} candles{span}, {purpose} needs at least "
            f"{needed}; pass a longer history"
        )


def cut_at(candles: pd.DataFrame | pd.Series, as_of: object) -> pd.DataFrame | pd.Series:
    """Rows up to and including ``as_of`` (a candle time), before any value is looked at.

    Only the index is checked here, so that rows after ``as_of`` can never matter.
    """
    if as_of is None or not isinstance(candles, pd.DataFrame | pd.Series):
        return candles
    index = candles.index
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        return candles  # as_candles reports the bad index
    if not index.is_monotonic_increasing:
        return candles  # as_candles reports where the order breaks
    stamp = pd.Timestamp(as_of)  # type: ignore[arg-type]
    if stamp.tz is None:
        raise ValueError(f"as_of {as_of!r} must be tz-aware (UTC)")
    if stamp not in index:
        span = f" ({index[0]} .. {index[-1]})" if len(index) else ""
        raise ValueError(
            f"as_of {stamp} is not a candle time in candles{span}; pass the time of a final candle"
        )
    return candles.loc[:stamp]


def target_times(
    as_of: pd.Timestamp, horizons: np.ndarray, period: pd.Timedelta, index: pd.DatetimeIndex
) -> pd.DatetimeIndex:
    """``as_of + h * period`` for each horizon, in the time unit of ``index``."""
    offsets = pd.to_timedelta(np.asarray(horizons, dtype="int64") * period.value, unit="ns")
    return pd.DatetimeIndex(as_of + offsets).as_unit(index.unit)
