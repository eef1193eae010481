"""The plan of a backfill: its parameters checked, its as_of times, retrain blocks and segments.

Pure (no Prefect, no database), so that bad parameters fail before any work.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from db.series_key import SeriesKey
from forecaster import ForecasterConfig
from forecaster.validation import as_candles
from forecaster.windowing import split_counts


class BackfillError(ValueError):
    """Parameters a backfill cannot run with; raised before any model is trained."""


@dataclass(frozen=True)
class Segment:
    """Consecutive pending as_of times inside one retrain block."""

    as_ofs: tuple[pd.Timestamp, ...]
    block_start: bool  # its first as_of opens a block: retrain there

    def __str__(self) -> str:
        first, last = (f"{t:%Y-%m-%d %H:%M}" for t in (self.as_ofs[0], self.as_ofs[-1]))
        return first if first == last else f"{first}..{last}"


@dataclass(frozen=True)
class BackfillPlan:
    """Every as_of of the backfill, in retrain blocks, and the candles it may use."""

    series: str
    as_ofs: pd.DatetimeIndex
    retrain_every: int
    candles: pd.DataFrame = field(repr=False)  # final candles up to the last as_of

    def previous(self, as_of: pd.Timestamp) -> pd.Timestamp:
        """The time of the final candle just before ``as_of``."""
        return self.candles.index[self.candles.index.get_loc(as_of) - 1]

    def segments(self, pending: Iterable[pd.Timestamp]) -> list[Segment]:
        """The pending as_ofs cut at block boundaries and at done dates."""
        todo = set(pending)
        segments: list[Segment] = []
        current: list[pd.Timestamp] = []
        for position, as_of in enumerate(self.as_ofs):
            opens_block = position % self.retrain_every == 0
            if current and (opens_block or as_of not in todo):
                segments.append(Segment(tuple(current), _opens_block(self, current[0])))
                current = []
            if as_of in todo:
                current.append(as_of)
        if current:
            segments.append(Segment(tuple(current), _opens_block(self, current[0])))
        return segments


def _opens_block(plan: BackfillPlan, as_of: pd.Timestamp) -> bool:
    return plan.as_ofs.get_loc(as_of) % plan.retrain_every == 0


def minimum_history(config: ForecasterConfig) -> int:
    """The fewest candles a model of ``config`` can be fitted on."""
    n = config.window + config.horizon
    while True:
        try:
            split_counts(
                n - config.window - config.horizon + 1, config.validation_fraction, config.horizon
            )
            return n
        except ValueError:
            n += 1


def check_parameters(
    series: str, start: dt.date, end: dt.date, retrain_every: int, parallel: int
) -> str:
    """The series key, once the parameters that need no data are valid."""
    try:
        key = SeriesKey.parse(series).key
    except ValueError as error:
        raise BackfillError(f"unknown series: {error}") from None
    for name, value in (("retrain_every", retrain_every), ("parallel", parallel)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BackfillError(f"{name} must be an integer >= 1, got {value!r}")
    if end < start:
        raise BackfillError(f"backfill of {key}: end {end} is before start {start}")
    return key


def plan_backfill(
    candles: pd.DataFrame,
    series: str,
    start: dt.date,
    end: dt.date,
    retrain_every: int,
    config: ForecasterConfig,
) -> BackfillPlan:
    """Check the parameters against the stored final candles; BackfillError says what's wrong."""
    if isinstance(retrain_every, bool) or not isinstance(retrain_every, int) or retrain_every < 1:
        raise BackfillError(f"retrain_every must be an integer >= 1, got {retrain_every!r}")
    if end < start:
        raise BackfillError(f"backfill of {series}: end {end} is before start {start}")
    if candles.empty:
        raise BackfillError(
            f"{series} has no final candle yet: ingest it first "
            f"(cdd-forecast ingest --series {series})"
        )
    first, last = candles.index[0], candles.index[-1]
    need = minimum_history(config)
    earliest = candles.index[need - 1] if len(candles) >= need else None
    span = f"its final candles cover {first:%Y-%m-%d} .. {last:%Y-%m-%d}"
    if earliest is None:
        raise BackfillError(
            f"{series} has {len(candles)} final candles; training needs {need} "
            f"({span}): ingest more history first"
        )
    if end > last.date():
        raise BackfillError(
            f"backfill of {series}: end {end} is after the last final candle "
            f"({span}); pass end={last.date()} or earlier"
        )
    if start < earliest.date():
        raise BackfillError(
            f"backfill of {series}: start {start} leaves too little history to train on: the "
            f"model needs {need} candles, so the first possible as_of is {earliest:%Y-%m-%d} "
            f"({span})"
        )
    dates = candles.index.date
    as_ofs = candles.index[(dates >= start) & (dates <= end) & (candles.index >= earliest)]
    if len(as_ofs) == 0:
        raise BackfillError(
            f"backfill of {series}: no final candle between {start} and {end} ({span})"
        )
    visible = candles.loc[: as_ofs[-1]]
    try:
        as_candles(visible[["close"]])
    except ValueError as error:
        raise BackfillError(
            f"backfill of {series}: the stored candles up to "
            f"{as_ofs[-1]:%Y-%m-%d} cannot be trained on: {error}"
        ) from error
    return BackfillPlan(series, as_ofs, retrain_every, visible)
