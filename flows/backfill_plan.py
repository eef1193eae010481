"""The plan of a backfill: its parameters checked, its as_of times, retrain blocks and segments.

Pure (no Prefect, no database), so that bad parameters fail before any work. Holes in the
series are planned around: a time inside a hole has no candle, so it is no as_of, and an
as_of whose window misses more candles than a forecast may fill (``forecaster.holes``) is
skipped too; ``BackfillPlan.skipped`` lists both with the reason. A series of a global model
(``members``: its group's final candles) can be forecast from the first as_of at which one
member can be fitted on and its own window is complete, as the daily forecasts a new series.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import pandas as pd

from cdd.series_key import SeriesKey
from db.registry import ModelScope
from flows.train_policy import retrain_day_between
from forecaster import ForecasterConfig, find_holes, first_trainable
from forecaster.backtest import up_to
from forecaster.holes import window_problem
from forecaster.validation import as_candles, infer_period


class BackfillError(ValueError):
    """Parameters a backfill cannot run with; raised before any model is trained."""


@dataclass(frozen=True)
class Skip:
    """Times of a backfill's range that get no forecast (``when``: a time or a span), and why."""

    when: str
    reason: str

    def __str__(self) -> str:
        return f"{self.when}: {self.reason}"


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
    skipped: tuple[Skip, ...] = ()  # times of the range that get no forecast, and why
    group: str | None = None  # the timeframe of the global model it walks forward with
    # a global model's group: each member's final candles up to the last as_of (the series too)
    members: Mapping[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    # False: one block (a retrain at the first as_of, fine-tunes after), as a first run's
    # warm-up walks (flows.warmup)
    retrain_days: bool = True

    @property
    def scope(self) -> ModelScope:
        """The model it walks forward with: the series' own, or its group's global one."""
        if self.group is None:
            return ModelScope.of_series(self.series)
        return ModelScope.of_group(self.group, list(self.members))

    def visible(self, as_of: pd.Timestamp) -> dict[str, pd.DataFrame]:
        """What the model of ``as_of`` sees: each member's final candles up to it."""
        return up_to(self.members or {self.series: self.candles}, as_of)

    def previous(self, as_of: pd.Timestamp) -> pd.Timestamp:
        """The time of the final candle just before ``as_of``."""
        return self.candles.index[self.candles.index.get_loc(as_of) - 1]

    @cached_property
    def block_starts(self) -> frozenset[pd.Timestamp]:
        """The as_ofs its model retrains at: the first, and each one that a retrain day of its
        scope (`flows.train_policy`, every ``retrain_every`` candles) passed since the as_of
        before it, as the daily run's auto policy retrains: a backfill serves what the daily
        runs would have, whatever day it starts on. Without ``retrain_days``: the first only."""
        name, period = self.scope.name, SeriesKey.of(self.series).period.to_pytimedelta()
        if not self.retrain_days:
            return frozenset(self.as_ofs[:1])
        every, pairs = self.retrain_every, zip(self.as_ofs[:-1], self.as_ofs[1:], strict=True)
        passed = [now for last, now in pairs if retrain_day_between(name, every, period, last, now)]
        return frozenset([*self.as_ofs[:1], *passed])

    def trimmed(self, first: pd.Timestamp) -> BackfillPlan:
        """The plan without its as_ofs before ``first`` (a range of times, not of dates)."""
        return replace(self, as_ofs=self.as_ofs[self.as_ofs >= first])

    def segments(self, pending: Iterable[pd.Timestamp]) -> list[Segment]:
        """The pending as_ofs cut at block starts and at done dates."""
        todo = set(pending)
        segments: list[Segment] = []
        current: list[pd.Timestamp] = []
        for as_of in self.as_ofs:
            if current and (as_of in self.block_starts or as_of not in todo):
                segments.append(Segment(tuple(current), current[0] in self.block_starts))
                current = []
            if as_of in todo:
                current.append(as_of)
        if current:
            segments.append(Segment(tuple(current), current[0] in self.block_starts))
        return segments


def minimum_history(config: ForecasterConfig) -> int:
    """The fewest candles a model of ``config`` can be fitted on (with no hole among them)."""
    return config.min_history


def skipped_times(
    candles: pd.DataFrame, start: dt.date, end: dt.date, config: ForecasterConfig
) -> tuple[list[pd.Timestamp], list[Skip]]:
    """The candle times of [start, end] that can be forecast, and what is skipped, and why."""
    index = candles.index
    period = infer_period(index)
    skipped = [
        Skip(str(hole), "inside a hole: the series has no candle there to forecast from")
        for hole in find_holes(index, period)
        if hole.first.date() <= end and hole.last.date() >= start
    ]
    positions = np.flatnonzero((index.date >= start) & (index.date <= end))
    as_ofs = []
    for position in positions:
        as_of = index[position]
        problem = window_problem(index[: position + 1], period, config.window, config.max_filled)
        if problem is None:
            as_ofs.append(as_of)
        else:
            skipped.append(Skip(f"{as_of:%Y-%m-%d %H:%M}", problem))
    return as_ofs, skipped


def check_parameters(
    series: str, start: dt.date, end: dt.date, retrain_every: int | None, parallel: int | None
) -> str:
    """The series key, once the parameters that need no data are valid."""
    try:
        key = SeriesKey.of(series).key
    except ValueError as error:
        raise BackfillError(f"unknown series: {error}") from None
    for name, value in (("retrain_every", retrain_every), ("parallel", parallel)):
        if value is None:  # the series' retrain_after, CDDF_BACKFILL_PROCESSES decide
            continue
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
    members: Mapping[str, pd.DataFrame] | None = None,
    retrain_days: bool = True,
) -> BackfillPlan:
    """Check the parameters against the stored final candles; BackfillError says what's wrong.

    ``members``: the final candles of every series of the global model that ``series`` is in
    (its timeframe's group, ``series`` included); None for a model of its own.
    ``retrain_days``: False retrains at the first as_of only (`BackfillPlan.block_starts`).
    """
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
    span = f"its final candles cover {first:%Y-%m-%d} .. {last:%Y-%m-%d}"
    try:
        as_candles(candles.loc[candles.index.date <= end, ["close"]])
    except ValueError as error:
        raise BackfillError(
            f"backfill of {series}: the stored candles up to {end} cannot be trained on: {error}"
        ) from error
    earliest, trains = _first_as_of(candles, series, config, members)
    needs = f"{config.min_windows} windows of {config.window + config.horizon} consecutive candles"
    if earliest is None:
        raise BackfillError(
            f"{series} has {len(candles)} final candles; {trains} {needs} (at least "
            f"{config.min_history} candles without a hole) ({span}): ingest more history first"
        )
    if end > last.date():
        raise BackfillError(
            f"backfill of {series}: end {end} is after the last final candle "
            f"({span}); pass end={last.date()} or earlier"
        )
    if start < earliest.date():
        raise BackfillError(
            f"backfill of {series}: start {start} leaves too little history to train on: "
            f"{trains} {needs}, so the first possible as_of is {earliest:%Y-%m-%d %H:%M} ({span})"
        )
    possible, skipped = skipped_times(candles, start, end, config)
    as_ofs = pd.DatetimeIndex([t for t in possible if t >= earliest])
    if len(as_ofs) == 0:
        reasons = "; ".join(str(skip) for skip in skipped[:3])
        raise BackfillError(
            f"backfill of {series}: no final candle between {start} and {end} can be "
            f"forecast ({span}){': ' + reasons if reasons else ''}"
        )
    visible = candles.loc[: as_ofs[-1]]
    plan = BackfillPlan(series, as_ofs, retrain_every, visible, tuple(skipped))
    if members is not None:
        seen = {key: frame.loc[: as_ofs[-1]] for key, frame in members.items()}
        plan = replace(plan, group=SeriesKey.of(series).timeframe, members=seen)
    return replace(plan, retrain_days=retrain_days)


def _first_as_of(
    candles: pd.DataFrame,
    series: str,
    config: ForecasterConfig,
    members: Mapping[str, pd.DataFrame] | None,
) -> tuple[pd.Timestamp | None, str]:
    """The first as_of a fit works at (None: none yet), and who needs what to train."""
    if members is None:
        return first_trainable(candles.index, config), "the model needs"
    if len(candles) < 2:  # no period to plan with; a forecast needs a window anyway
        return None, f"a forecast of it needs {config.window} candles and training needs"
    group = SeriesKey.of(series).timeframe
    fittable = (first_trainable(frame.index, config) for frame in members.values())
    return min((time for time in fittable if time is not None), default=None), (
        f"the global {group} model needs one series of {', '.join(members)} with"
    )
