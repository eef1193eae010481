"""A worker killed in the middle of a backfill, on a real Prefect server set up by
deploy/deploy.sh: the run is Crashed by the heartbeat automation within the documented bound,
resumed by deployment resume/resume, and the resumed run completes with one forecast run per
as_of — nothing touched by hand. tests/deploy/test_docker_stack.py does the same to the compose
stack; this one needs no Docker engine (a few minutes: it waits for three missed heartbeats).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterTags,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from cdd.series_key import SeriesKey
from db.candles import upsert_candles
from db.engine import make_engine, migrate
from db.forecast_tables import ForecastRun
from tests.flows.cdd_files import make_candles
from tests.system.stack import REPO, Process, prefect_server, wait_for

pytestmark = [pytest.mark.system, pytest.mark.postgres, pytest.mark.slow]

SERIES = "Bitstamp_BTCUSD_d"
KEY = SeriesKey.parse(SERIES)
N_CANDLES = 60
TINY = {"units": 4, "max_epochs": 2, "patience": 1, "window": 5, "horizon": 3, "batch_size": 32}
DAYS = range(35, 4, -1)  # the as_ofs, days before yesterday
HEARTBEAT_S = 30  # as docker-compose.yml sets it on every worker
CRASH_BOUND_S = HEARTBEAT_S * 3 + 5  # docs/deploy.md, "Dead runs"
SLACK_S = 25  # the server applying the automation's action, and this test's polling
VENV_BIN = Path(sys.executable).parent


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (a flow run starts in a session of its own), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_with_its_runs(worker: Process) -> None:
    """SIGKILL to the worker and every process it started, as a lost machine or a killed
    container: nothing gets to say goodbye to the server."""
    for pid in [worker.popen.pid, *descendants(worker.popen.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    worker.popen.wait(timeout=30)


def stored_as_ofs(engine) -> list[dt.date]:
    with Session(engine) as session:
        as_ofs = session.scalars(
            select(ForecastRun.as_of)
            .where(ForecastRun.kind == "backfill")
            .order_by(ForecastRun.as_of)
        )
        return [pd.Timestamp(as_of).date() for as_of in as_ofs]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_worker_s_backfill_is_crashed_resumed_and_completed(
    tmp_path, postgres_url, request
):
    today = pd.Timestamp.now(tz="UTC").normalize()
    yesterday = (today - pd.Timedelta(days=1)).date()
    candles = make_candles(
        KEY, N_CANDLES, start=(today - pd.Timedelta(days=N_CANDLES - 1)).tz_localize(None)
    )
    engine = make_engine(postgres_url)
    migrate(engine)
    with Session(engine) as session, session.begin():
        upsert_candles(session, KEY, candles.iloc[:-1])
    worker_env = {
        "CDDF_DATABASE_URL": postgres_url,
        "CDDF_SERIES": SERIES,
        "CDDF_FORECASTER": json.dumps(TINY),
        "CDDF_CHART_DIR": str(tmp_path / "charts"),
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    first, last = (yesterday - dt.timedelta(days=n) for n in (DAYS[0], DAYS[-1]))
    parameters = {"series": SERIES, "start": str(first), "end": str(last), "retrain_every": 7}

    with prefect_server(tmp_path) as stack:
        deployed = subprocess.run(
            ["sh", "deploy/deploy.sh"],
            cwd=REPO,
            env={**stack.env, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        worker = stack.start_worker("cpu", **worker_env)
        stack.wait_for_worker("cpu", worker)
        run_id = stack.create_run("backfill/backfill", parameters)

        def mid_way() -> bool | None:
            with stack.client() as client:
                state = client.read_flow_run(run_id).state
            assert not state.is_final(), f"the backfill ended {state} before the kill" + (
                stack.logs()
            )
            return True if state.is_running() and stored_as_ofs(engine) else None

        wait_for("the backfill to store its first as_of", mid_way, 600, stack.logs)
        kill_with_its_runs(worker)
        stack.processes.remove(worker)  # dead on purpose: not a failure of the stack
        killed = time.monotonic()
        stack.start_worker("cpu", name="system-test-cpu-again", **worker_env)

        def no_longer_running():
            with stack.client() as client:
                run = client.read_flow_run(run_id)
            return None if run.state.is_running() else run

        crashed = wait_for(
            "the killed run to be marked Crashed",
            no_longer_running,
            CRASH_BOUND_S + SLACK_S,
            stack.logs,
        )
        crashed_after = time.monotonic() - killed
        assert crashed.state.is_crashed(), f"{crashed.state}" + stack.logs()
        assert crashed.state.message.startswith("No heartbeat for 90 s"), crashed.state.message

        resumes = FlowRunFilter(tags=FlowRunFilterTags(all_=[f"resume-of:{run_id}"]))

        def resumed_runs():
            with stack.client() as client:
                return client.read_flow_runs(flow_run_filter=resumes) or None

        (resumed,) = wait_for("the crashed run to be resumed", resumed_runs, 300, stack.logs)
        assert resumed.parameters == crashed.parameters and "resume:1" in resumed.tags
        resumed = stack.wait_for_flow_run(resumed.id, "the resumed backfill", 600)
        assert resumed.state.is_completed(), f"{resumed.state}" + stack.logs()
        with stack.client() as client:
            resume_deployment = client.read_deployment_by_name("resume/resume").id
            by_resume = FlowRunFilterDeploymentId(any_=[resume_deployment])
            (resume,) = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(deployment_id=by_resume)
            )
            assert len(client.read_flow_runs(flow_run_filter=resumes)) == 1
        assert resume.state.is_completed(), f"{resume.state}" + stack.logs()

    assert stored_as_ofs(engine) == [yesterday - dt.timedelta(days=n) for n in DAYS]
    report(
        request, f"dead run: Crashed {crashed_after:.0f} s after the kill (bound {CRASH_BOUND_S} s)"
    )


def report(request, line: str) -> None:
    """A figure on the terminal, past pytest's capture."""
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)
