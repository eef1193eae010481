"""Ingest CryptoDataDownload candles: download -> parse -> one-transaction upsert, logged.

For example::

    ingest_series("Bitstamp_BTCUSD_d", "~/Downloads/Bitstamp_BTCUSD_d.csv").inserted  # -> 3954
    list(ingest_each(["Bitstamp_BTCUSD_d", "Bitstamp_ETHUSD_d"]))  # `cdd-forecast ingest`

The daily flow ingests each of its series with ``ingest_series_task``; ``cdd-forecast ingest``
runs ``ingest_each`` in its own process (no Prefect run).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Annotated
from urllib.parse import urlsplit

import pandas as pd
from prefect import get_run_logger, task
from prefect.exceptions import MissingContextError
from pydantic import PlainValidator
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from cdd.catalogue import (
    Catalogue,
    check_entry,
    default_cache_dir,
    directory_series,
    is_pattern,
    select,
)
from cdd.client import Progress, download, is_http, local_path, names_one_file, shown_url
from cdd.client import resolve_source as _resolve
from cdd.parser import ParseReport, parse_cdd
from cdd.rejects import RejectLimits
from cdd.series_key import SeriesKey, timeframe_of
from db.candles import UpsertCounts, upsert_candles
from db.engine import get_engine
from db.ingest_rejects import store_rejects
from db.ingest_runs import finish_run, last_validators, start_run
from db.revisions import RevisionLimits
from db.stored_series import stored_keys
from flows.retry import DB_RETRY
from settings import Settings, get_settings


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
    revised: int = 0  # stored final candles the file changed (kept in candle_revisions)
    duplicates_collapsed: int = 0
    gaps: int = 0
    swapped_volume_rows: int = 0
    partial_rows: int = 0
    zero_rows: int = 0  # all-zero rows (the pair was not trading yet): skipped
    rejected_rows: int = 0  # bad rows, not stored, kept in ingest_rejects
    superseded_rows: int = 0  # an older format generation's copy of a candle: dropped
    time_mismatches: int = 0  # date not the unix time but the same candle: unix trusted
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None
    seconds: float = 0.0
    error: str | None = None

    @classmethod
    def stored(
        cls, series: str, source: str, run_id: int, report: ParseReport, counts: UpsertCounts
    ) -> IngestResult:
        """The success of one file: the parser's counts of ``report``, the upsert's ``counts``."""
        values = {name: getattr(report, name) for name in REPORT_FIELDS}
        return cls(series, source, "success", run_id, **values, **counts._asdict())

    def run_counts(self) -> dict[str, int]:
        """The counts an ``ingest_runs`` row keeps (db.ingest_runs.finish_run's keywords)."""
        return {name: getattr(self, name) for name in RUN_COUNTS}


# the parser's counts an IngestResult repeats, and the counts ingest_runs keeps
REPORT_FIELDS = (
    "rows_read",
    "duplicates_collapsed",
    "gaps",
    "swapped_volume_rows",
    "partial_rows",
    "zero_rows",
    "rejected_rows",
    "superseded_rows",
    "time_mismatches",
    "first",
    "last",
)
RUN_COUNTS = (
    "rows_read",
    "inserted",
    "updated",
    "unchanged",
    "revised",
    "zero_rows",
    "rejected_rows",
    "superseded_rows",
    "time_mismatches",
)


def resolve_source(key: SeriesKey, source: str | None = None) -> str:
    """Where ``key``'s file comes from: the CDD base URL, or ``source`` (see the client)."""
    return _resolve(key, source, base_url=get_settings().cdd_base_url)


# a flow parameter that names series: a key (a text Prefect's validation parses, or a
# `SeriesKey` taken as it is) or a pattern of keys (its text, checked); see `plan`
SeriesEntry = Annotated[str, PlainValidator(check_entry, json_schema_input_type=str)]


def plan_series(series: list[str] | None, source: str | None) -> list[SeriesKey]:
    """The series to ingest (`plan`'s keys) of a run given ``series``; what the plan says
    besides is logged."""
    planned = plan(series, source, given_as="the run's series")
    logger = _logger()
    for note in planned.notes:
        logger.warning(note)
    if isinstance(logger, logging.LoggerAdapter):  # a flow run's: the run log says who joins
        try:
            logger.info(planned.summary(joining(planned.keys, get_engine())))
        except SQLAlchemyError as error:  # the run's own steps fail on it and say why
            logger.warning("cannot tell which series join this run: %s", error)
    return planned.keys


@dataclass(frozen=True)
class SeriesPlan:
    """The series a run takes, from which entries (keys and patterns), and what to tell.

    ``origin`` names where the entries came from (``--series``, ``CDDF_SERIES``, ...);
    ``selected`` maps each entry to the keys it selects; ``notes`` are what an operator should
    read (a stale catalogue listing, files of ``--source`` that are not taken).
    """

    keys: list[SeriesKey]
    origin: str
    selected: dict[str, list[str]]
    notes: list[str]

    def patterns(self) -> dict[str, list[str]]:
        """The entries that are patterns, with the keys each selects."""
        return {entry: keys for entry, keys in self.selected.items() if is_pattern(entry)}

    def summary(self, joining: list[str]) -> str:
        """One line: how many series, from where, and the first 10 of ``joining`` (new ones).

        >>> SeriesPlan(["A_XXXX_d", "B_YYYY_d"], "CDDF_SERIES", {}, []).summary(["B_YYYY_d"])
        '2 series from CDDF_SERIES; 1 joins this run: B_YYYY_d'
        """
        taken = f"{len(self.keys)} series from {self.origin}"
        if not joining:
            return taken
        verb = "joins" if len(joining) == 1 else "join"
        return f"{taken}; {len(joining)} {verb} this run: {_some(joining)}"


def plan(series: list[str] | None, source: str | None, *, given_as: str = "--series") -> SeriesPlan:
    """The series to ingest: ``series``; else the key of a one-file ``source``; else, for a
    ``source`` directory and ``CDDF_SERIES`` unset, the directory's CDD files; else
    ``CDDF_SERIES``. Patterns are resolved against the directory ``source`` or the catalogue
    (CDDF_CATALOGUE); one that selects nothing is a ValueError naming it. Several series need
    a directory or base URL source. ``given_as`` names ``series`` in messages.
    """
    settings = get_settings()
    entries, origin, notes = list(series or []), given_as, []
    if not entries and source is not None and names_one_file(source):
        path = urlsplit(source).path if is_http(source) else str(local_path(source))
        stem = PurePosixPath(path.replace("\\", "/")).name.removesuffix(".csv")
        try:
            entries, origin = [SeriesKey.parse(stem)], "the file name of --source"
        except ValueError:
            entries = []
    directory = _local_directory(source)
    held: list[str] = []
    if directory is not None:
        held, others = directory_series(directory)
        if not entries and "series" not in settings.model_fields_set:
            if not held:
                raise ValueError(_no_series_in(source, directory, others))
            entries, origin = held, f"--source {source}"
            other = f" (not {_some(others)}: not named as series)" if others else ""
            notes.append(
                f"CDDF_SERIES is not set: the run takes the {len(held)} CDD file(s) of --source "
                f"{source}{other}; set CDDF_SERIES or pass --series to take fewer"
            )
    if not entries:
        entries, origin = list(settings.series), "CDDF_SERIES"
    # an invalid key or pattern fails here, before any download; a key is parsed here, once
    entries = [check_entry(entry) for entry in entries]
    if twice := sorted({key for key in entries if entries.count(key) > 1}):
        raise ValueError(
            f"--series {', '.join(twice)} given more than once: name each series once (it "
            "would be downloaded, trained and forecast twice)"
        )
    selected = _resolve_patterns(entries, origin, directory, held, notes)
    keys = list(dict.fromkeys(key for found in selected.values() for key in found))
    if len(keys) > 1 and names_one_file(source):
        raise ValueError(
            f"--source {shown_url(source)} names one file but {len(keys)} series were asked "
            f"({', '.join(keys)}): pass one --series per file, or a directory or base URL "
            "ending in / that holds <series>.csv files"
        )
    if origin == "CDDF_SERIES" and (left := sorted(set(held) - set(keys))):
        notes.append(
            f"--source {source} holds {len(left)} CDD file(s) not taken by {origin}: "
            f"{_some(left)}; add them to {origin} (a pattern such as "
            f"{left[0].split('_')[0]}_*_{timeframe_of(left[0])} takes many) to run them"
        )
    return SeriesPlan(keys, origin, selected, notes)


def _local_directory(source: str | None) -> Path | None:
    """``source`` as a local directory, or None (no source, a file, a URL)."""
    if source is None or is_http(source) or names_one_file(source):
        return None
    path = local_path(source)
    return path if path.is_dir() else None


def _no_series_in(source: str | None, directory: Path, others: list[str]) -> str:
    other = f" (its .csv files: {_some(others)})" if others else ""
    return (
        f"--source {source} holds no CDD file named <Exchange>_<PAIR>_<d|1h|minute>.csv"
        f"{other}, so there is no series to run: name each with --series (e.g. --series "
        f"Bitstamp_BTCUSD_d), set CDDF_SERIES, or save the files in {directory} under their "
        "CryptoDataDownload names"
    )


def _resolve_patterns(
    entries: list[str],
    origin: str,
    directory: Path | None,
    held: list[str],
    notes: list[str],
) -> dict[str, list[str]]:
    """Each entry with the keys it selects (see `plan`); stale-listing warnings go to ``notes``."""
    patterns = [entry for entry in entries if is_pattern(entry)]
    if not patterns:
        return select(entries, [])
    if directory is not None:
        available, where = set(held), f"the CDD files in {directory}"
    else:
        catalogue = catalogue_of(get_settings())
        available, sources = set(), []
        for pattern in patterns:
            listing = catalogue.listing(pattern)
            available.update(listing.keys)
            sources.append(listing.source)
            if listing.warning and listing.warning not in notes:
                notes.append(listing.warning)
        where = "the catalogue listing " + ", ".join(dict.fromkeys(sources))
    selected = select(entries, available)
    if empty := [pattern for pattern in patterns if not selected[pattern]]:
        raise ValueError(
            f"{origin}: pattern {', '.join(empty)} selects no series of {where} "
            f"({len(available)} series listed): check its exchange, pair and timeframe "
            "(e.g. Binance_*USDT_d), or drop it"
        )
    return selected


def catalogue_of(settings: Settings) -> Catalogue:
    """The catalogue listing CDDF_CATALOGUE names, cached in CDDF_CATALOGUE_CACHE (unset:
    the user's cache folder, `default_cache_dir`)."""
    cache = settings.catalogue_cache or default_cache_dir()
    return Catalogue(settings.catalogue, cache, settings)


def configured_keys() -> list[str]:
    """CDDF_SERIES, each pattern resolved against the stored series (a global model's group:
    the series its daily run ingested)."""
    entries = get_settings().series
    if not any(map(is_pattern, entries)):
        return list(entries)
    selected = select(entries, stored_keys(get_engine()))
    return list(dict.fromkeys(key for keys in selected.values() for key in keys))


def joining(keys: list[str], engine: Engine) -> list[str]:
    """The keys of ``keys`` not in the ``series`` table yet: they join this run."""
    stored = stored_keys(engine)
    return [key for key in keys if key not in stored]


def _some(names: list[str], shown: int = 10) -> str:
    """The first ``shown`` names, and how many more."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """The flow run's logger inside a run, this module's outside one."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def ingest_series(
    key: str,
    source: str | None = None,
    *,
    engine: Engine | None = None,
    now: pd.Timestamp | None = None,
    on_progress: Progress | None = None,
    accept_revisions: bool = False,
) -> IngestResult:
    """Download, parse and store one series in one transaction, recording an ingest run.

    A failure is recorded as a ``failed`` run with its error, writes no candle, and re-raises.
    Bad rows of a sound file are not stored as candles but in ``ingest_rejects`` (same
    transaction); past CDDF_MAX_REJECTED_ROWS / CDDF_MAX_REJECTED_SHARE the file fails whole.
    A file that revises more stored final candles, or older ones, than CDDF_MAX_REVISIONS and
    CDDF_REVISION_MAX_AGE_PERIODS allow fails (RevisionsRefusedError) unless
    ``accept_revisions``; every revision stored is kept in ``candle_revisions``.
    An HTTP 304 (same ETag / Last-Modified as the last success) is recorded as not_modified.
    """
    started = time.perf_counter()
    series = SeriesKey.of(key)
    engine = engine or get_engine()
    url = resolve_source(series, source)
    shown = shown_url(url)  # the URL without its password: what logs and ingest_runs keep
    run_id = start_run(engine, series, shown)
    try:
        etag, last_modified = (
            last_validators(engine, series, source_url=shown) if is_http(url) else (None, None)
        )
        fetched = download(
            url,
            etag=etag,
            last_modified=last_modified,
            settings=get_settings(),
            on_progress=on_progress,
        )
        if fetched.body is None:
            nothing = dict.fromkeys(("rows_read", "inserted", "updated", "unchanged", "revised"), 0)
            finish_run(
                engine,
                run_id,
                status="not_modified",
                **nothing,
                etag=etag,
                last_modified=last_modified,
            )
            return IngestResult(
                series.key, shown, "not_modified", run_id, seconds=time.perf_counter() - started
            )
        result = _parse_and_store(
            engine, series, shown, run_id, fetched.body, now, accept_revisions
        )
    except Exception as error:
        _record_failure(engine, run_id, error)
        raise
    except (KeyboardInterrupt, SystemExit) as stop:  # SIGTERM or Ctrl-C (flows/cli.py)
        _record_failure(
            engine,
            run_id,
            _Stopped(
                f"stopped ({type(stop).__name__}: SIGTERM or Ctrl-C) before it finished; "
                "rerun the ingest (it writes only what changed)"
            ),
        )
        raise
    finish_run(
        engine,
        run_id,
        status="success",
        **result.run_counts(),
        etag=fetched.etag,
        last_modified=fetched.last_modified,
        content_hash=fetched.content_hash,
    )
    return replace(result, seconds=time.perf_counter() - started)


