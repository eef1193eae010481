"""Store and read candles: one-transaction upserts, fast loads, a per-series summary.

>>> with Session(engine) as session, session.begin():
...     counts = upsert_candles(session, SeriesKey.parse("Bitstamp_BTCUSD_d"), candles)
>>> counts
UpsertCounts(inserted=3954, updated=0, unchanged=0)
>>> load_candles(engine, "Bitstamp_BTCUSD_d", until=pd.Timestamp("2024-06-30", tz="UTC"))
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from db.models import Candle, Series
from db.series_key import TIMEFRAMES, SeriesKey

FLOAT_COLUMNS = ("open", "high", "low", "close", "volume_base", "volume_quote")
VALUE_COLUMNS = (*FLOAT_COLUMNS, "is_final")


class UpsertCounts(NamedTuple):
    inserted: int
    updated: int
    unchanged: int


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


class SeriesBusyError(RuntimeError):
    """Another writer held the database longer than the busy timeout (SQLite only)."""


def upsert_candles(session: Session, key: SeriesKey | str, candles: pd.DataFrame) -> UpsertCounts:
    """Insert new candles and update changed ones of ``key`` inside the session's transaction.

    Creates the ``series`` row when missing. Rows whose values are identical are not written
    (``updated_at`` stays); a final candle is never replaced by a partial one. Concurrent
    upserts of one series are serialised (an advisory lock on PostgreSQL, the write lock on
    SQLite), so they neither fail nor interleave; on SQLite a wait longer than the busy timeout
    raises SeriesBusyError.
    """
    key = key if isinstance(key, SeriesKey) else SeriesKey.parse(key)
    frame = checked_frame(candles, key)
    now = dt.datetime.now(dt.UTC)
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from db.candles_postgresql import upsert_postgresql

        return upsert_postgresql(session, key, frame, now)
    if dialect == "sqlite":
        from db.candles_sqlite import upsert_sqlite

        return upsert_sqlite(session, key, frame, now)
    raise ValueError(
        f"unsupported database {dialect!r}: cdd-forecast stores candles in SQLite or PostgreSQL"
    )


def series_id(session: Session, key: SeriesKey) -> int:
    """The id of ``key``'s series row, inserting the row when missing (safe under concurrency)."""
    session.execute(
        text(
            "INSERT INTO series (key, exchange, pair, timeframe) "
            "VALUES (:key, :exchange, :pair, :timeframe) ON CONFLICT (key) DO NOTHING"
        ),
        {"key": key.key, "exchange": key.exchange, "pair": key.pair, "timeframe": key.timeframe},
    )
    return session.execute(select(Series.id).where(Series.key == key.key)).scalar_one()


def checked_frame(candles: pd.DataFrame, key: SeriesKey | str) -> pd.DataFrame:
    """``candles`` as a valid candles frame (UTC, ascending), or a ValueError naming the problem."""
    where = f"candles of {key}"
    if not isinstance(candles, pd.DataFrame):
        raise ValueError(f"{where}: expected a pandas DataFrame, got {type(candles).__name__}")
    index = candles.index
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise ValueError(
            f"{where}: the index must be a tz-aware UTC DatetimeIndex of candle open times "
            f"(got {type(index).__name__} of dtype {index.dtype})"
        )
    missing = [name for name in VALUE_COLUMNS if name not in candles.columns]
    if missing:
        raise ValueError(f"{where}: missing columns {', '.join(missing)}")
    if index.hasnans:
        raise ValueError(f"{where}: the time index has missing values")
    if not index.is_unique:
        duplicate = index[index.duplicated()][0]
        raise ValueError(f"{where}: duplicate candle time {duplicate.isoformat()}")
    frame = candles.loc[:, list(VALUE_COLUMNS)]
    frame.index = index.tz_convert("UTC").rename("time")
    if not frame.index.is_monotonic_increasing:
        frame = frame.sort_index()
    for name in VALUE_COLUMNS:
        column = frame[name]
        if name == "is_final":
            bad = column.isna().to_numpy()
        else:
            values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
            bad = ~np.isfinite(values)
        if bad.any():
            first = frame.index[bad.argmax()].isoformat()
            raise ValueError(f"{where}: {name} is missing or not a finite number at {first}")
    return frame.astype({name: np.float64 for name in FLOAT_COLUMNS} | {"is_final": bool})


def unix_micros(index: pd.DatetimeIndex) -> np.ndarray:
    """int64 microseconds since 1970 of a tz-aware index."""
    return index.as_unit("us").asi8


def frame_from_columns(micros: np.ndarray, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """A candles frame from unix microseconds and the value columns, sorted by time."""
    order = np.argsort(micros, kind="stable")
    index = pd.DatetimeIndex(micros[order].astype("datetime64[us]"), name="time")
    data = {name: np.asarray(columns[name], dtype=np.float64)[order] for name in FLOAT_COLUMNS}
    data["is_final"] = np.asarray(columns["is_final"], dtype=bool)[order]
    return pd.DataFrame(data, index=index.tz_localize("UTC"))


def find_changes(
    frame: pd.DataFrame, stored_micros: np.ndarray, stored: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Masks over the rows of ``frame``: ``(new, changed)`` against the stored candles.

    ``stored`` holds the value columns of the stored rows at ``stored_micros`` (any order).
    A row is changed when any value differs, except that a final candle is never replaced by a
    partial one.
    """
    new = np.ones(len(frame), dtype=bool)
    changed = np.zeros(len(frame), dtype=bool)
    if len(stored_micros) == 0:
        return new, changed
    position = pd.Index(stored_micros).get_indexer(unix_micros(frame.index))
    present = position >= 0
    new = ~present
    at = position[present]
    old_final = np.asarray(stored["is_final"], dtype=bool)[at]
    new_final = frame["is_final"].to_numpy(dtype=bool)[present]
    differs = old_final != new_final
    for name in FLOAT_COLUMNS:
        differs |= np.asarray(stored[name])[at] != frame[name].to_numpy()[present]
    changed[present] = differs & (new_final | ~old_final)
    return new, changed


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
            from db.candles_postgresql import load_postgresql

            period = SeriesKey.parse(key).period
            return load_postgresql(connection, found, period, limit, final_only)
        if dialect == "sqlite":
            from db.candles_sqlite import load_sqlite

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
