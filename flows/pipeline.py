"""One series through the pipeline: ingest → train or fine-tune → forecast → evaluate → chart.

    run_series("Bitstamp_BTCUSD_d", source=None)   # a task run: its outcome, never raised
    run_group("d", ["Bitstamp_BTCUSD_d", "Bitstamp_ETHUSD_d"], source=None)  # a global model

The daily flow fans series out to these (`flows/daily.py`), and the series flow runs one
(`flows/series.py`). A series' own model and a timeframe's global model are trained alike
(`train`, on a `ModelScope`); the forecast uses the version the training step handed over: a
dispatched train run's is the outcome it recorded under its flow run id
(`db.registry.train_outcome`), never "the latest".
"""

# No `from __future__ import annotations` here: a served deployment may pickle the flow
# function, and its parameters' annotations must travel as objects, not as names.

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from db.engine import get_engine
from db.registry import ModelScope, VersionInfo, train_outcome
from flows.charts import forecast_png
from flows.config import DB_RETRY
from flows.dispatch import DispatchError, dispatch
from flows.evaluate import EvaluateOutcome, evaluate_flow
from flows.forecast import ForecastOutcome, forecast_flow
from flows.ingest import IngestResult, ingest_series_task
from flows.tasks import final_candles, one_run_at_a_time
from flows.train import TRAIN_TIMEOUT_S, TrainOutcome, train_flow
from forecaster import forecast_problem
from settings import get_settings

DEFAULT_CHART_DIR = Path("cddf-data/charts")


@dataclass(frozen=True)
class Trained:
    """The model a series forecasts with after the training step."""

    action: str  # retrain, finetune or keep
    version: VersionInfo
    where: str  # in-process, or the deployment's flow run


@dataclass
class SeriesOutcome:
    series: str
    failed_step: str | None = None
    error: BaseException | None = None
    ingest: IngestResult | None = None
    trained: Trained | None = None
    forecast: ForecastOutcome | None = None
    evaluate: EvaluateOutcome | None = None
    chart: Path | None = field(default=None)  # the PNG file in CDDF_CHART_DIR
    chart_png: bytes | None = field(default=None, repr=False)  # its bytes, for the summary
    flow_run: str | None = None  # the series deployment's run that did the work, if dispatched
    skipped: str | None = None  # why a global model's series was not forecast (too short)


@task(cache_policy=NO_CACHE, **DB_RETRY)
def trained_by(scope: ModelScope, child_run_id: str, deployment: str) -> Trained:
    """The version a train deployment's flow run registered or kept: the outcome it recorded,
    never "the latest" (another run may have registered a newer one since)."""
    recorded = train_outcome(get_engine(), child_run_id, scope)
    if recorded is None:
        raise LookupError(
            f"{scope.label}: the {deployment} run {child_run_id} recorded no training outcome: "
            "does its worker run an older release? Deploy this one to the train work pool"
        )
    action, version = recorded
    return Trained(action, version, f"{deployment} run {child_run_id}")


@task(cache_policy=NO_CACHE)
def draw_chart(series: str, candles: pd.DataFrame, forecasts: pd.DataFrame) -> tuple[Path, bytes]:
    """Draw the last 90 candles with the forecast and its bands; write it to the chart dir."""
    png = forecast_png(candles, forecasts, series)
    folder = get_settings().chart_dir or DEFAULT_CHART_DIR
    as_of = pd.Timestamp(forecasts["as_of"].iloc[0])
    path = folder / f"{series}_{as_of:%Y%m%d_%H%M}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path.resolve(), png


@task(cache_policy=NO_CACHE, timeout_seconds=TRAIN_TIMEOUT_S, task_run_name="train {series}")
def train_here(series: str, group: list[str] | None = None) -> TrainOutcome:
    """The train flow's work in this process, as a task run of the series (see ``run_series``)."""
    return train_flow.fn(series, mode="auto", group=group)


def train(scope: ModelScope) -> Trained:
    """Train ``scope``'s model in-process, or dispatch the configured train deployment and
    wait for it (a global model: once for its group)."""
    deployment = get_settings().train_deployment
    parameters = {"series": scope.members[0], "mode": "auto"}
    if scope.group is not None:
        parameters = {"series": scope.group, "mode": "auto", "group": list(scope.members)}
    if not deployment:
        outcome = train_here(parameters["series"], parameters.get("group"))
        return Trained(outcome.action, outcome.version, "in-process")
    child = dispatch(
        deployment,
        parameters,
        key=f"train {scope.name}",
        timeout=get_settings().train_dispatch_timeout,
        via="CDDF_TRAIN_DEPLOYMENT",
        timeout_setting="CDDF_TRAIN_DISPATCH_TIMEOUT",
    )
    return trained_by(scope, str(child.id), deployment)


