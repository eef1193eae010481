"""No endless wait on the real topology: with CDDF_TRAIN_DEPLOYMENT set and no worker on the
``gpu`` pool, a daily run fails its series within the dispatch timeout, names the pool and how
to start a worker, and cancels the train run it left behind."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

from cdd.series_key import SeriesKey
from db.engine import make_engine, migrate
from tests.flows.cdd_files import make_candles, make_cdd_csv
from tests.system.stack import prefect_server
from tests.system.test_topology import TINY, check_schedules_then_pause_the_daily_one, child_of

pytestmark = [pytest.mark.system, pytest.mark.postgres, pytest.mark.slow]

SERIES = "Bitstamp_BTCUSD_d"
KEY = SeriesKey.parse(SERIES)
TIMEOUT_S = 15


def test_no_gpu_worker_fails_the_series_in_time_naming_the_pool(tmp_path, postgres_url, httpserver):
    first = pd.Timestamp.now(tz="UTC").normalize() - pd.Timedelta(days=59)
    candles = make_candles(KEY, 60, start=first.tz_localize(None))
    httpserver.expect_request(f"/cdd/{KEY.file_name}").respond_with_data(
        make_cdd_csv(KEY, candles), content_type="text/csv"
    )
    engine = make_engine(postgres_url)
    migrate(engine)
    engine.dispose()
    service_env = {
        "CDDF_DATABASE_URL": postgres_url,
        "CDDF_CDD_BASE_URL": httpserver.url_for("/cdd/"),
        "CDDF_SERIES": SERIES,
        "CDDF_TRAIN_DEPLOYMENT": "train/train",
        "CDDF_TRAIN_DISPATCH_TIMEOUT": str(TIMEOUT_S),
        "CDDF_FORECASTER": json.dumps(TINY),
        "CDDF_CHART_DIR": str(tmp_path / "charts"),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    with prefect_server(tmp_path, deadline_s=240) as stack:  # a loaded machine is slow
        stack.create_process_pools("cpu", "gpu")
        worker = stack.start_worker("cpu", **service_env)  # and none on gpu
        stack.deploy_all()
        check_schedules_then_pause_the_daily_one(stack)
        stack.wait_for_worker("cpu", worker)

        daily = stack.run_and_wait("daily/daily", deadline_s=240)
        assert daily.state.is_failed(), f"daily: {daily.state}" + stack.logs()
        message = daily.state.message
        assert f"1 of 1 series failed: {SERIES} at train: DispatchTimeout" in message, message
        assert f"did not end within {TIMEOUT_S} s (CDDF_TRAIN_DISPATCH_TIMEOUT)" in message
        assert "no worker polls work pool 'gpu'" in message
        assert "`prefect worker start --pool gpu`" in message

        with stack.client() as client:
            train = client.read_deployment_by_name("train/train")
            (train_run,) = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[train.id]))
            )
        assert train_run.state.is_cancelled()
        assert train_run.run_count == 0 and train_run.infrastructure_pid is None  # never ran
        assert child_of(stack, train_run.id) == daily.id
        assert f"({train_run.id})" in message
        # the wait ended with the timeout: the run took the ingest, the wait and a little more
        waited = (daily.end_time - daily.start_time).total_seconds()
        assert TIMEOUT_S <= waited < TIMEOUT_S + 90, waited
