"""The real topology: a Prefect server, the repo's deployments, a cpu and a gpu process worker.

A ``daily`` run and two ``backfill`` runs are triggered through the API and waited for; the
rows land in a fresh PostgreSQL schema. The candles come from a CDD file served over HTTP.
"""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cdd.series_key import SeriesKey
from db.candles import upsert_candles
from db.engine import make_engine, migrate
from db.forecast_tables import Forecast, ForecastMetric, ForecastRun, ModelVersion
from db.models import Candle, IngestRun
from db.registry import versions_of_flow_run
from tests.flows.cdd_files import make_candles, make_cdd_csv
from tests.system.stack import prefect_server

pytestmark = [pytest.mark.system, pytest.mark.postgres]

SERIES = "Bitstamp_BTCUSD_d"
KEY = SeriesKey.parse(SERIES)
N_CANDLES = 60  # the newest is today's partial candle
TINY = {"units": 4, "max_epochs": 2, "patience": 1, "window": 5, "horizon": 3, "batch_size": 32}


def backfill_footprint(engine) -> tuple[list, int]:
    """The backfill forecast runs (id, as_of, model version) and their number of forecasts."""
    with Session(engine) as session:
        runs = session.execute(
            select(ForecastRun.id, ForecastRun.as_of, ForecastRun.model_version_id)
            .where(ForecastRun.kind == "backfill")
            .order_by(ForecastRun.as_of)
        ).all()
        n_forecasts = session.execute(
            select(func.count())
            .select_from(Forecast)
            .where(Forecast.run_id.in_([run.id for run in runs]))
        ).scalar_one()
    return runs, n_forecasts


def written_by(engine, flow_run_id) -> tuple[int, int]:
    """How many model versions and forecast runs a flow run registered."""
    with Session(engine) as session:
        return tuple(
            session.execute(
                select(func.count()).select_from(table).where(table.flow_run_id == str(flow_run_id))
            ).scalar_one()
            for table in (ModelVersion, ForecastRun)
        )


