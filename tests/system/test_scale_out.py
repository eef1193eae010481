"""Scaling out is adding workers: with CDDF_SERIES_DEPLOYMENT=series/series one daily run hands
each series to a ``series`` flow run, and the two workers of the ``cpu`` pool both pick some up.

Each worker runs at most two flow runs at once (``--limit 2``); the daily run holds one slot of
one of them while it waits, so neither worker alone can take all four series at once.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from sqlalchemy import select
from sqlalchemy.orm import Session

from cdd.series_key import SeriesKey
from db.engine import make_engine, migrate
from db.forecast_tables import ForecastRun
from tests.flows.cdd_files import make_candles, make_cdd_csv
from tests.system.stack import prefect_server, wait_for
from tests.system.test_topology import TINY, check_schedules_then_pause_the_daily_one, child_of

pytestmark = [pytest.mark.system, pytest.mark.postgres, pytest.mark.slow]

SERIES = ["Bitstamp_BTCUSD_d", "Bitstamp_ETHUSD_d", "Bitstamp_LTCUSD_d", "Bitstamp_XRPUSD_d"]
WORKERS = ("system-test-cpu-a", "system-test-cpu-b")


def test_one_daily_run_spreads_its_series_over_both_workers(tmp_path, postgres_url, httpserver):
    first = pd.Timestamp.now(tz="UTC").normalize() - pd.Timedelta(days=59)
    for seed, series in enumerate(SERIES):
        key = SeriesKey.parse(series)
        candles = make_candles(key, 60, start=first.tz_localize(None), seed=seed)
        httpserver.expect_request(f"/cdd/{key.file_name}").respond_with_data(
            make_cdd_csv(key, candles), content_type="text/csv"
        )
    engine = make_engine(postgres_url)
    migrate(engine)
    service_env = {
        "CDDF_DATABASE_URL": postgres_url,
        "CDDF_CDD_BASE_URL": httpserver.url_for("/cdd/"),
        "CDDF_SERIES": ",".join(SERIES),
        "CDDF_SERIES_DEPLOYMENT": "series/series",
        "CDDF_FORECASTER": json.dumps(TINY),
        "CDDF_CHART_DIR": str(tmp_path / "charts"),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    try:
        with prefect_server(tmp_path, deadline_s=240) as stack:  # a loaded machine is slow
            stack.create_process_pools("cpu", "gpu")
            workers = [stack.start_worker("cpu", name=n, limit=2, **service_env) for n in WORKERS]
            output = stack.deploy_all()
            assert "Deployment 'series/series' successfully created" in output, output
            check_schedules_then_pause_the_daily_one(stack)
            wait_for_workers(stack, workers)

            daily = stack.run_and_wait("daily/daily", deadline_s=600)
            assert daily.state.is_completed(), f"daily: {daily.state}" + stack.logs()

            children = series_runs(stack)
            assert sorted(child.parameters["series"] for child in children) == sorted(SERIES)
            for child in children:
                assert child.state.is_completed(), f"{child.name}: {child.state}"
                assert child.work_pool_name == "cpu" and child_of(stack, child.id) == daily.id
            picked_by = {c.parameters["series"]: ran_by(workers, c) for c in children}
            assert set(picked_by.values()) == set(WORKERS), picked_by
            assert len({child.infrastructure_pid for child in children}) == len(SERIES)

            with Session(engine) as session:
                forecast = session.execute(
                    select(ForecastRun.series).where(ForecastRun.kind == "daily")
                ).scalars()
                assert sorted(forecast) == sorted(SERIES)
    finally:
        engine.dispose()


def wait_for_workers(stack, workers) -> None:
    """Until both named workers of pool cpu have sent a heartbeat."""

    def online() -> bool | None:
        for worker in workers:
            worker.check_running()
        with stack.client() as client:
            names = {worker.name for worker in client.read_workers_for_work_pool("cpu")}
        return True if names >= set(WORKERS) else None

    wait_for("both cpu workers", online, 90, stack.logs)


def series_runs(stack) -> list:
    with stack.client() as client:
        deployment = client.read_deployment_by_name("series/series")
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        )


def ran_by(workers, child) -> str:
    """The worker that started ``child``: both may try, the server lets one of them submit it."""
    tried, refused = (
        f"{what} flow run '{child.id}'" for what in ("submitting", "Aborted submission of")
    )
    logs = {w.name.removeprefix("worker-"): w.log.read_text() for w in workers}
    names = [name for name, log in logs.items() if tried in log and refused not in log]
    assert len(names) == 1, (child.name, names)
    return names[0]