def _parse_and_store(
    engine: Engine,
    series: SeriesKey,
    shown: str,
    run_id: int,
    body: bytes,
    now: pd.Timestamp | None,
    accept_revisions: bool,
) -> IngestResult:
    """Parse a downloaded file and store its candles and rejects in one transaction."""
    settings = get_settings()
    parsed = parse_cdd(
        body,
        source=shown,
        key=series,
        now=now,
        limits=RejectLimits(settings.max_rejected_share, settings.max_rejected_rows),
        max_bytes=settings.http_max_bytes,
    )
    revisions = None if accept_revisions else RevisionLimits.from_settings()
    with Session(engine) as session, session.begin():
        counts = upsert_candles(
            session, series, parsed.candles, ingest_run_id=run_id, limits=revisions
        )
        store_rejects(session, run_id, series, parsed.report.rejects)
    return IngestResult.stored(series.key, shown, run_id, parsed.report, counts)


class _Stopped(Exception):
    """The ingest was stopped from outside (SIGTERM, Ctrl-C)."""


def _record_failure(engine: Engine, run_id: int, error: Exception) -> None:
    try:
        finish_run(engine, run_id, status="failed", error=f"{type(error).__name__}: {error}")
    except Exception as recording:  # keep the original error; say the log is incomplete
        error.add_note(f"(ingest run {run_id} could not be marked failed: {recording})")


