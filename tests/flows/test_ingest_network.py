"""Ingest runs and the network: secrets masked, validators per URL, killed runs closed,
attempts counted."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from prefect import flow
from pytest_httpserver import HTTPServer
from sqlalchemy import Engine, select

from cdd.errors import CDDDownloadError, CDDNetworkError
from cdd.series_key import SeriesKey
from db.locks import current
from db.models import IngestRun
from flows.ingest import ingest_series, ingest_series_task
from tests.flows.cdd_files import make_candles, make_cdd_csv

KEY = SeriesKey.parse("Bitstamp_BTCUSD_d")
PATH = "/cdd/Bitstamp_BTCUSD_d.csv"
NOW = pd.Timestamp("2026-01-01", tz="UTC")
BODY = make_cdd_csv(KEY, make_candles(KEY, 30))
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def engine(service_database: str, httpserver: HTTPServer, monkeypatch) -> Iterator[Engine]:
    """The service's migrated database; CDD's base URL is the local test server."""
    from db.engine import get_engine, make_engine, migrate

    monkeypatch.setenv("CDDF_CDD_BASE_URL", httpserver.url_for("/cdd/"))
    monkeypatch.setenv("CDDF_HTTP_RETRIES", "1")
    monkeypatch.setenv("CDDF_HTTP_READ_TIMEOUT", "2")
    monkeypatch.setenv("CDDF_LOCK_LEASE_SECONDS", "1")
    setup = make_engine(service_database)
    migrate(setup)
    setup.dispose()
    yield get_engine()


def ingest_runs(engine: Engine) -> list[IngestRun]:
    with engine.connect() as connection:
        return list(connection.execute(select(IngestRun).order_by(IngestRun.id)))


def test_a_password_in_the_source_url_is_never_stored_or_shown(engine, httpserver):
    url = httpserver.url_for(PATH).replace("://", "://alice:s3cret@")
    httpserver.expect_oneshot_request(PATH).respond_with_data(b"no", status=403)
    with pytest.raises(CDDDownloadError) as raised:
        ingest_series(KEY.key, url, now=NOW)
    assert "s3cret" not in str(raised.value)
    httpserver.expect_request(PATH).respond_with_data(BODY)
    result = ingest_series(KEY.key, url, now=NOW)
    assert result.status == "success" and "s3cret" not in result.source
    runs = ingest_runs(engine)
    assert [run.status for run in runs] == ["failed", "success"]
    for run in runs:
        assert "s3cret" not in run.source_url and "alice:***@" in run.source_url
        assert "s3cret" not in (run.error or "")
    assert httpserver.log[-1][0].authorization.password == "s3cret"  # it was still sent


def test_validators_are_sent_only_to_the_url_that_gave_them(engine, httpserver):
    httpserver.expect_request("/a/Bitstamp_BTCUSD_d.csv").respond_with_data(
        BODY, headers={"ETag": '"from-a"'}
    )
    httpserver.expect_request("/b/Bitstamp_BTCUSD_d.csv").respond_with_data(BODY)
    ingest_series(KEY.key, httpserver.url_for("/a/"), now=NOW)
    ingest_series(KEY.key, httpserver.url_for("/b/"), now=NOW)
    ingest_series(KEY.key, httpserver.url_for("/a/"), now=NOW)
    sent = [(request.path, request.headers.get("If-None-Match")) for request, _ in httpserver.log]
    assert sent == [
        ("/a/Bitstamp_BTCUSD_d.csv", None),
        ("/b/Bitstamp_BTCUSD_d.csv", None),  # not the ETag of /a/
        ("/a/Bitstamp_BTCUSD_d.csv", '"from-a"'),
    ]


# an ingest that started its run, then is killed with kill -9 in the middle of its download
KILLED_INGEST = """
import sys, time
from db.engine import make_engine
from db.ingest_runs import start_run
print(start_run(make_engine(sys.argv[1]), "Bitstamp_BTCUSD_d", "http://cdd/x.csv"), flush=True)
time.sleep(600)
"""


def test_a_killed_ingest_run_is_closed_as_interrupted_by_the_next_run(
    engine, service_database, tmp_path
):
    source = tmp_path / "Bitstamp_BTCUSD_d.csv"
    source.write_bytes(BODY)
    killed = subprocess.Popen(
        [sys.executable, "-c", KILLED_INGEST, service_database],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        killed_run = int(killed.stdout.readline())
        ingest_series(KEY.key, str(source), now=NOW)  # while it lives, its run stays running
        assert {run.id: run.status for run in ingest_runs(engine)}[killed_run] == "running"
    finally:
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
    # its lease lapses at most CDDF_LOCK_LEASE_SECONDS (1 s) after its last renewal
    lease = current(engine, f"ingest-run-{killed_run}")
    time.sleep(max(0.0, (lease.expires_at - dt.datetime.now(dt.UTC)).total_seconds()) + 0.05)

    ingest_series(KEY.key, str(source), now=NOW)
    runs = {run.id: run for run in ingest_runs(engine)}
    assert runs[killed_run].status == "interrupted"
    assert runs[killed_run].finished_at is not None and "killed" in runs[killed_run].error
    assert [run.status for run in runs.values()].count("running") == 0
    assert current(engine, f"ingest-run-{killed_run}") is None


def test_one_retry_layer_and_the_error_says_the_true_number_of_requests(
    engine, httpserver, prefect_harness
):
    httpserver.expect_request(PATH).respond_with_data(b"busy", status=503)

    @flow
    def ingest_with_task_retries() -> None:
        ingest_series_task.with_options(retries=1, retry_delay_seconds=0)(KEY.key)

    state = ingest_with_task_retries(return_state=True)
    with pytest.raises(CDDNetworkError) as raised:
        state.result()
    message = str(raised.value)
    # CDDF_HTTP_RETRIES=1: the client's two requests; the task does not download again
    assert "still after 1 retries (2 requests)" in message
    assert "attempt" not in message and "tried" not in message
    assert len(httpserver.log) == 2
