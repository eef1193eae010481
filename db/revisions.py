"""Revisions of stored final candles: found by the upsert, kept as history, held to limits.

A final candle that a later file changes is never overwritten silently: the upsert writes its
old and new values to ``candle_revisions`` (when, and by which ingest run). With limits, a file
that revises more final candles than ``max_revisions``, or any older than ``max_age_periods``
before the newest stored candle, is refused and nothing is written.

For example::

    limits = RevisionLimits.from_settings()  # CDDF_MAX_REVISIONS, CDDF_REVISION_MAX_AGE_PERIODS
    upsert_candles(session, key, candles, ingest_run_id=run_id, limits=limits).revised  # -> 1
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import insert
from sqlalchemy.orm import Session

from cdd.series_key import SeriesKey
from db.candle_frames import FLOAT_COLUMNS, unix_micros
from db.models import CandleRevision
from settings import Settings, get_settings

SHOWN = 5  # revisions listed in a refusal


@dataclass(frozen=True)
class RevisionLimits:
    """How many stored final candles one ingest may revise, and how far back."""

    max_revisions: int = 5
    max_age_periods: int = 3

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> RevisionLimits:
        settings = settings or get_settings()
        return cls(settings.max_revisions, settings.revision_max_age_periods)


@dataclass(frozen=True)
class Revisions:
    """The stored final candles a frame changes: their times and old and new values."""

    times: pd.DatetimeIndex
    old: dict[str, np.ndarray]
    new: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.times)

    @classmethod
    def of(
        cls,
        frame: pd.DataFrame,
        revised: np.ndarray,
        stored_micros: np.ndarray,
        stored: dict[str, np.ndarray],
    ) -> Revisions:
        """The rows of ``frame`` where ``revised``, beside their stored values (any order)."""
        rows = np.flatnonzero(revised)
        times = frame.index[rows]
        at = pd.Index(stored_micros).get_indexer(unix_micros(times))
        old = {name: np.asarray(stored[name], dtype=np.float64)[at] for name in FLOAT_COLUMNS}
        new = {name: frame[name].to_numpy(dtype=np.float64)[rows] for name in FLOAT_COLUMNS}
        return cls(times, old, new)


class RevisionsRefusedError(ValueError):
    """A file would revise more stored final candles, or older ones, than the limits allow."""


def check_limits(
    key: SeriesKey,
    revisions: Revisions,
    newest_stored: pd.Timestamp | None,
    limits: RevisionLimits | None,
) -> None:
    """Raise RevisionsRefusedError when ``revisions`` break ``limits`` (None: no limits)."""
    if limits is None or not len(revisions) or newest_stored is None:
        return
    ages = (newest_stored - revisions.times) // key.period
    too_many = len(revisions) > limits.max_revisions
    too_old = int(ages.max()) > limits.max_age_periods
    if not (too_many or too_old):
        return
    broken = []
    if too_many:
        broken.append(f"more than {limits.max_revisions} (CDDF_MAX_REVISIONS)")
    if too_old:
        broken.append(
            f"the oldest {_when(revisions.times[0])} is {int(ages.max()):,} periods before the "
            f"newest stored candle {_when(newest_stored)}, more than "
            f"{limits.max_age_periods} (CDDF_REVISION_MAX_AGE_PERIODS)"
        )
    shown = "; ".join(_change(revisions, row) for row in range(min(SHOWN, len(revisions))))
    more = f"; and {len(revisions) - SHOWN:,} more" if len(revisions) > SHOWN else ""
    candles = "final candle" if len(revisions) == 1 else "final candles"
    raise RevisionsRefusedError(
        f"{key}: the file revises {len(revisions):,} {candles} already stored "
        f"({'; '.join(broken)}): {shown}{more}. Nothing was written. If the file is an old "
        "download, ingest a current one; if CryptoDataDownload restated these candles, run "
        "again with `cdd-forecast ingest --accept-revisions` to store them (each revision is "
        "kept in candle_revisions)."
    )


def record_revisions(
    session: Session,
    sid: int,
    revisions: Revisions,
    ingest_run_id: int | None,
    now: dt.datetime,
) -> None:
    """Write one ``candle_revisions`` row per revised candle, in the session's transaction."""
    if not len(revisions):
        return
    columns = {"time": revisions.times.to_pydatetime()}
    columns |= {f"old_{name}": values.tolist() for name, values in revisions.old.items()}
    columns |= {f"new_{name}": values.tolist() for name, values in revisions.new.items()}
    fixed = {
        "series_id": sid,
        "ingest_run_id": ingest_run_id,
        "revised_at": now,
        "old_is_final": True,
        "new_is_final": True,
    }
    names = list(columns)
    rows = [
        fixed | dict(zip(names, values, strict=True))
        for values in zip(*columns.values(), strict=True)
    ]
    session.execute(insert(CandleRevision), rows)


def _change(revisions: Revisions, row: int) -> str:
    """``2020-11-19 close 18,621.3 -> 17,800`` (the close, and any other value that changed)."""
    changed = [
        f"{name} {revisions.old[name][row]:,.8g} -> {revisions.new[name][row]:,.8g}"
        for name in FLOAT_COLUMNS
        if name == "close" or revisions.old[name][row] != revisions.new[name][row]
    ]
    return f"{_when(revisions.times[row])} {', '.join(changed)}"


def _when(time: pd.Timestamp) -> str:
    return f"{time:%Y-%m-%d}" if time == time.normalize() else f"{time:%Y-%m-%d %H:%M}"
