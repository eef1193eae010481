"""Store and read candles: one-transaction upserts, fast loads, a per-series summary.

For example::

    with Session(engine) as session, session.begin():
        counts = upsert_candles(session, SeriesKey.of("Bitstamp_BTCUSD_d"), candles)
    counts  # -> UpsertCounts(inserted=3954, updated=0, unchanged=0, revised=0)
    load_candles(engine, "Bitstamp_BTCUSD_d", until=pd.Timestamp("2024-06-30", tz="UTC"))
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from cdd.series_key import TIMEFRAMES, SeriesKey
from db.candle_frames import SeriesBusyError, UpsertCounts, checked_frame
from db.candles_postgresql import load_postgresql, upsert_postgresql
from db.candles_sqlite import load_sqlite, upsert_sqlite
from db.models import Candle, Series
from db.revisions import RevisionLimits

__all__ = [
    "SeriesBusyError",
    "SeriesSummary",
    "UnknownSeriesError",
    "UpsertCounts",
    "load_candles",
    "series_summary",
    "upsert_candles",
]


@dataclass(frozen=True)
class SeriesSummary:
    """What the database holds of one series; ``gaps`` counts missing periods inside first..last."""

    key: str
    exchange: str
    pair: str
    timeframe: str
    first: dt.datetime | None
    last: dt.datetime | None
    count: int
    gaps: int


class UnknownSeriesError(LookupError):
    """The series has never been ingested into this database."""


def upsert_candles(
    session: Session,
    key: SeriesKey | str,
    candles: pd.DataFrame,
    *,
    ingest_run_id: int | None = None,
    limits: RevisionLimits | None = None,
) -> UpsertCounts:
    """Insert new candles and update changed ones of ``key`` inside the session's transaction.

    Creates the ``series`` row when missing. Rows whose values are identical are not written
    (``updated_at`` stays); a final candle is never replaced by a partial one. Each change to a
    stored final candle is a revision: written to ``candle_revisions`` (pointing at
    ``ingest_run_id``) and counted; with ``limits`` (db.revisions.RevisionLimits) a frame that
    revises more or older final candles raises RevisionsRefusedError before anything is written.
    When the frame's newest candle is older than the newest stored one (an old download), that
    candle is taken as partial: it was still open when the file was made.

    Concurrent upserts of one series are serialised (an advisory lock on PostgreSQL, the write
    lock on SQLite), so they neither fail nor interleave; on SQLite a wait longer than the busy
    timeout raises SeriesBusyError.
    """
    key = SeriesKey.of(key)
    frame = checked_frame(candles, key)
    now = dt.datetime.now(dt.UTC)
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return upsert_postgresql(session, key, frame, now, ingest_run_id, limits)
    if dialect == "sqlite":
        return upsert_sqlite(session, key, frame, now, ingest_run_id, limits)
    raise ValueError(
        f"unsupported database {dialect!r}: cdd-forecast stores candles in SQLite or PostgreSQL"
    )


def load_candles(
    engine: Engine,
    series: str | SeriesKey,
    *,
    until: pd.Timestamp | dt.datetime | str | None = None,
    final_only: bool = True,
) -> pd.DataFrame:
    """The stored candles of ``series`` up to ``until`` (inclusive, tz-aware), oldest first.

    Raises UnknownSeriesError when the series was never ingested.
    """
    key = str(series)
    limit = None
    if until is not None:
        limit = pd.Timestamp(until)
        if limit.tzinfo is None:
            raise ValueError(f"until={until!r} for {key} is naive: pass a tz-aware (UTC) time")
        limit = limit.tz_convert("UTC")
    with engine.connect() as connection:
        found = connection.execute(select(Series.id).where(Series.key == key)).scalar_one_or_none()
        if found is None:
            raise UnknownSeriesError(
                f"series {key} has no candles in this database: ingest it first "
                f"(cdd-forecast ingest --series {key})"
            )
        dialect = engine.dialect.name
        if dialect == "postgresql":
            period = SeriesKey.of(series).period  # a SeriesKey handed in: not parsed again
            return load_postgresql(connection, found, period, limit, final_only)
        if dialect == "sqlite":
            return load_sqlite(connection, found, limit, final_only)
    raise ValueError(f"unsupported database {dialect!r}: cdd-forecast reads SQLite or PostgreSQL")


def series_summary(engine: Engine) -> list[SeriesSummary]:
    """Every stored series with its first and last candle, candle count and missing periods."""
    first, last, count = func.min(Candle.time), func.max(Candle.time), func.count(Candle.time)
    statement = (
        select(Series.key, Series.exchange, Series.pair, Series.timeframe, first, last, count)
        .outerjoin(Candle, Candle.series_id == Series.id)
        .group_by(Series.id, Series.key, Series.exchange, Series.pair, Series.timeframe)
        .order_by(Series.key)
    )
    with engine.connect() as connection:
        rows = connection.execute(statement).all()
    summaries = []
    for key, exchange, pair, timeframe, start, end, n in rows:
        gaps = 0
        if start is not None and end is not None:
            periods = (pd.Timestamp(end) - pd.Timestamp(start)) // TIMEFRAMES[timeframe]
            gaps = max(0, int(periods) + 1 - n)
        summaries.append(SeriesSummary(key, exchange, pair, timeframe, start, end, n, gaps))
    return summaries
