"""The bad rows of ingested files (``ingest_rejects``): stored with their run, read back.

Store them in the transaction that stores the file's candles, so a file's candles and its
rejects are kept, or rolled back, together::

    with Session(engine) as session, session.begin():
        upsert_candles(session, key, parsed.candles)
        store_rejects(session, run_id, key, parsed.report.rejects)

For example::

    [(r.line, r.reason) for r in load_rejects(engine, series="Bitstamp_BTCUSD_d")]
    # -> [(1442, 'high 98.0 is below low 99.0')]
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Protocol

from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from cdd.series_key import SeriesKey
from db.models import IngestReject


class BadRow(Protocol):
    """What the parser reports of a bad row (cdd.rejects.Reject)."""

    line: int
    time: dt.datetime | None
    reason: str
    raw: str


def store_rejects(
    session: Session, run_id: int, series: str | SeriesKey, rejects: Iterable[BadRow]
) -> int:
    """Insert the bad rows of ingest run ``run_id`` inside the caller's transaction; how many."""
    rows = [
        {
            "ingest_run_id": run_id,
            "series": str(series),
            "line": reject.line,
            "time": reject.time,  # a tz-aware datetime (pd.Timestamp is one) or None
            "reason": _visible_nul(reject.reason),
            "raw": _visible_nul(reject.raw),
        }
        for reject in rejects
    ]
    if rows:
        session.execute(insert(IngestReject), rows)
    return len(rows)


def _visible_nul(text: str) -> str:
    """``text`` with each NUL written as ``\\x00``: PostgreSQL text cannot hold a NUL.

    >>> _visible_nul("1510185600,3\\x0029.0")
    '1510185600,3\\\\x0029.0'
    """
    return text.replace("\x00", "\\x00")


def load_rejects(
    engine: Engine, *, series: str | SeriesKey | None = None, run_id: int | None = None
) -> list[IngestReject]:
    """The stored bad rows, newest run first, in file order; of one series and/or one run."""
    statement = select(IngestReject).order_by(IngestReject.ingest_run_id.desc(), IngestReject.line)
    if series is not None:
        statement = statement.where(IngestReject.series == str(series))
    if run_id is not None:
        statement = statement.where(IngestReject.ingest_run_id == run_id)
    with Session(engine) as session:
        return list(session.scalars(statement))
