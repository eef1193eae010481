"""The SQLite side of db.candles: compare with the stored rows, write only what changed.

The series insert that opens the upsert takes SQLite's single write lock (waiting up to the
engine's busy timeout), so the comparison below stays exact until the transaction ends and two
ingests of one series never interleave.

Times are stored the way SQLAlchemy's SQLite ``DateTime`` stores them,
``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC, so ORM queries and these raw statements agree.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from db.candles import (
    FLOAT_COLUMNS,
    VALUE_COLUMNS,
    UpsertCounts,
    find_changes,
    frame_from_columns,
    series_id,
    unix_micros,
)
from db.series_key import SeriesKey

TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
_SELECT = f"SELECT time, {', '.join(VALUE_COLUMNS)} FROM candles WHERE series_id = ?"
_UPSERT = f"""
INSERT INTO candles (series_id, time, {", ".join(VALUE_COLUMNS)}, first_seen_at, updated_at)
VALUES (?, ?, {", ".join("?" for _ in VALUE_COLUMNS)}, ?, ?)
ON CONFLICT (series_id, time) DO UPDATE
SET {", ".join(f"{name} = excluded.{name}" for name in VALUE_COLUMNS)},
    updated_at = excluded.updated_at
"""


def sqlite_times(index: pd.DatetimeIndex) -> np.ndarray:
    """``YYYY-MM-DD HH:MM:SS.ffffff`` strings of a tz-aware index (vectorised)."""
    iso = np.datetime_as_string(unix_micros(index).astype("datetime64[us]"), unit="us")
    # (rows, 26) UCS-4 code points: swap the ISO "T" separator for the space SQLAlchemy writes
    iso.view(np.uint32).reshape(len(iso), -1)[:, 10] = ord(" ")
    return iso


def upsert_sqlite(
    session: Session, key: SeriesKey, frame: pd.DataFrame, now: dt.datetime
) -> UpsertCounts:
    """Upsert a checked candles frame (see db.candles.upsert_candles)."""
    sid = series_id(session, key)  # an INSERT: takes the write lock before anything is read
    if frame.empty:
        return UpsertCounts(0, 0, 0)
    times = sqlite_times(frame.index)
    cursor = session.connection().connection.driver_connection.cursor()
    try:
        first, last = str(times[0]), str(times[-1])
        cursor.execute(_SELECT + " AND time >= ? AND time <= ?", (sid, first, last))
        stored_micros, stored = _columns(cursor.fetchall())
        new, changed = find_changes(frame, stored_micros, stored)
        del stored
        rows = np.flatnonzero(new | changed)
        stamp = now.astimezone(dt.UTC).strftime(TIME_FORMAT)
        columns = [times[rows].tolist()]
        columns += [frame[name].to_numpy()[rows].tolist() for name in VALUE_COLUMNS]
        cursor.executemany(
            _UPSERT, ((sid, *row, stamp, stamp) for row in zip(*columns, strict=True))
        )
    finally:
        cursor.close()
    inserted, updated = int(new.sum()), int(changed.sum())
    return UpsertCounts(inserted, updated, len(frame) - inserted - updated)


def load_sqlite(
    connection: Connection, sid: int, until: pd.Timestamp | None, final_only: bool
) -> pd.DataFrame:
    """The candles of series ``sid`` as a frame, read with one plain select."""
    query, parameters = _SELECT, [sid]
    if until is not None:
        query += " AND time <= ?"
        parameters.append(until.strftime(TIME_FORMAT))
    if final_only:
        query += " AND is_final"
    cursor = connection.connection.driver_connection.cursor()
    try:
        cursor.execute(query, parameters)
        micros, columns = _columns(cursor.fetchall())
    finally:
        cursor.close()
    return frame_from_columns(micros, columns)


def _columns(rows: list[tuple]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Unix microseconds and value columns of ``SELECT time, <VALUE_COLUMNS>`` rows."""
    if not rows:
        return np.array([], dtype=np.int64), {name: np.array([]) for name in VALUE_COLUMNS}
    times, *values = zip(*rows, strict=True)
    micros = np.array(times, dtype="datetime64[us]").astype(np.int64)
    columns = {
        name: np.array(column, dtype=np.float64)
        for name, column in zip(FLOAT_COLUMNS, values[:-1], strict=True)
    }
    columns["is_final"] = np.array(values[-1], dtype=bool)
    return micros, columns
