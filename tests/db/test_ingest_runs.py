"""The ingest run log: start, finish, validators for conditional GETs, failed ingests."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from cdd.series_key import SeriesKey
from db.candles import upsert_candles
from db.ingest_rejects import load_rejects, store_rejects
from db.ingest_runs import finish_run, last_validators, start_run
from db.models import IngestRun
from tests.db.factory import make_candles, table_rows

KEY = SeriesKey.parse("Bitstamp_BTCUSD_d")
URL = "https://www.cryptodatadownload.com/cdd/Bitstamp_BTCUSD_d.csv"


def run(engine: Engine, run_id: int) -> IngestRun:
    with Session(engine) as session:
        return session.execute(select(IngestRun).where(IngestRun.id == run_id)).scalar_one()


def succeed(engine: Engine, etag: str | None, last_modified: str | None) -> int:
    run_id = start_run(engine, KEY, URL)
    finish_run(engine, run_id, status="success", etag=etag, last_modified=last_modified)
    return run_id


def test_a_run_is_recorded_from_start_to_finish(engine):
    before = dt.datetime.now(dt.UTC)
    run_id = start_run(engine, KEY, URL)

    started = run(engine, run_id)
    assert (started.series, started.source_url, started.status) == (KEY.key, URL, "running")
    assert before <= started.started_at <= dt.datetime.now(dt.UTC)
    assert started.finished_at is None

    finish_run(
        engine,
        run_id,
        status="success",
        rows_read=3954,
        inserted=3950,
        updated=3,
        unchanged=1,
        etag='"abc"',
        last_modified="Sat, 28 Nov 2026 10:00:00 GMT",
        content_hash="f" * 64,
    )

    finished = run(engine, run_id)
    assert finished.status == "success" and finished.error is None
    assert finished.started_at <= finished.finished_at <= dt.datetime.now(dt.UTC)
    assert (finished.rows_read, finished.inserted, finished.updated, finished.unchanged) == (
        3954,
        3950,
        3,
        1,
    )
    assert (finished.etag, finished.last_modified, finished.content_hash) == (
        '"abc"',
        "Sat, 28 Nov 2026 10:00:00 GMT",
        "f" * 64,
    )


def test_validators_come_from_the_newest_successful_run(engine):
    assert last_validators(engine, KEY) == (None, None)
    succeed(engine, '"v1"', "Fri, 27 Nov 2026 10:00:00 GMT")
    succeed(engine, '"v2"', "Sat, 28 Nov 2026 10:00:00 GMT")
    failed = start_run(engine, KEY, URL)
    finish_run(engine, failed, status="failed", etag='"v3"', error="HTTP 500 after 3 retries")
    not_modified = start_run(engine, KEY, URL)
    finish_run(engine, not_modified, status="not_modified")
    start_run(engine, KEY, URL)  # still running
    succeed_other = start_run(engine, "Bitstamp_ETHUSD_d", URL)
    finish_run(engine, succeed_other, status="success", etag='"eth"')

    assert last_validators(engine, KEY) == ('"v2"', "Sat, 28 Nov 2026 10:00:00 GMT")
    assert last_validators(engine, "Bitstamp_ETHUSD_d") == ('"eth"', None)
    with Session(engine) as session:
        assert last_validators(session, KEY.key) == ('"v2"', "Sat, 28 Nov 2026 10:00:00 GMT")


def test_a_failed_ingest_rolls_back_its_candles_but_keeps_its_failed_run(engine):
    with Session(engine) as session, session.begin():
        upsert_candles(session, KEY, make_candles(periods=5))
    candles_before = table_rows(engine, "candles")

    run_id = start_run(engine, KEY, URL)
    with pytest.raises(ValueError, match="conflicting duplicate"):
        with Session(engine) as session, session.begin():
            upsert_candles(session, KEY, make_candles(periods=8, seed=4))
            raise ValueError("line 7: conflicting duplicate of line 3")
    finish_run(engine, run_id, status="failed", rows_read=8, error="line 7: conflicting duplicate")

    assert table_rows(engine, "candles") == candles_before
    failed = run(engine, run_id)
    assert (failed.status, failed.error) == ("failed", "line 7: conflicting duplicate")
    assert failed.inserted is None and failed.finished_at is not None


def test_finishing_wrongly_is_refused(engine):
    run_id = start_run(engine, KEY, URL)
    with pytest.raises(
        ValueError, match="status 'done' is not one of success, not_modified, failed"
    ):
        finish_run(engine, run_id, status="done")
    with pytest.raises(ValueError, match="a failed run needs its error message"):
        finish_run(engine, run_id, status="failed")
    finish_run(engine, run_id, status="not_modified")
    with pytest.raises(ValueError, match=f"run {run_id} has already finished with status 'not_mod"):
        finish_run(engine, run_id, status="success")
    with pytest.raises(LookupError, match="ingest run 999 does not exist"):
        finish_run(engine, 999, status="success")
    assert run(engine, run_id).status == "not_modified"


def test_parser_counts_are_recorded(engine):
    run_id = start_run(engine, KEY, URL)
    finish_run(
        engine,
        run_id,
        status="success",
        rows_read=2427,
        zero_rows=988,
        rejected_rows=2,
        superseded_rows=1,
        time_mismatches=4,
    )
    finished = run(engine, run_id)
    counts = (finished.zero_rows, finished.rejected_rows)
    assert counts + (finished.superseded_rows, finished.time_mismatches) == (988, 2, 1, 4)


@dataclass(frozen=True)
class BadRow:
    line: int
    time: dt.datetime | None
    reason: str
    raw: str


def test_rejects_are_stored_with_their_run_and_roll_back_with_the_candles(engine):
    day = dt.datetime(2020, 1, 2, tzinfo=dt.UTC)
    rejects = [
        BadRow(4, day, "high 98.0 is below low 99.0", "1577923200,2020-01-02,BTC/USD,1,98,99"),
        BadRow(7, None, "10 fields where the header has 9", "1,2,3,4,5,6,7,8,9,10"),
    ]
    run_id = start_run(engine, KEY, URL)
    with Session(engine) as session, session.begin():
        assert store_rejects(session, run_id, KEY, rejects) == 2
    stored = load_rejects(engine, series=KEY)
    assert [(r.ingest_run_id, r.line, r.time, r.reason, r.raw) for r in stored] == [
        (run_id, reject.line, reject.time, reject.reason, reject.raw) for reject in rejects
    ]
    assert load_rejects(engine, run_id=run_id + 1) == []

    other = start_run(engine, KEY, URL)
    with pytest.raises(RuntimeError), Session(engine) as session, session.begin():
        store_rejects(session, other, KEY, rejects)
        raise RuntimeError("the candles failed")
    assert load_rejects(engine, run_id=other) == []