def ingest_each(
    keys: Iterable[str],
    source: str | None = None,
    *,
    engine: Engine | None = None,
    accept_revisions: bool = False,
    progress_for: Callable[[str], Progress] | None = None,
) -> Iterator[IngestResult]:
    """``ingest_series`` for each of ``keys`` in turn, in this process; a series that fails
    comes back as a ``failed`` result with its error, and the others go on.

    ``progress_for(key)``, if given, is called as each series starts and returns the callback
    that follows its download.
    """
    for key in keys:
        on_progress = progress_for(key) if progress_for else None
        try:
            result = ingest_series(
                key,
                source,
                engine=engine,
                on_progress=on_progress,
                accept_revisions=accept_revisions,
            )
        except Exception as error:  # each series fails alone; the result says why
            url = shown_url(resolve_source(SeriesKey.of(key), source))
            result = IngestResult(key, url, "failed", error=f"{error}")
        yield result


@task(name="ingest-series", task_run_name="ingest {key}", **DB_RETRY)
def ingest_series_task(
    key: str, source: str | None = None, accept_revisions: bool = False
) -> IngestResult:
    """Download, parse and store one series (database outages retried; downloads by the client)."""
    result = ingest_series(key, source, accept_revisions=accept_revisions)
    get_run_logger().info(
        "%s: %s, %d rows read, %d inserted, %d updated (%d revised), %d unchanged; "
        "%d all-zero rows skipped, %d bad rows rejected, %d superseded, %d time mismatches",
        key,
        result.status,
        result.rows_read,
        result.inserted,
        result.updated,
        result.revised,
        result.unchanged,
        result.zero_rows,
        result.rejected_rows,
        result.superseded_rows,
        result.time_mismatches,
    )
    return result
