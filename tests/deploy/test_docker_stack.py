"""docker-compose.yml brought up for real by the commands of docs/deploy.md, then taken down
again by its ``down -v``.

The test runs the doc's marked blocks as written, in a copy of the checkout (see
tests/deploy/docker_stack.py): no registry is needed (deploy/images/build.sh builds the base
image and PostgreSQL from Debian's packages, ``up -d --build`` the project image on it), and
every service runs on the host network (docker-compose.host.yml) on free ports of 127.0.0.1,
set in `.env`. The daily deployment's run, with no
parameters as the schedule starts it, reads a small CryptoDataDownload-format file from a
local mirror (CDD_MIRROR_DIR mounted at /mirror, CDD_BASE_URL=/mirror/: docs/deploy.md); as
the series' first run, it warms up on the days before it (flows/warmup.py).
Then the CPU worker is killed in the middle of a backfill: its run must be Crashed within the
documented bound, resumed by itself and completed, with one forecast run per as_of
(docs/deploy.md, "Dead runs").

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

from cdd.series_key import SeriesKey
from tests.deploy.compose import ROOT
from tests.deploy.docker.engine import docker_engine
from tests.deploy.docker_stack import Stack, compose_stack
from tests.flows.cdd_files import make_candles, make_cdd_csv
from tests.system.stack import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SERIES = "Bitstamp_BTCUSD_d"
KEY = SeriesKey.parse(SERIES)
N_CANDLES = 80  # the newest is today's partial candle
TINY = {"units": 8, "max_epochs": 2, "patience": 1, "window": 5, "horizon": 3, "batch_size": 32}
SERVICES = ("postgres", "prefect-server", "migrate", "deploy", "worker-cpu")
# A dead run is Crashed at most 30 x 3 + 5 s after its last heartbeat (docs/deploy.md, "Dead
# runs": PREFECT_FLOWS_HEARTBEAT_FREQUENCY in docker-compose.yml, `within` of
# deploy/automations/crash-silent-runs.yaml, the server's proactive evaluation every 5 s), plus
# the seconds the server takes to apply the action and this test to poll.
CRASH_BOUND_S = 30 * 3 + 5
ACTION_SLACK_S = 20
# as_ofs, in days before yesterday: the daily run's first-run warm-up (flows/warmup.py, the
# default MIN_ROUNDS + horizon - 1 periods), the first backfill's, then the killed one's
WARMUP_DAYS = range(10 + TINY["horizon"] - 1, 0, -1)
BACKFILL_DAYS = (15, 14, 13)
CRASH_DAYS = range(50, 15, -1)


def test_the_compose_stack_serves_the_ui_runs_daily_and_backfill_and_goes_away(tmp_path, request):
    started = time.monotonic()
    seconds: dict[str, float] = {}
    log = tmp_path / "docker.log"
    today = pd.Timestamp.now(tz="UTC").normalize()
    yesterday = (today - pd.Timedelta(days=1)).date()
    candles = make_candles(
        KEY, N_CANDLES, start=(today - pd.Timedelta(days=N_CANDLES - 1)).tz_localize(None)
    )
    # a local mirror, as docs/deploy.md sets one up: the file in CDD_MIRROR_DIR (mounted at
    # /mirror in worker-cpu) and CDD_BASE_URL=/mirror/ in .env; nothing is downloaded
    mirror = tmp_path / "mirror"
    mirror.mkdir(mode=0o755)
    mirror.chmod(0o755)
    (mirror / KEY.file_name).write_bytes(make_cdd_csv(KEY, candles))
    (mirror / KEY.file_name).chmod(0o644)
    env = {"CDD_BASE_URL": "/mirror/", "CDD_MIRROR_DIR": str(mirror)}
    worker_env = {
        "CDDF_FORECASTER": json.dumps(TINY),
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    stack = None
    try:
        with docker_engine(tmp_path):
            with compose_stack(tmp_path, worker_env, log, env) as stack:
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
                    "start": str(yesterday - dt.timedelta(days=BACKFILL_DAYS[0])),
                    "end": str(yesterday - dt.timedelta(days=BACKFILL_DAYS[-1])),
                    "retrain_every": 7,
                }
                run = stack.run_deployment("backfill/backfill", backfill, deadline_s=600)
                assert run["state"]["type"] == "COMPLETED", failure(stack, run)
                seconds["backfill run"] = time.monotonic() - mark
                assert backfill_as_ofs(stack) == [
                    yesterday - dt.timedelta(days=n) for n in (*BACKFILL_DAYS, *WARMUP_DAYS)
                ]
                mark = time.monotonic()
                seconds["dead worker: crashed after"] = check_a_killed_worker_s_backfill_ends(
                    stack, yesterday
                )
                seconds["dead worker"] = time.monotonic() - mark
            assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}
    finally:
        seconds = (stack.seconds if stack else {}) | seconds
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


def check_a_killed_worker_s_backfill_ends(stack: Stack, yesterday: dt.date) -> float:
    """The issue's scenario: worker-cpu killed in the middle of a backfill and started again,
    nothing else touched. The run is Crashed within the bound, resumed once by the resume
    deployment, the resumed run completes, and every as_of has one forecast run. Returns the
    seconds from the kill to Crashed."""
    first, last = (yesterday - dt.timedelta(days=n) for n in (CRASH_DAYS[0], CRASH_DAYS[-1]))
    parameters = {"series": SERIES, "start": str(first), "end": str(last), "retrain_every": 7}
    stored_before = len(backfill_as_ofs(stack))
    run = stack.start_deployment("backfill/backfill", parameters)

    def mid_way() -> bool | None:
        flow_run = stack.flow_run(run["id"])
        state = flow_run["state"]["type"]
        assert state in {"SCHEDULED", "PENDING", "RUNNING"}, (
            f"the backfill ended {state} before its worker was killed: give it more as_ofs"
            + failure(stack, flow_run)
        )
        return True if state == "RUNNING" and len(backfill_as_ofs(stack)) > stored_before else None

    wait_for("the backfill to store its first as_of", mid_way, 600, stack.logs)
    # SIGKILL: the worker and the run's process die at once, as in a lost machine or an OOM kill
    stack.compose("kill", "worker-cpu")
    killed = time.monotonic()
    stack.compose("start", "worker-cpu")

    def ended() -> dict | None:
        flow_run = stack.flow_run(run["id"])
        return flow_run if flow_run["state"]["type"] != "RUNNING" else None

    crashed = wait_for(
        "the killed backfill run to be marked Crashed",
        ended,
        CRASH_BOUND_S + ACTION_SLACK_S,
        stack.logs,
    )
    crashed_after = time.monotonic() - killed
    assert crashed["state"]["type"] == "CRASHED", failure(stack, crashed)
    assert crashed["state"]["message"].startswith("No heartbeat for 90 s"), crashed["state"]

    resumes = {"tags": {"all_": [f"resume-of:{run['id']}"]}}
    (resumed,) = wait_for(
        "the crashed run to be resumed", lambda: stack.flow_runs(**resumes) or None, 300, stack.logs
    )
    assert resumed["parameters"] == crashed["parameters"] and "resume:1" in resumed["tags"]
    resumed = stack.wait_for_end(resumed["id"], "the resumed backfill run", 600)
    assert resumed["state"]["type"] == "COMPLETED", failure(stack, resumed)
    (resume,) = stack.deployment_runs("resume/resume")
    resume = stack.wait_for_end(resume["id"], "the resume run", 60)
    assert resume["state"]["type"] == "COMPLETED", failure(stack, resume)

    assert len(stack.flow_runs(**resumes)) == 1  # one new run, no duplicate
    # one forecast run per as_of: the as_ofs the dead run stored are not forecast again
    assert backfill_as_ofs(stack) == [
        yesterday - dt.timedelta(days=n) for n in (*CRASH_DAYS, *BACKFILL_DAYS, *WARMUP_DAYS)
    ]
    return crashed_after


def reader_engine(stack: Stack) -> sa.Engine:
    """The analysts' read-only login, forecast_reader, to database cddf."""
    password = stack.env["PG_READER_PASSWORD"]
    return sa.create_engine(
        f"postgresql+psycopg://forecast_reader:{password}@127.0.0.1:{stack.ports.postgres}/cddf"
    )


def check_the_rows_as_the_reader(stack: Stack, yesterday: dt.date) -> None:
    """Candles up to today's partial one, a daily forecast as of yesterday and its first run's
    warm-up before it: the freshest forecast of every target time from the warm-up's first."""
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
    found = {
        "candles": n_candles,
        "daily as_ofs": daily_as_ofs,
        "warm-up as_ofs": backfill_as_ofs(stack),
        "forecasts": n_forecasts,
    }
    expected = {
        "candles": N_CANDLES,
        "daily as_ofs": [yesterday],
        "warm-up as_ofs": [yesterday - dt.timedelta(days=n) for n in WARMUP_DAYS],
        "forecasts": len(WARMUP_DAYS) + TINY["horizon"],
    }
    assert found == expected, stack.logs()


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
