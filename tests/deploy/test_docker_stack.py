"""docker-compose.yml brought up for real, as an operator does, then taken down again.

No registry is needed: the base image comes from Debian's packages (debootstrap) and
PostgreSQL from Debian's ``postgresql-15`` (see tests/deploy/docker_stack.py). Every service
runs on the host network on free ports of 127.0.0.1. The daily flow downloads a small
CryptoDataDownload-format file from an HTTP server of this test.

    sudo .venv/bin/pytest -m docker tests/deploy/test_docker_stack.py

Skipped with the reason where no Docker engine can be used (CDDF_REQUIRE_DOCKER=1: fails).
"""

from __future__ import annotations

import datetime as dt
import json
import time

import pandas as pd
import pytest
import requests
import sqlalchemy as sa
import yaml
from pytest_httpserver import HTTPServer

from cdd.series_key import SeriesKey
from tests.deploy.compose import ROOT
from tests.deploy.docker.engine import build_images, docker_engine
from tests.deploy.docker_stack import Stack, compose_stack
from tests.flows.cdd_files import make_candles, make_cdd_csv

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SERIES = "Bitstamp_BTCUSD_d"
KEY = SeriesKey.parse(SERIES)
N_CANDLES = 60  # the newest is today's partial candle
TINY = {"units": 8, "max_epochs": 2, "patience": 1, "window": 5, "horizon": 3, "batch_size": 32}
SERVICES = ("postgres", "prefect-server", "migrate", "deploy", "worker-cpu")


def test_the_compose_stack_serves_the_ui_runs_daily_and_backfill_and_goes_away(tmp_path, request):
    started = time.monotonic()
    seconds: dict[str, float] = {}
    log = tmp_path / "docker.log"
    today = pd.Timestamp.now(tz="UTC").normalize()
    yesterday = (today - pd.Timedelta(days=1)).date()
    candles = make_candles(
        KEY, N_CANDLES, start=(today - pd.Timedelta(days=N_CANDLES - 1)).tz_localize(None)
    )
    cdd = HTTPServer(host="127.0.0.1", port=0)
    cdd.expect_request(f"/cdd/{KEY.file_name}").respond_with_data(
        make_cdd_csv(KEY, candles), content_type="text/csv"
    )
    cdd.start()
    worker_env = {
        "CDDF_CDD_BASE_URL": cdd.url_for("/cdd/"),
        "CDDF_FORECASTER": json.dumps(TINY),
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    try:
        with docker_engine(tmp_path):
            seconds |= build_images(log)
            mark = time.monotonic()
            with compose_stack(tmp_path, worker_env, log) as stack:
                seconds["up"] = time.monotonic() - mark
                mark = time.monotonic()
                stack.wait_healthy("prefect-server", 180)
                stack.wait_healthy("worker-cpu", 180)
                seconds["healthy"] = time.monotonic() - mark
                check_the_ui_and_the_one_shot_steps(stack)

                mark = time.monotonic()
                daily = stack.run_deployment("daily/daily", {}, deadline_s=600)
                assert daily["state"]["type"] == "COMPLETED", failure(stack, daily)
                seconds["daily run"] = time.monotonic() - mark
                check_the_rows_as_the_reader(stack, yesterday)

                mark = time.monotonic()
                backfill = {
                    "series": SERIES,
                    "start": str(yesterday - dt.timedelta(days=4)),
                    "end": str(yesterday - dt.timedelta(days=2)),
                    "retrain_every": 7,
                }
                run = stack.run_deployment("backfill/backfill", backfill, deadline_s=600)
                assert run["state"]["type"] == "COMPLETED", failure(stack, run)
                seconds["backfill run"] = time.monotonic() - mark
                assert backfill_as_ofs(stack) == [
                    yesterday - dt.timedelta(days=n) for n in (4, 3, 2)
                ]
                mark = time.monotonic()
            seconds["down -v"] = time.monotonic() - mark
            assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}
    finally:
        cdd.clear()
        cdd.stop()
        seconds["total"] = time.monotonic() - started
        report(request, seconds)


def check_the_ui_and_the_one_shot_steps(stack: Stack) -> None:
    """The UI answers 200 at ``/``, the API is healthy; migrate and deploy exited 0."""
    base = f"http://127.0.0.1:{stack.ports.prefect}"
    ui = requests.get(base + "/", timeout=30)
    assert ui.status_code == 200 and "<html" in ui.text.lower(), (ui.status_code, ui.text[:300])
    assert requests.get(base + "/api/health", timeout=30).json() is True
    # basic auth is on: the API refuses a request without it
    assert requests.get(base + "/api/deployments/name/daily/daily", timeout=30).status_code == 401
    for service in ("migrate", "deploy"):
        state = stack.container(service)["State"]
        assert (state["Status"], state["ExitCode"]) == ("exited", 0), (
            f"{service}: {state}" + stack.logs()
        )
    deployments = stack.api("POST", "/deployments/filter", json={}).json()
    prefect_yaml = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    expected = sorted(deployment["name"] for deployment in prefect_yaml["deployments"])
    assert sorted(deployment["name"] for deployment in deployments) == expected
    schedules = stack.stop_schedules("daily/daily")
    assert [(s["schedule"]["cron"], s["active"]) for s in schedules] == [("15 0 * * *", True)]


def reader_engine(stack: Stack) -> sa.Engine:
    """The analysts' read-only login, forecast_reader, to database cddf."""
    password = stack.env["PG_READER_PASSWORD"]
    return sa.create_engine(
        f"postgresql+psycopg://forecast_reader:{password}@127.0.0.1:{stack.ports.postgres}/cddf"
    )


def check_the_rows_as_the_reader(stack: Stack, yesterday: dt.date) -> None:
    """Candles up to today's partial one and a daily forecast as of yesterday."""
    engine = reader_engine(stack)
    try:
        with engine.connect() as connection:
            n_candles = connection.execute(sa.text("SELECT count(*) FROM candles")).scalar_one()
            as_ofs = connection.execute(
                sa.text("SELECT as_of FROM forecast_runs WHERE kind = 'daily'")
            ).scalars()
            n_forecasts = connection.execute(
                sa.text("SELECT count(*) FROM latest_forecasts WHERE series = :s"), {"s": SERIES}
            ).scalar_one()
            daily_as_ofs = [pd.Timestamp(as_of).date() for as_of in as_ofs]
    finally:
        engine.dispose()
    assert n_candles == N_CANDLES
    assert daily_as_ofs == [yesterday]
    assert n_forecasts == TINY["horizon"]


def backfill_as_ofs(stack: Stack) -> list[dt.date]:
    engine = reader_engine(stack)
    try:
        with engine.connect() as connection:
            as_ofs = connection.execute(
                sa.text("SELECT as_of FROM forecast_runs WHERE kind = 'backfill' ORDER BY as_of")
            ).scalars()
            return [pd.Timestamp(as_of).date() for as_of in as_ofs]
    finally:
        engine.dispose()


def failure(stack: Stack, flow_run: dict) -> str:
    """What went wrong with a flow run: its state, its log lines, the containers' logs."""
    state = flow_run["state"]
    return (
        f"{flow_run['name']}: {state['type']} {state.get('message')}\n"
        + stack.run_logs(flow_run["id"])
        + stack.logs()
    )


def report(request, seconds: dict[str, float]) -> None:
    """The time of each phase, on the terminal (the test must fit CI's limit)."""
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    line = "docker stack test: " + ", ".join(f"{k} {v:.0f}s" for k, v in seconds.items())
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)
