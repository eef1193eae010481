"""Prefect's footprint of a daily run (issue 26): task runs and log rows per series counted and
bounded, no artifact that grows with the number of series, a short run name, one chart file
per series."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from prefect import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.events.clients import AssertingPassthroughEventsClient
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker

from cdd.series_key import SeriesKey
from flows.daily import daily_flow
from flows.summary import series_artifact_key
from tests.flows.cdd_files import make_candles, make_cdd_csv
from tests.flows.forecast_service import ALL_CANDLES, HORIZON, KEY, N_CANDLES
from tests.flows.test_charts import images_in
from tests.flows.test_daily import artifacts_of, service  # noqa: F401 (service: a fixture)

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
ETH = SeriesKey.parse("Bitstamp_ETHUSD_d")
ETH_CANDLES = make_candles(ETH, N_CANDLES + 40, start="2020-01-01", seed=1)
# A fine-tune day of a series with its own model, as task runs: the series, its ingest, its
# final candles, its training (train, find_latest, load_model, recent_skills, finetune,
# register, record_outcome), the forecast's store_forecasts (make_forecasts is no task run)
# and the evaluation. Before issue 26: 18 (find_unscored, find_revised, score_runs,
# score_version, series_recent_skill, make_forecasts and draw_chart instead of evaluate).
TASK_RUNS_PER_SERIES = 12
TASK_RUNS_PER_RUN = 1  # the weights' prune
# log rows of that day per series: the ingest's, the training's decision, fine-tune and
# registration, the served forecast's two, the scores'; before issue 26 every task run's
# "Finished in state Completed()" too (18 more)
LOG_ROWS_PER_SERIES = 7
LOG_ROWS_PER_RUN = 4  # the flow run's beginning, its series, the weights' prune, its end
MAX_ARTIFACT_BYTES = 200_000  # issue 26's target for any artifact at any number of series


@pytest.fixture
def two_series(httpserver, monkeypatch):
    """CryptoDataDownload's stand-in serving BTC and ETH: ``two_series(n)``, n candles each."""
    monkeypatch.setenv("CDDF_CDD_BASE_URL", httpserver.url_for("/cdd/"))

    def serve(n: int) -> None:
        httpserver.clear()
        for key, candles in ((KEY, ALL_CANDLES), (ETH, ETH_CANDLES)):
            body = make_cdd_csv(key, candles.iloc[:n])
            httpserver.expect_request(f"/cdd/{key}.csv").respond_with_data(body)

    return serve


@pytest.fixture
def task_run_events(monkeypatch):
    """Every event this process sends to Prefect, recorded as it is sent: the task runs of a
    run are counted from its own events, not from the server's asynchronous recorder."""
    worker = EventsWorker.instance(AssertingPassthroughEventsClient)
    monkeypatch.setattr(EventsWorker, "instance", lambda *_: worker)
    yield worker
    worker.drain()


def task_runs_of(worker: EventsWorker, flow_run_id) -> Counter[str]:
    """The task runs of ``flow_run_id`` that completed, counted by task name."""
    worker.drain()
    completed: dict[str, str] = {}
    for client in AssertingPassthroughEventsClient.all:
        for event in client.events:
            if event.event != "prefect.task-run.Completed":
                continue
            related = {r.id for r in event.related}
            if f"prefect.flow-run.{flow_run_id}" in related:
                completed[event.resource.id] = event.resource.get("prefect.resource.name", "")
    # "series Bitstamp_BTCUSD_d" (a task_run_name) or "find_latest-3bf" (the task's name)
    return Counter(re.sub(r"-[0-9a-f]{3}$", "", name.split(" ")[0]) for name in completed.values())


def logs_of(flow_run_id) -> list[str]:
    APILogWorker.drain_all()  # the log rows are written by the API as they arrive
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200
        )
    return [log.message for log in logs]


@SQLITE_ONLY
@pytest.mark.usefixtures("service")  # test_daily's: the service database, Prefect, the charts
def test_a_fine_tune_day_of_two_series_is_few_task_runs_and_log_rows(
    two_series, task_run_events, tmp_path
):
    two_series(N_CANDLES + 5)
    daily_flow(["Bitstamp_BTCUSD_d", "Bitstamp_ETHUSD_d"])
    two_series(N_CANDLES + 5 + HORIZON)  # the next days: a fine-tune and a run to score
    state = daily_flow(["Bitstamp_BTCUSD_d", "Bitstamp_ETHUSD_d"], return_state=True)
    assert state.is_completed()
    outcomes = state.result()
    # a fine-tune, or a retrain on a series' retrain day (one task run fewer: fit for
    # load_model and finetune)
    assert {o.trained.action for o in outcomes} <= {"finetune", "retrain"}
    assert [o.evaluate.runs_scored for o in outcomes] == [1, 1]
    run_id = state.state_details.flow_run_id

    task_runs = task_runs_of(task_run_events, run_id)
    assert sum(task_runs.values()) <= 2 * TASK_RUNS_PER_SERIES + TASK_RUNS_PER_RUN, task_runs
    assert task_runs["evaluate"] == 2 and task_runs["series"] == 2, task_runs
    assert "draw_chart" not in task_runs and "find_unscored" not in task_runs
    logs = logs_of(run_id)
    assert len(logs) <= 2 * LOG_ROWS_PER_SERIES + LOG_ROWS_PER_RUN, "\n".join(logs)
    assert logs.count("Finished in state Completed()") == 1  # the flow run's, no task run's

    artifacts = artifacts_of(run_id)
    # the summary, then per series its chart and forecasts, and its served weights (the
    # forecast step's, flows/forecast.py): none grows with the number of series
    # one artifact per series a day: the forecast step's weights are in series-<key>
    assert set(artifacts) == {"daily-summary"} | {
        f"series-{o.series.lower().replace('_', '-')}" for o in outcomes
    }
    assert all(
        "| horizon | LSTM in" in artifacts[f"series-{o.series.lower().replace('_', '-')}"]
        for o in outcomes
    )
    assert max(len(data.encode()) for data in artifacts.values()) < MAX_ARTIFACT_BYTES
    assert images_in(artifacts["daily-summary"]) == {}  # the charts are the series' own
    for o in outcomes:
        assert images_in(artifacts[series_artifact_key(o.series)]) == {
            f"{o.series} chart": o.chart.read_bytes()
        }
    # one chart file per series: the first day's are gone
    charts = sorted(path.name for path in (tmp_path / "charts").iterdir())
    assert charts == sorted(o.chart.name for o in outcomes)