def test_daily_and_backfill_run_on_workers_of_a_real_server(tmp_path, postgres_url, httpserver):
    today = pd.Timestamp.now(tz="UTC").normalize()
    yesterday = (today - pd.Timedelta(days=1)).date()
    first = today - pd.Timedelta(days=N_CANDLES - 1)
    candles = make_candles(KEY, N_CANDLES, start=first.tz_localize(None))
    httpserver.expect_request(f"/cdd/{KEY.file_name}").respond_with_data(
        make_cdd_csv(KEY, candles), content_type="text/csv"
    )
    engine = make_engine(postgres_url)
    migrate(engine)
    # the history up to yesterday is there already, so the backfill can start with the daily run
    with Session(engine) as session, session.begin():
        upsert_candles(session, KEY, candles.iloc[:-1])
    service_env = {
        "CDDF_DATABASE_URL": postgres_url,
        "CDDF_CDD_BASE_URL": httpserver.url_for("/cdd/"),
        "CDDF_SERIES": SERIES,
        "CDDF_TRAIN_DEPLOYMENT": "train/train",
        "CDDF_FORECASTER": json.dumps(TINY),
        "CDDF_CHART_DIR": str(tmp_path / "charts"),
        # the daily run forecasts at once (no first-run warm-up, which would write backfill
        # runs of its own beside this backfill's: tests/flows/test_warmup.py and the docker
        # stack test run it on workers)
        "CDDF_WARMUP_PERIODS": "0",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    backfill = {
        "series": SERIES,
        "start": str(yesterday - dt.timedelta(days=4)),
        "end": str(yesterday - dt.timedelta(days=2)),
        "retrain_every": 7,
    }
    try:
        with prefect_server(tmp_path) as stack:
            stack.create_process_pools("cpu", "gpu")
            workers = {pool: stack.start_worker(pool, **service_env) for pool in ("cpu", "gpu")}
            output = stack.deploy_all()
            for name in ("daily/daily", "train/train", "backfill/backfill"):
                assert f"Deployment '{name}' successfully created" in output, output
            check_schedules_then_pause_the_daily_one(stack)
            for pool, worker in workers.items():
                stack.wait_for_worker(pool, worker)

            # the daily run and a backfill at once; the same backfill again once the first ended
            daily_id = stack.create_run("daily/daily")
            first_id = stack.create_run("backfill/backfill", backfill)
            first_backfill = stack.wait_for_flow_run(first_id, "the first backfill", 180)
            assert first_backfill.state.is_completed(), (
                f"backfill: {first_backfill.state}" + stack.logs()
            )
            done = backfill_footprint(engine)
            second_id = stack.create_run("backfill/backfill", backfill)
            daily = stack.wait_for_flow_run(daily_id, "the daily run", 180)
            assert daily.state.is_completed(), f"daily: {daily.state}" + stack.logs()
            second = stack.wait_for_flow_run(second_id, "the second backfill", 120)
            assert second.state.is_completed(), f"backfill again: {second.state}" + stack.logs()
            assert daily.work_pool_name == first_backfill.work_pool_name == "cpu"

            day_turned = pd.Timestamp.now(tz="UTC").normalize() > today
            check_the_daily_run(stack, engine, daily, yesterday, day_turned)
            runs, n_forecasts = done
            assert [pd.Timestamp(run.as_of).date() for run in runs] == [
                yesterday - dt.timedelta(days=n) for n in (4, 3, 2)
            ]
            assert written_by(engine, first_backfill.id) == (3, 3)  # versions, forecast runs
            assert n_forecasts == 3 * TINY["horizon"]
            assert written_by(engine, second.id) == (0, 0)  # the second run added nothing
            assert backfill_footprint(engine) == done
            with Session(engine) as session:
                scored = session.execute(
                    select(func.count())
                    .select_from(ForecastMetric)
                    .where(ForecastMetric.run_id.in_([run.id for run in runs]))
                ).scalar_one()
            assert scored > 0  # as of yesterday-4 every target is a final candle
    finally:
        engine.dispose()


def check_the_daily_run(stack, engine, daily, yesterday: dt.date, day_turned: bool) -> None:
    """Today's partial candle ingested over HTTP; one forecast as of yesterday.

    The workers read their own clock: when midnight UTC passed during the test, the served
    file's newest candle may have ended before the daily run read it; it is then final and the
    forecast is as of that day.
    """
    with Session(engine) as session:
        ingests = session.execute(select(IngestRun.status, IngestRun.inserted)).all()
        partial = (
            session.execute(select(Candle.time).where(Candle.is_final.is_(False))).scalars().all()
        )
        daily_runs = session.execute(
            select(ForecastRun.as_of, ForecastRun.flow_run_id).where(ForecastRun.kind == "daily")
        ).all()
    assert [tuple(row) for row in ingests] == [("success", 1)]
    today = yesterday + dt.timedelta(days=1)
    as_of = [pd.Timestamp(r.as_of).date() for r in daily_runs]
    if day_turned and as_of == [today]:
        assert partial == []
    else:
        assert [pd.Timestamp(t).date() for t in partial] == [today]
        assert as_of == [yesterday]
    # forecast in the daily run's own series task (not a subflow: flows/pipeline.py run_series)
    assert str(daily_runs[0].flow_run_id) == str(daily.id)
    check_training_ran_on_the_gpu_worker(stack, engine, daily)


def child_of(stack, flow_run_id):
    """The id of the flow run that started ``flow_run_id`` as a subflow or deployment run."""
    with stack.client() as client:
        child = client.read_flow_run(flow_run_id)
        return client.read_task_run(child.parent_task_run_id).flow_run_id


def check_schedules_then_pause_the_daily_one(stack) -> None:
    """The daily deployment runs at 00:15 UTC; train and backfill have no schedule.

    The daily schedule is then switched off so that no scheduled run joins this test.
    """
    with stack.client() as client:
        daily = client.read_deployment_by_name("daily/daily")
        assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in daily.schedules] == [
            ("15 0 * * *", "UTC", True)
        ]
        assert daily.work_pool_name == "cpu"
        for name, pool in (("train/train", "gpu"), ("backfill/backfill", "cpu")):
            deployment = client.read_deployment_by_name(name)
            assert deployment.schedules == [] and deployment.work_pool_name == pool
        for schedule in daily.schedules:
            client.update_deployment_schedule(daily.id, schedule.id, active=False)
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

        scheduled = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[daily.id]))
        )
        for run in scheduled:
            client.delete_flow_run(run.id)


def check_training_ran_on_the_gpu_worker(stack, engine, daily) -> None:
    """One ``train`` deployment run, a child of the daily run, picked up from the gpu pool."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with stack.client() as client:
        train = client.read_deployment_by_name("train/train")
        train_runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[train.id]))
        )
        assert len(train_runs) == 1, train_runs
        (train_run,) = train_runs
        assert train_run.work_pool_name == "gpu"
        assert train_run.state.is_completed()
    assert child_of(stack, train_run.id) == daily.id
    registered = versions_of_flow_run(engine, str(train_run.id))
    # a retrain, or a fine-tune of a model the concurrent backfill registered first
    assert [version.kind in ("retrain", "finetune") for version in registered] == [True]
    with Session(engine) as session:
        used = session.execute(
            select(ForecastRun.model_version_id).where(ForecastRun.kind == "daily")
        ).scalar_one()
    assert used == registered[0].id
