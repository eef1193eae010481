"""The final candles a run works on: a series' own, or each member's of a model scope."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from db.candles import UnknownSeriesError, load_candles
from db.engine import get_engine
from db.registry import ModelScope
from flows.retry import DB_RETRY


def as_utc(as_of: datetime | None) -> datetime | None:
    """``as_of`` as a tz-aware UTC datetime; a naive one (``--param as_of=2024-06-30``) is UTC."""
    if as_of is None:
        return None
    stamp = pd.Timestamp(as_of)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


@task(cache_policy=NO_CACHE, **DB_RETRY)
def final_candles(series: str, as_of: datetime | None) -> pd.DataFrame:
    """The final candles of ``series`` up to ``as_of`` (all when None)."""
    candles = load_candles(get_engine(), series, until=as_utc(as_of))
    if candles.empty:
        until = "" if as_of is None else f" up to {as_of:%Y-%m-%d %H:%M}"
        raise ValueError(f"{series} has no final candle{until}: ingest the series first")
    return candles


@task(cache_policy=NO_CACHE, **DB_RETRY)
def scope_candles(
    scope: ModelScope,
    as_of: datetime | None,
    loaded: dict[str, pd.DataFrame] | None = None,
    logger: Any = None,
) -> dict[str, pd.DataFrame]:
    """Each member's final candles up to ``as_of`` (all when None), in key order; ``loaded``:
    members' candles read already.

    A member never ingested (its ingest failed: a 404, an unreadable file) or without a final
    candle is left out and named in the log (``logger``, by default the run's); when none is
    left the error says to ingest: a series' own model is trained on its candles or fails.
    """
    until = "" if as_of is None else f" up to {as_of:%Y-%m-%d %H:%M}"
    frames, absent = dict(loaded or {}), {}
    for key in scope.members:
        if key not in frames:
            try:
                frames[key] = load_candles(get_engine(), key, until=as_utc(as_of))
            except UnknownSeriesError as error:
                absent[key] = error
                continue
        if frames[key].empty:
            absent[key] = ValueError(f"{key} has no final candle{until}: ingest the series first")
    if len(absent) == len(scope.members) == 1:
        raise next(iter(absent.values()))
    if len(absent) == len(scope.members):
        raise ValueError(f"no series of the {scope.label} has a final candle{until}: ingest")
    if absent:
        (logger or get_run_logger()).warning(
            "%s: %s have no final candle%s (never ingested, or none yet): left out of its "
            "training (ingest them)",
            scope.label,
            ", ".join(absent),
            until,
        )
    return {key: frames[key] for key in scope.members if key not in absent}