@task(cache_policy=NO_CACHE, task_run_name="series {series}")
def run_series(
    series: str,
    source: str | None,
    trained: Trained | None = None,
    ingest: IngestResult | None = None,
) -> SeriesOutcome:
    """One series through every step; the first failing step ends it (recorded, not raised).

    A series of a global model comes with its group's ``trained`` model and ``ingest``
    result: it only forecasts, evaluates and draws (or is skipped when too short).

    The train, forecast and evaluate flows run here as this task run's work (their ``.fn``),
    not as subflows: a subflow costs about a second of orchestration (its flow run's creation,
    state changes and, in Prefect 3.9, the join of its heartbeat thread), more than a fine-tune
    day's whole work for a series (docs/benchmarks.md, many series). Their tasks still show,
    nested in this one; train keeps its timeout (``train_here``).
    """
    outcome = SeriesOutcome(series, ingest=ingest, trained=trained)
    step = "ingest"
    try:
        with ExitStack() as held:
            if trained is None:
                outcome.ingest = ingest_series_task(series, source)
                step = "train"  # one run at a time from here (a global group: run_group's)
                held.enter_context(one_run_at_a_time(series))
                outcome.trained = train(ModelScope.of_series(series))
            elif problem := too_short(series):
                outcome.skipped = problem
                get_run_logger().warning("%s: not forecast: %s", series, problem)
                return outcome
            step = "forecast"
            outcome.forecast = forecast_flow.fn(series, version_id=outcome.trained.version.id)
            step = "evaluate"
            outcome.evaluate = evaluate_flow.fn(series)
        step = "chart"
        candles = final_candles(series, None)
        outcome.chart, outcome.chart_png = draw_chart(series, candles, outcome.forecast.forecasts)
    except Exception as error:  # isolate the series: record and log, the others go on
        outcome.failed_step, outcome.error = step, error
        get_run_logger().error("%s: %s failed: %s: %s", series, step, type(error).__name__, error)
    return outcome


@task(cache_policy=NO_CACHE, task_run_name="dispatch {series}")
def dispatch_series(series: str, source: str | None) -> SeriesOutcome:
    """One series as a flow run of ``CDDF_SERIES_DEPLOYMENT``; waits for it (failure recorded)."""
    settings = get_settings()
    outcome = SeriesOutcome(series)
    try:
        child = dispatch(
            settings.series_deployment,
            {"series": series, "source": source},
            key=f"series {series}",
            timeout=settings.series_dispatch_timeout,
            via="CDDF_SERIES_DEPLOYMENT",
            timeout_setting="CDDF_SERIES_DISPATCH_TIMEOUT",
        )
        outcome.flow_run = f"{child.name} ({child.id})"
    except DispatchError as error:
        outcome.failed_step, outcome.error = "series run", error
        get_run_logger().error("%s: %s", series, error)
    return outcome


def too_short(series: str) -> str | None:
    """Why a global model's series cannot be forecast yet (too little history), or None."""
    config = get_settings().series_config(series).forecaster
    return forecast_problem(final_candles(series, None).index, config)


def run_group(timeframe: str, members: list[str], source: str | None) -> list[SeriesOutcome]:
    """A global model's series: ingest each, train the model once, then forecast each."""
    parallel = max(1, min(get_settings().max_parallel_series, len(members)))
    with ThreadPoolTaskRunner(max_workers=parallel) as runner:
        ingests = [runner.submit(ingest_step, {"series": key, "source": source}) for key in members]
        outcomes = [future.result() for future in ingests]
    with ExitStack() as held:
        try:  # one run of the group at a time trains it and forecasts its series
            held.enter_context(one_run_at_a_time(f"global-{timeframe}"))
            trained = train(ModelScope.of_group(timeframe, members))
        except Exception as error:  # every series of the group fails at its training
            get_run_logger().error("global %s model: training failed: %s", timeframe, error)
            for outcome in outcomes:
                if outcome.failed_step is None:
                    outcome.failed_step, outcome.error = "train", error
            return outcomes
        ready = [o for o in outcomes if o.failed_step is None]
        with ThreadPoolTaskRunner(max_workers=parallel) as runner:
            futures = [
                runner.submit(
                    run_series,
                    {"series": o.series, "source": source, "trained": trained, "ingest": o.ingest},
                )
                for o in ready
            ]
            done = {outcome.series: outcome for outcome in (f.result() for f in futures)}
    return [done.get(outcome.series, outcome) for outcome in outcomes]


@task(cache_policy=NO_CACHE, task_run_name="ingest {series}")
def ingest_step(series: str, source: str | None) -> SeriesOutcome:
    """Ingest one series of a global model (a failure is recorded, not raised)."""
    outcome = SeriesOutcome(series)
    try:
        outcome.ingest = ingest_series_task(series, source)
    except Exception as error:
        outcome.failed_step, outcome.error = "ingest", error
        get_run_logger().error("%s: ingest failed: %s: %s", series, type(error).__name__, error)
    return outcome


def run_side_by_side(keys: list[str], source: str | None) -> list[SeriesOutcome]:
    """Run every series, at most ``CDDF_MAX_PARALLEL_SERIES`` at once in this process; every
    one at once when training or whole series go to a deployment (its work pool's workers and
    concurrency limits bound them)."""
    settings = get_settings()
    step = dispatch_series if settings.series_deployment else run_series
    elsewhere = settings.series_deployment or settings.train_deployment
    parallel = len(keys) if elsewhere else settings.max_parallel_series
    with ThreadPoolTaskRunner(max_workers=max(1, min(parallel, len(keys)))) as runner:
        futures = [runner.submit(step, {"series": key, "source": source}) for key in keys]
        return [future.result() for future in futures]
