"""The PostgreSQL side of db.candles, built on binary COPY in both directions.

An upsert holds a row lock on its series (see lock_series), so two ingests of one series
run one after the other. Under that lock it reads the stored candles of the frame's time range
(as aggregated binary records, see db.pg_binary), compares them in numpy, then writes only what
differs: new candles by binary COPY straight into ``candles``, changed ones by COPY into a
temporary table and one ``INSERT ... ON CONFLICT DO UPDATE``. An unchanged re-ingest therefore
writes nothing.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql
from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from cdd.series_key import SeriesKey
from db.candle_frames import (
    FLOAT_COLUMNS,
    VALUE_COLUMNS,
    SeriesBusyError,
    UpsertCounts,
    find_changes,
    frame_from_columns,
    newest_stored,
    old_download_as_partial,
    series_id,
    unix_micros,
)
from db.pg_binary import aggregate_columns, decode_columns, encode_rows
from db.revisions import RevisionLimits, Revisions, check_limits, record_revisions

STAGE = "cddf_candles_stage"
WINDOW_PERIODS = 1_000_000  # candles read per query: at most 57 MB
CANDLE_FIELDS = {
    "time": "timestamptz",
    **dict.fromkeys(FLOAT_COLUMNS, "float8"),
    "is_final": "bool",
}
READ_FIELDS = {name: kind for name, kind in CANDLE_FIELDS.items() if name != "is_final"}
PARTIAL_FIELDS = {"time": "timestamptz"}
ROW_FIELDS = {
    "series_id": "int4",
    **CANDLE_FIELDS,
    "first_seen_at": "timestamptz",
    "updated_at": "timestamptz",
}

_CREATE_STAGE = f"""
CREATE TEMPORARY TABLE {STAGE} (
    time timestamptz NOT NULL,
    {", ".join(f"{name} double precision NOT NULL" for name in FLOAT_COLUMNS)},
    is_final boolean NOT NULL
) ON COMMIT DROP
"""

_UPSERT_FROM_STAGE = f"""
INSERT INTO candles AS c (series_id, time, {", ".join(VALUE_COLUMNS)}, first_seen_at, updated_at)
SELECT :series_id, s.time, {", ".join(f"s.{name}" for name in VALUE_COLUMNS)}, :now, :now
FROM {STAGE} AS s
ON CONFLICT (series_id, time) DO UPDATE
SET {", ".join(f"{name} = excluded.{name}" for name in VALUE_COLUMNS)},
    updated_at = excluded.updated_at
