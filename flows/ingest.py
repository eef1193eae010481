"""Ingest CryptoDataDownload candles: download -> parse -> one-transaction upsert, logged.

>>> ingest_series("Bitstamp_BTCUSD_d", "~/Downloads/Bitstamp_BTCUSD_d.csv").inserted
3954
>>> ingest_flow(["Bitstamp_BTCUSD_d", "Bitstamp_ETHUSD_d"])   # one task per series
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run
from sqlalchemy import Engine
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.orm import Session

from db.candles import upsert_candles
from db.engine import get_engine
from db.ingest_runs import finish_run, last_validators, start_run
from db.series_key import SeriesKey
from db.settings import get_settings
from flows.cdd.client import Progress, download, is_http, local_path, names_one_file
from flows.cdd.client import resolve_source as _resolve
from flows.cdd.errors import CDDNetworkError
from flows.cdd.parser import parse_cdd


@dataclass(frozen=True)
class IngestResult:
    """The outcome of one series' ingest; ``status`` is success, not_modified or failed."""

    series: str
    source: str
    status: str
    run_id: int | None = None
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates_collapsed: int = 0
    gaps: int = 0
    swapped_volume_rows: int = 0
    partial_rows: int = 0
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None
    seconds: float = 0.0
    error: str | None = None

    def as_row(self) -> dict[str, Any]:
        """A flat dict for tables and artifacts (times as ISO strings)."""
        row = asdict(self)
        for name in ("first", "last"):
            row[name] = None if row[name] is None else row[name].isoformat()
        row["seconds"] = round(self.seconds, 3)
        return row


def resolve_source(key: SeriesKey, source: str | None = None) -> str:
    """Where ``key``'s file comes from: the CDD base URL, or ``source`` (see the client)."""
    return _resolve(key, source, base_url=get_settings().cdd_base_url)


def plan_series(series: list[str] | None, source: str | None) -> list[str]:
    """The series to ingest: ``series``, else the file name's key of a one-file ``source``,
    else the configured ``CDDF_SERIES``. Several series need a directory or base URL source.
    """
    keys = list(series or [])
    if not keys and source is not None and names_one_file(source):
        path = urlsplit(source).path if is_http(source) else str(local_path(source))
        stem = PurePosixPath(path.replace("\\", "/")).name.removesuffix(".csv")
        try:
            keys = [SeriesKey.parse(stem).key]
        except ValueError:
            keys = []
    keys = keys or list(get_settings().series)
    for key in keys:
        SeriesKey.parse(key)  # an invalid key fails here, before any download
    if len(keys) > 1 and names_one_file(source):
        raise ValueError(
            f"--source {source} names one file but {len(keys)} series were asked "
            f"({', '.join(keys)}): pass one --series per file, or a directory or base URL "
            "ending in / that holds <series>.csv files"
        )
    return keys


def ingest_series(
    key: str,
    source: str | None = None,
    *,
    engine: Engine | None = None,
    now: pd.Timestamp | None = None,
    on_progress: Progress | None = None,
) -> IngestResult:
    """Download, parse and store one series in one transaction, recording an ingest run.

    A failure is recorded as a ``failed`` run with its error, writes no candle, and re-raises.
    An HTTP 304 (same ETag / Last-Modified as the last success) is recorded as not_modified.
    """
    started = time.perf_counter()
    series = SeriesKey.parse(key)
    engine = engine or get_engine()
    url = resolve_source(series, source)
    run_id = start_run(engine, series, url)
    try:
        etag, last_modified = last_validators(engine, series) if is_http(url) else (None, None)
        fetched = download(url, etag=etag, last_modified=last_modified, on_progress=on_progress)
        if fetched.body is None:
            finish_run(
                engine,
                run_id,
                status="not_modified",
                rows_read=0,
                inserted=0,
                updated=0,
                unchanged=0,
                etag=etag,
                last_modified=last_modified,
            )
            return IngestResult(
                series.key, url, "not_modified", run_id, seconds=time.perf_counter() - started
            )
        parsed = parse_cdd(fetched.body, source=url, key=series, now=now)
        with Session(engine) as session, session.begin():
            counts = upsert_candles(session, series, parsed.candles)
    except Exception as error:
        _record_failure(engine, run_id, error)
        raise
    report = parsed.report
    finish_run(
        engine,
        run_id,
        status="success",
        rows_read=report.rows_read,
        inserted=counts.inserted,
        updated=counts.updated,
        unchanged=counts.unchanged,
        etag=fetched.etag,
        last_modified=fetched.last_modified,
        content_hash=fetched.content_hash,
    )
    return IngestResult(
        series=series.key,
        source=url,
        status="success",
        run_id=run_id,
        rows_read=report.rows_read,
        inserted=counts.inserted,
        updated=counts.updated,
        unchanged=counts.unchanged,
        duplicates_collapsed=report.duplicates_collapsed,
        gaps=report.gaps,
        swapped_volume_rows=report.swapped_volume_rows,
        partial_rows=report.partial_rows,
        first=report.first,
        last=report.last,
        seconds=time.perf_counter() - started,
    )


