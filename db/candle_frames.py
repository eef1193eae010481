"""What both candle backends share: the columns, the frame helpers, the first steps of an upsert.

db.candles dispatches to db.candles_postgresql or db.candles_sqlite; all three import from
here, so neither backend imports db.candles.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from cdd.series_key import SeriesKey
from db.models import Candle, Series

FLOAT_COLUMNS = ("open", "high", "low", "close", "volume_base", "volume_quote")
VALUE_COLUMNS = (*FLOAT_COLUMNS, "is_final")


class UpsertCounts(NamedTuple):
    """Rows of one upsert; ``revised`` counts the updated ones that changed a final candle."""

    inserted: int
    updated: int
    unchanged: int
    revised: int = 0


class SeriesBusyError(RuntimeError):
    """Another writer held the series longer than the caller waits: SQLite's busy timeout, or
    PostgreSQL's ``lock_timeout`` on the series row (``db.candles_postgresql.lock_series``)."""


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


def newest_stored(session: Session, sid: int) -> pd.Timestamp | None:
    """The time of the newest stored candle of series ``sid`` (final or not), or None."""
    newest = session.execute(select(func.max(Candle.time)).where(Candle.series_id == sid))
    value = newest.scalar_one()
    return None if value is None else pd.Timestamp(value).tz_convert("UTC")


def old_download_as_partial(frame: pd.DataFrame, newest: pd.Timestamp | None) -> pd.DataFrame:
    """``frame`` with its newest candle partial when the database already holds a newer one.

    A CDD file's newest row is the period still open when it was downloaded; a file whose
    newest candle is older than what is stored is an old download, and that row is not final.
    """
    if newest is None or frame.empty or frame.index[-1] >= newest or not frame["is_final"].iat[-1]:
        return frame
    frame = frame.copy()
    frame.iloc[-1, frame.columns.get_loc("is_final")] = False
    return frame


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
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masks over the rows of ``frame``: ``(new, changed, revised)`` against the stored candles.

    ``stored`` holds the value columns of the stored rows at ``stored_micros`` (any order).
    A row is changed when any value differs, except that a final candle is never replaced by a
    partial one; a changed row is revised when its stored candle is final.
    """
    new = np.ones(len(frame), dtype=bool)
    changed = np.zeros(len(frame), dtype=bool)
    revised = np.zeros(len(frame), dtype=bool)
    if len(stored_micros) == 0:
        return new, changed, revised
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
    revised[present] = differs & new_final & old_final
    return new, changed, revised