"""


_LOCK_SERIES = text("SELECT id FROM series WHERE key = :key FOR NO KEY UPDATE")


def lock_series(session: Session, key: SeriesKey) -> int:
    """The id of ``key``'s series row (created when missing), locked until the transaction ends.

    Writers of one series queue here. A row lock, not an advisory lock: it needs UPDATE on
    ``series``, which the reader role lacks, so a reader can neither take it nor hold it against
    a writer; ``FOR NO KEY UPDATE`` leaves the rows that reference the series free to insert. A
    wait past the session's ``lock_timeout`` is :class:`SeriesBusyError`.
    """
    try:
        series_id(session, key)  # a first ingest's INSERT waits here for a concurrent one's
        return session.execute(_LOCK_SERIES, {"key": key.key}).scalar_one()
    except OperationalError as error:
        if not isinstance(error.orig, psycopg.errors.LockNotAvailable):
            raise
        raise SeriesBusyError(
            f"candles of {key}: another transaction held the series longer than this session's "
            f"lock_timeout ({error.orig.diag.message_primary}); run the ingest again when the "
            "other ingest has finished (a stuck holder shows in pg_stat_activity; "
            "pg_terminate_backend(pid) ends it)"
        ) from None


def upsert_postgresql(
    session: Session,
    key: SeriesKey,
    frame: pd.DataFrame,
    now: dt.datetime,
    ingest_run_id: int | None = None,
    limits: RevisionLimits | None = None,
) -> UpsertCounts:
    """Upsert a checked candles frame (see db.candles.upsert_candles)."""
    sid = lock_series(session, key)
    if frame.empty:
        return UpsertCounts(0, 0, 0)
    newest = newest_stored(session, sid)
    frame = old_download_as_partial(frame, newest)
    micros = unix_micros(frame.index)
    driver = session.connection().connection.driver_connection
    stored = read_candles(driver, sid, key.period, frame.index[0], frame.index[-1])
    stored_micros = stored.pop("time")
    new, changed, revised = find_changes(frame, stored_micros, stored)
    revisions = Revisions.of(frame, revised, stored_micros, stored)
    del stored, stored_micros
    check_limits(key, revisions, newest, limits)
    with driver.cursor() as cursor:
        if new.any():
            stamp = np.full(int(new.sum()), pd.Timestamp(now).value // 1000)  # ns -> us
            columns = _columns(frame, micros, new)
            columns |= {"series_id": np.full(len(stamp), sid, dtype=np.int32)}
            columns |= {"first_seen_at": stamp, "updated_at": stamp}
            _copy_in(cursor, "candles", ROW_FIELDS, columns)
        if changed.any():
            session.execute(text(_CREATE_STAGE))
            _copy_in(cursor, STAGE, CANDLE_FIELDS, _columns(frame, micros, changed))
            session.execute(text(_UPSERT_FROM_STAGE), {"series_id": sid, "now": now})
            session.execute(text(f"DROP TABLE {STAGE}"))
    record_revisions(session, sid, revisions, ingest_run_id, now)
    inserted, updated = int(new.sum()), int(changed.sum())
    return UpsertCounts(inserted, updated, len(frame) - inserted - updated, len(revisions))


def load_postgresql(
    connection: Connection,
    sid: int,
    period: pd.Timedelta,
    until: pd.Timestamp | None,
    final_only: bool,
) -> pd.DataFrame:
    """The candles of series ``sid`` (one every ``period``) up to ``until`` as a frame."""
    driver = connection.connection.driver_connection
    with driver.cursor() as cursor:
        cursor.execute("SELECT min(time), max(time) FROM candles WHERE series_id = %s", (sid,))
        first, last = cursor.fetchone()
    if first is None:
        return frame_from_columns(np.array([], dtype=np.int64), dict.fromkeys(VALUE_COLUMNS, []))
    last = pd.Timestamp(last) if until is None else min(until, pd.Timestamp(last))
    columns = read_candles(driver, sid, period, pd.Timestamp(first), last, final_only)
    return frame_from_columns(columns.pop("time"), columns)


def read_candles(
    driver: psycopg.Connection,
    sid: int,
    period: pd.Timedelta,
    first: pd.Timestamp,
    last: pd.Timestamp,
    final_only: bool = False,
) -> dict[str, np.ndarray]:
    """The columns of the candles of series ``sid`` from ``first`` to ``last``, in any order.

    ``is_final`` travels as the (few) times of partial candles rather than a value per row.
    One query per window of WINDOW_PERIODS candles keeps each aggregated value small.
    """
    query = (
        f"SELECT {aggregate_columns(READ_FIELDS)}, "
        f"{aggregate_columns(PARTIAL_FIELDS)} FILTER (WHERE NOT is_final) FROM candles "
        "WHERE series_id = %s AND time >= %s AND time < %s AND time <= %s"
        + (" AND is_final" if final_only else "")
    )
    parts = []
    # capped at the range itself: a million days overflows a nanosecond timestamp
    start, window = first, min(period * WINDOW_PERIODS, last - first + period)
    with driver.cursor() as cursor:
        while start <= last:
            bounds = (start.to_pydatetime(), (start + window).to_pydatetime(), last.to_pydatetime())
            cursor.execute(query, (sid, *bounds), binary=True)
            row = cursor.fetchone()
            part = decode_columns(row[:-1], READ_FIELDS)
            partial = decode_columns(row[-1:], PARTIAL_FIELDS)["time"]
            part["is_final"] = ~np.isin(part["time"], partial)
            parts.append(part)
            start += window
    if not parts:
        return decode_columns([None] * len(CANDLE_FIELDS), CANDLE_FIELDS)
    return {name: np.concatenate([part[name] for part in parts]) for name in CANDLE_FIELDS}


def _columns(frame: pd.DataFrame, micros: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
    columns = {name: frame[name].to_numpy()[rows] for name in VALUE_COLUMNS}
    return columns | {"time": micros[rows]}


def _copy_in(
    cursor: psycopg.Cursor, table: str, fields: dict[str, str], columns: dict[str, np.ndarray]
) -> None:
    statement = sql.SQL("COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)").format(
        table=sql.Identifier(table),
        columns=sql.SQL(", ").join(sql.Identifier(name) for name in fields),
    )
    with cursor.copy(statement) as copy:
        for chunk in encode_rows(fields, columns):
            copy.write(chunk)
