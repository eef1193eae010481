"""The log of ingest attempts, each written in its own committed transaction.

Start a run before the candles' transaction and finish it after, so a failed run keeps its
``failed`` row and error while its candles roll back::

    run_id = start_run(engine, "Bitstamp_BTCUSD_d", url)
    try:
        with Session(engine) as session, session.begin():
            counts = upsert_candles(session, key, candles)
    except Exception as error:
        finish_run(engine, run_id, status="failed", error=str(error))
        raise
    finish_run(engine, run_id, status="success", inserted=counts.inserted, ...)

On SQLite do not call these while a session of the same thread holds an open write
transaction: the second connection would wait for the first until the busy timeout.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal, get_args

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from db.models import IngestRun
from db.series_key import SeriesKey

FinishedStatus = Literal["success", "not_modified", "failed"]


def start_run(engine: Engine, series: str | SeriesKey, source_url: str) -> int:
    """Record a ``running`` ingest of ``series`` from ``source_url``; returns the run id."""
    run = IngestRun(
        series=str(series),
        source_url=source_url,
        started_at=dt.datetime.now(dt.UTC),
        status="running",
    )
    with Session(engine) as session, session.begin():
        session.add(run)
        session.flush()
        return run.id


def finish_run(
    engine: Engine,
    run_id: int,
    *,
    status: FinishedStatus,
    rows_read: int | None = None,
    inserted: int | None = None,
    updated: int | None = None,
    unchanged: int | None = None,
    etag: str | None = None,
    last_modified: str | None = None,
    content_hash: str | None = None,
    error: str | None = None,
) -> None:
    """Close the running run ``run_id`` with its outcome (``failed`` runs must say why)."""
    if status not in get_args(FinishedStatus):
        allowed = ", ".join(get_args(FinishedStatus))
        raise ValueError(f"ingest run {run_id}: status {status!r} is not one of {allowed}")
    if status == "failed" and not error:
        raise ValueError(f"ingest run {run_id}: a failed run needs its error message")
    values = {
        "status": status,
        "finished_at": dt.datetime.now(dt.UTC),
        "rows_read": rows_read,
        "inserted": inserted,
        "updated": updated,
        "unchanged": unchanged,
        "etag": etag,
        "last_modified": last_modified,
        "content_hash": content_hash,
        "error": error,
    }
    statement = (
        update(IngestRun)
        .where(IngestRun.id == run_id, IngestRun.status == "running")
        .values(**values)
    )
    with Session(engine) as session, session.begin():
        if session.execute(statement).rowcount == 1:
            return
        current = session.execute(
            select(IngestRun.status).where(IngestRun.id == run_id)
        ).scalar_one_or_none()
    if current is None:
        raise LookupError(f"ingest run {run_id} does not exist: start it with start_run first")
    raise ValueError(f"ingest run {run_id} has already finished with status {current!r}")


def last_validators(db: Engine | Session, series: str | SeriesKey) -> tuple[str | None, str | None]:
    """``(etag, last_modified)`` of the newest successful run of ``series``, for a conditional GET.

    ``(None, None)`` when the series never ingested successfully.
    """
    statement = (
        select(IngestRun.etag, IngestRun.last_modified)
        .where(IngestRun.series == str(series), IngestRun.status == "success")
        .order_by(IngestRun.finished_at.desc(), IngestRun.id.desc())
        .limit(1)
    )
    if isinstance(db, Session):
        row = db.execute(statement).one_or_none()
    else:
        with db.connect() as connection:
            row = connection.execute(statement).one_or_none()
    return (row.etag, row.last_modified) if row is not None else (None, None)
