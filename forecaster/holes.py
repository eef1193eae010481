"""Holes: candle times missing from a series (an exchange's maintenance skips a few hours).

Training uses every contiguous stretch (`windowing.block_starts`: a window and its targets
never span a hole). A forecast at ``as_of`` reads the ``window`` calendar periods up to it;
when some are missing, at most `max_filled` of them (a quarter of the window, at least one)
are filled by carrying the last close forward with zero volume — a flat, quiet candle, the
naive guess of what happened — and the forecast says how many it filled. More than that
would make the forecast rest on invented candles: a `HoleError` names the holes, and the
first as_of that can be forecast again is ``window`` candles after the hole.

>>> index = pd.DatetimeIndex(["2021-04-25 03:00", "2021-04-25 04:00", "2021-04-25 08:00"],
...                          tz="UTC")
>>> [str(hole) for hole in find_holes(index, pd.Timedelta("1h"))]
['2021-04-25 05:00 .. 2021-04-25 07:00 (3 candles missing)']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from forecaster.validation import infer_period
from forecaster.windowing import block_starts

if TYPE_CHECKING:
    from forecaster.config import ForecasterConfig

VOLUME_COLUMNS = ("volume_base", "volume_quote")


class HoleError(ValueError):
    """The window before a forecast's as_of has more missing candles than may be filled."""


@dataclass(frozen=True)
class Hole:
    """Missing candle times between two candles of a series."""

    after: pd.Timestamp  # the last candle before the hole
    before: pd.Timestamp  # the first candle after it
    missing: int  # how many candle times are missing

    @property
    def first(self) -> pd.Timestamp:
        """The first missing candle time."""
        return self.after + (self.before - self.after) / (self.missing + 1)

    @property
    def last(self) -> pd.Timestamp:
        """The last missing candle time."""
        return self.before - (self.before - self.after) / (self.missing + 1)

    def __str__(self) -> str:
        span = f"{self.first:%Y-%m-%d %H:%M}"
        if self.missing > 1:
            span += f" .. {self.last:%Y-%m-%d %H:%M}"
        return f"{span} ({self.missing} candle{'s' if self.missing > 1 else ''} missing)"


def find_holes(index: pd.DatetimeIndex, period: pd.Timedelta | None) -> list[Hole]:
    """Every hole of an ascending ``index`` on the grid of ``period``, oldest first."""
    if period is None or len(index) < 2:
        return []
    steps = np.diff(index.as_unit("ns").asi8) // period.value  # periods between neighbours
    return [Hole(index[i], index[i + 1], int(steps[i]) - 1) for i in np.flatnonzero(steps > 1)]


def first_trainable(index: pd.DatetimeIndex, config: ForecasterConfig) -> pd.Timestamp | None:
    """The first candle time up to which ``index`` holds enough windows to fit (None: never).

    With no hole that is the ``config.min_history``-th candle; each hole moves it later.
    """
    period = infer_period(index)
    if period is None:
        return None
    length = config.window + config.horizon
    starts = block_starts(index, period, length)
    if len(starts) < config.min_windows:
        return None
    return index[starts[config.min_windows - 1] + length - 1]


def forecast_problem(index: pd.DatetimeIndex, config: ForecasterConfig) -> str | None:
    """Why no forecast can be made after the last candle of ``index`` (None when it can)."""
    period = infer_period(index)
    if period is None:
        return f"candles are too short: {len(index)} candle(s), a forecast needs {config.window}"
    return window_problem(index, period, config.window, config.max_filled)


def max_filled(window: int) -> int:
    """How many missing candles a forecast window of ``window`` periods may fill."""
    return max(1, window // 4)


def window_problem(
    index: pd.DatetimeIndex, period: pd.Timedelta, window: int, limit: int
) -> str | None:
    """Why no forecast can be made after the last candle of ``index`` (None when it can).

    The window is the ``window`` periods up to that candle; it may miss at most ``limit``.
    """
    if len(index) == 0:
        return "there is no candle"
    as_of = index[-1]
    start = as_of - (window - 1) * period
    if start < index[0]:
        return (
            f"candles are too short: the {window} periods up to {as_of:%Y-%m-%d %H:%M} start "
            f"at {start:%Y-%m-%d %H:%M}, before the first candle {index[0]:%Y-%m-%d %H:%M}; "
            "pass a longer history"
        )
    first = max(int(index.searchsorted(start)) - 1, 0)  # the candle a fill would carry
    missing = window - (len(index) - int(index.searchsorted(start)))
    if missing <= limit:
        return None
    holes = ", ".join(
        str(hole) for hole in find_holes(index[first:], period) if hole.before > start
    )
    return (
        f"the {window} periods up to {as_of:%Y-%m-%d %H:%M} miss {missing} candles (holes: "
        f"{holes}); at most {limit} may be filled — forecast from an as_of {window} candles "
        "after the hole, or ingest the missing candles"
    )


def fill_window(
    candles: pd.DataFrame, period: pd.Timedelta, window: int, limit: int
) -> tuple[pd.DataFrame, int]:
    """The ``window`` candles up to the last one, holes filled: ``(frame, how many filled)``.

    A missing candle repeats the last close as open, high, low and close, with zero volume.
    A HoleError when more than ``limit`` are missing, a ValueError when the history is shorter
    than the window.
    """
    problem = window_problem(candles.index, period, window, limit)
    if problem is not None and problem.startswith("candles are too short"):
        raise ValueError(problem)
    if problem is not None:
        raise HoleError(f"no forecast after {candles.index[-1]}: {problem}")
    as_of = candles.index[-1]
    grid = pd.date_range(end=as_of, periods=window, freq=period).as_unit(candles.index.unit)
    recent = candles.loc[:as_of].iloc[int(candles.index.searchsorted(grid[0], "right")) - 1 :]
    filled = recent.reindex(recent.index.union(grid)).loc[grid[0] :]
    missing = filled["close"].isna().to_numpy()
    if not missing.any():
        return filled, 0
    close = recent["close"].reindex(recent.index.union(grid)).ffill().loc[grid[0] :]
    for column in filled.columns:
        if column in VOLUME_COLUMNS:
            filled.loc[missing, column] = 0.0
        else:
            filled.loc[missing, column] = close[missing].to_numpy()
    return filled, int(missing.sum())