def _record_failure(engine: Engine, run_id: int, error: Exception) -> None:
    try:
        finish_run(engine, run_id, status="failed", error=f"{type(error).__name__}: {error}")
    except Exception as recording:  # keep the original error; say the log is incomplete
        error.add_note(f"(ingest run {run_id} could not be marked failed: {recording})")


def _retryable_failure(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what a later attempt can fix: unreachable host or database, timeout, 429, 5xx."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, CDDNetworkError | OperationalError | DisconnectionError)


@task(
    name="ingest-series",
    task_run_name="ingest {key}",
    retries=3,
    retry_delay_seconds=[2, 10, 30],
    retry_condition_fn=_retryable_failure,
)
def ingest_series_task(key: str, source: str | None = None) -> IngestResult:
    """Download, parse and store one series (network and database outages retried)."""
    result = ingest_series(key, source)
    get_run_logger().info(
        "%s: %s, %d rows read, %d inserted, %d updated, %d unchanged",
        key,
        result.status,
        result.rows_read,
        result.inserted,
        result.updated,
        result.unchanged,
    )
    return result


def _run_name() -> str:
    series = flow_run.parameters.get("series") or get_settings().series
    source = flow_run.parameters.get("source")
    return f"ingest {','.join(series)}" + (f" from {source}" if source else "")


class IngestFailed(RuntimeError):
    """One or more series of an ingest flow failed; the others were stored."""


@flow(name="ingest", flow_run_name=_run_name)
def ingest_flow(series: list[str] | None = None, source: str | None = None) -> list[IngestResult]:
    """Ingest each series (default ``CDDF_SERIES``) in its own task; fail if any failed.

    ``source`` overrides where files come from: one file for one series, or a directory or a
    base URL ending in ``/`` holding ``<series>.csv`` files.
    """
    logger = get_run_logger()
    keys = plan_series(series, source)
    get_engine()  # migrate an empty SQLite file once, before the tasks run in parallel
    futures = [(key, ingest_series_task.submit(key, source)) for key in keys]
    results: list[IngestResult] = []
    for key, future in futures:
        future.wait()
        outcome = future.state.result(raise_on_failure=False)
        if isinstance(outcome, IngestResult):
            results.append(outcome)
        else:
            url = resolve_source(SeriesKey.parse(key), source)
            results.append(IngestResult(key, url, "failed", error=str(outcome)))
            logger.error("%s failed: %s", key, outcome)
    create_table_artifact(
        key="ingest-summary",
        table=[_artifact_row(result) for result in results],
        description=f"Candles ingested per series ({len(results)} series)",
    )
    failed = [result for result in results if result.status == "failed"]
    if failed:
        details = "; ".join(f"{result.series}: {result.error}" for result in failed)
        raise IngestFailed(f"{len(failed)} of {len(results)} series failed: {details}")
    return results


def _artifact_row(result: IngestResult) -> dict[str, Any]:
    row = result.as_row()
    return {
        name: row[name]
        for name in (
            "series",
            "status",
            "rows_read",
            "inserted",
            "updated",
            "unchanged",
            "gaps",
            "swapped_volume_rows",
            "partial_rows",
            "first",
            "last",
            "error",
        )
    }
