"""The SQLite side of db.candles: compare with the stored rows, write only what changed.

The series insert that opens the upsert takes SQLite's single write lock (waiting up to the
engine's busy timeout), so the comparison below stays exact until the transaction ends and two
ingests of one series never interleave.

Times are stored the way SQLAlchemy's SQLite ``DateTime`` stores them,
``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC, so ORM queries and these raw statements agree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import numpy as np
import pandas as pd
from sqlalchemy import Connection
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
from db.revisions import RevisionLimits, Revisions, check_limits, record_revisions

TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
_SELECT = f"SELECT time, {', '.join(VALUE_COLUMNS)} FROM candles WHERE series_id = ?"
_INSERT = f"""
INSERT INTO candles (series_id, time, {", ".join(VALUE_COLUMNS)}, first_seen_at, updated_at)
VALUES (?, ?, {", ".join("?" for _ in VALUE_COLUMNS)}, ?, ?)
"""
_UPDATE = f"""
UPDATE candles SET {", ".join(f"{name} = ?" for name in VALUE_COLUMNS)}, updated_at = ?
WHERE series_id = ? AND time = ?
"""


def sqlite_times(index: pd.DatetimeIndex) -> np.ndarray:
    """``YYYY-MM-DD HH:MM:SS.ffffff`` strings of a tz-aware index (vectorised)."""
    iso = np.datetime_as_string(unix_micros(index).astype("datetime64[us]"), unit="us")
    # (rows, 26) UCS-4 code points: swap the ISO "T" separator for the space SQLAlchemy writes
    iso.view(np.uint32).reshape(len(iso), iso.dtype.itemsize // 4)[:, 10] = ord(" ")
    return iso


def upsert_sqlite(
    session: Session,
    key: SeriesKey,
    frame: pd.DataFrame,
    now: dt.datetime,
    ingest_run_id: int | None = None,
    limits: RevisionLimits | None = None,
) -> UpsertCounts:
    """Upsert a checked candles frame (see db.candles.upsert_candles)."""
    try:
        sid = series_id(session, key)  # an INSERT: takes the write lock before anything is read
    except OperationalError as error:
        if "locked" not in str(error.orig):
            raise
        raise SeriesBusyError(
            f"candles of {key}: another writer kept the SQLite database "
            f"{session.get_bind().url.database} locked past the busy timeout; "
            "run the ingest again when it has finished"
        ) from error
    if frame.empty:
        return UpsertCounts(0, 0, 0)
    newest = newest_stored(session, sid)
    frame = old_download_as_partial(frame, newest)
    first, last = sqlite_times(frame.index[[0, -1]])
    stamp = now.astimezone(dt.UTC).strftime(TIME_FORMAT)
    cursor = session.connection().connection.driver_connection.cursor()
    try:
        cursor.execute(_SELECT + " AND time >= ? AND time <= ?", (sid, str(first), str(last)))
        stored_micros, stored = _columns(cursor.fetchall())
        new, changed, revised = find_changes(frame, stored_micros, stored)
        revisions = Revisions.of(frame, revised, stored_micros, stored)
        del stored
        check_limits(key, revisions, newest, limits)
        # under the write lock new rows cannot conflict and changed rows cannot vanish
        cursor.executemany(_INSERT, ((sid, *row, stamp, stamp) for row in _rows(frame, new)))
        updates = ((*values, stamp, sid, time) for time, *values in _rows(frame, changed))
        cursor.executemany(_UPDATE, updates)
    finally:
        cursor.close()
    record_revisions(session, sid, revisions, ingest_run_id, now)
    inserted, updated = int(new.sum()), int(changed.sum())
    return UpsertCounts(inserted, updated, len(frame) - inserted - updated, len(revisions))


def _rows(frame: pd.DataFrame, mask: np.ndarray) -> Iterator[tuple]:
    """``(time, *VALUE_COLUMNS)`` parameter tuples of the rows of ``frame`` where ``mask``."""
    rows = np.flatnonzero(mask)
    columns = [sqlite_times(frame.index[rows]).tolist()]
    columns += [frame[name].to_numpy()[rows].tolist() for name in VALUE_COLUMNS]
    return zip(*columns, strict=True)


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
    table = pd.DataFrame.from_records(rows, columns=["time", *VALUE_COLUMNS], nrows=len(rows))
    micros = np.asarray(table["time"].to_numpy(dtype=object), dtype="datetime64[us]")
    columns = {name: table[name].to_numpy(dtype=np.float64) for name in FLOAT_COLUMNS}
    columns["is_final"] = table["is_final"].to_numpy(dtype=bool)
    return micros.astype(np.int64), columns
