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

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session

from cdd.series_key import SeriesKey
from db.locks import Heartbeat, holder_name, try_acquire
from db.models import IngestRun, SeriesLock
from settings import get_settings

FinishedStatus = Literal["success", "not_modified", "failed"]


def start_run(engine: Engine, series: str | SeriesKey, source_url: str) -> int:
    """Record a ``running`` ingest of ``series`` from ``source_url``; returns the run id.

    The run holds the lease ``ingest-run-<id>`` (series_locks) until ``finish_run``; the
    ``running`` runs of ``series`` whose lease lapsed (their process was killed or lost the
    database) are closed as ``interrupted`` first.
    """
    close_interrupted(engine, series)
    run = IngestRun(
        series=str(series),
        source_url=source_url,
        started_at=dt.datetime.now(dt.UTC),
        status="running",
    )
    with Session(engine) as session, session.begin():
        session.add(run)
        session.flush()
        run_id = run.id
    duration = dt.timedelta(seconds=get_settings().lock_lease_seconds)
    lease = try_acquire(engine, _lease_name(run_id), holder_name(), duration)
    if lease is not None:  # always: the name is new
        _HEARTBEATS[run_id] = heartbeat = Heartbeat(engine, lease, duration)
        heartbeat.start()
    return run_id


def _lease_name(run_id: int) -> str:
    return f"ingest-run-{run_id}"


# the leases of this process' running ingests, renewed until finish_run
_HEARTBEATS: dict[int, Heartbeat] = {}


def close_interrupted(engine: Engine, series: str | SeriesKey) -> list[int]:
    """Mark ``interrupted`` the ``running`` runs of ``series`` whose lease lapsed; their ids."""
    now = dt.datetime.now(dt.UTC)
    with Session(engine) as session, session.begin():
        running = session.scalars(
            select(IngestRun.id).where(
                IngestRun.series == str(series), IngestRun.status == "running"
            )
        ).all()
        if not running:
            return []
        alive = set(
            session.scalars(
                select(SeriesLock.name).where(
                    SeriesLock.name.in_([_lease_name(run_id) for run_id in running]),
                    SeriesLock.expires_at >= now,
                )
            )
        )
        stale = [run_id for run_id in running if _lease_name(run_id) not in alive]
        if stale:
            session.execute(
                update(IngestRun)
                .where(IngestRun.id.in_(stale), IngestRun.status == "running")
                .values(
                    status="interrupted",
                    finished_at=now,
                    error="its process stopped before the run finished (killed, crashed or "
                    "cut off from the database); closed by the next ingest of the series",
                )
            )
            session.execute(
                delete(SeriesLock).where(SeriesLock.name.in_([_lease_name(i) for i in stale]))
            )
    return stale


def finish_run(
    engine: Engine,
    run_id: int,
    *,
    status: FinishedStatus,
    rows_read: int | None = None,
    inserted: int | None = None,
    updated: int | None = None,
    unchanged: int | None = None,
    revised: int | None = None,
    zero_rows: int | None = None,
    rejected_rows: int | None = None,
    superseded_rows: int | None = None,
    time_mismatches: int | None = None,
    etag: str | None = None,
    last_modified: str | None = None,
    content_hash: str | None = None,
    error: str | None = None,
) -> None:
    """Close the running run ``run_id`` with its outcome (``failed`` runs must say why).

    ``zero_rows`` (all-zero rows skipped), ``rejected_rows`` (bad rows kept in
    ingest_rejects), ``superseded_rows`` (older format generation copies dropped) and
    ``time_mismatches`` (date not the unix time, same candle) are the parser's counts.
    """
    if status not in get_args(FinishedStatus):
        allowed = ", ".join(get_args(FinishedStatus))
        raise ValueError(f"ingest run {run_id}: status {status!r} is not one of {allowed}")
    if status == "failed" and not error:
        raise ValueError(f"ingest run {run_id}: a failed run needs its error message")
    heartbeat = _HEARTBEATS.pop(run_id, None)
    if heartbeat is not None:
        heartbeat.stop()
    values = {
        "status": status,
        "finished_at": dt.datetime.now(dt.UTC),
        "rows_read": rows_read,
        "inserted": inserted,
        "updated": updated,
        "unchanged": unchanged,
        "revised": revised,
        "zero_rows": zero_rows,
        "rejected_rows": rejected_rows,
        "superseded_rows": superseded_rows,
        "time_mismatches": time_mismatches,
        "etag": etag,
        "last_modified": last_modified,
        "content_hash": content_hash,
        "error": error,
    }
    statement = (
        update(IngestRun)
        # a live run closed as interrupted (its lease lapsed in a database outage) still
        # records its true outcome
        .where(IngestRun.id == run_id, IngestRun.status.in_(("running", "interrupted")))
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


def last_validators(
    db: Engine | Session, series: str | SeriesKey, source_url: str | None = None
) -> tuple[str | None, str | None]:
    """``(etag, last_modified)`` of the newest successful run of ``series``, for a conditional GET.

    With ``source_url``, only of runs from that URL: an ETag belongs to the URL that sent it.
    ``(None, None)`` when the series never ingested successfully (from that URL).
    """
    statement = (
        select(IngestRun.etag, IngestRun.last_modified)
        .where(IngestRun.series == str(series), IngestRun.status == "success")
        .order_by(IngestRun.finished_at.desc(), IngestRun.id.desc())
        .limit(1)
    )
    if source_url is not None:
        statement = statement.where(IngestRun.source_url == source_url)
    if isinstance(db, Session):
        row = db.execute(statement).one_or_none()
    else:
        with db.connect() as connection:
            row = connection.execute(statement).one_or_none()
    return (row.etag, row.last_modified) if row is not None else (None, None)
