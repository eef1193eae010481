"""One series through the pipeline: ingest → (warm-up) → train or fine-tune → forecast → evaluate
→ chart. A series' first run warms up first (`flows.warmup`).

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
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

from db.engine import get_engine
from db.registry import ModelScope, VersionInfo, train_outcome
from flows.candles import final_candles, scope_candles
from flows.charts import chart_path, forecast_png, keep_newest_chart
from flows.dispatch import DispatchError, dispatch
from flows.evaluate import EvaluateOutcome, evaluate_series
from flows.forecast import ForecastOutcome, check_serves, forecast_series
from flows.ingest import IngestResult, ingest_series_task
from flows.leases import one_run_at_a_time
from flows.retry import DB_RETRY
from flows.train import TrainOutcome, model_scope, train_scope
from flows.versions import ServingModel, serving_model
from flows.warmup import WarmUp, warm_up
from forecaster import LSTMForecaster, forecast_problem
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
    warmup: WarmUp | None = None  # a first run's walk over its newest periods (flows.warmup)


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


def draw_chart(series: str, candles: pd.DataFrame, forecasts: pd.DataFrame) -> tuple[Path, bytes]:
    """Draw the last 90 candles with the forecast and its bands; write it to the chart dir,
    where only the series' newest chart is kept. A step of ``run_series``' task run, not a
    task run of its own (a failure is the series' ``chart`` step)."""
    png = forecast_png(candles, forecasts, series)
    folder = get_settings().chart_dir or DEFAULT_CHART_DIR
    path = chart_path(folder, series, pd.Timestamp(forecasts["as_of"].iloc[0]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    keep_newest_chart(folder, series)
    return path.resolve(), png


# no timeout_seconds: Prefect cannot interrupt a task in a worker thread (it warns so); the
# fit and fine-tune stop themselves at flows.train.TRAIN_TIMEOUT_S (train_scope)
@task(cache_policy=NO_CACHE, task_run_name="train {series}")
def train_here(
    series: str, group: list[str] | None, candles: dict[str, pd.DataFrame]
) -> tuple[TrainOutcome, LSTMForecaster]:
    """The train flow's work in this process on the ``candles`` the pipeline read, as a task
    run of the series (see ``run_series``); its outcome and the model of its version."""
    scope, config = model_scope(series, group)
    return train_scope(scope, config, "auto", candles)


def train(
    scope: ModelScope, candles: dict[str, pd.DataFrame]
) -> tuple[Trained, ServingModel | None]:
    """Train ``scope``'s model on ``candles`` in-process, or dispatch the configured train
    deployment and wait for it (a global model: once for its group); the model to forecast
    with when it is in this process (None: load it from the version's artifact)."""
    deployment = get_settings().train_deployment
    parameters = {"series": scope.members[0], "mode": "auto"}
    if scope.group is not None:
        parameters = {"series": scope.group, "mode": "auto", "group": list(scope.members)}
    if not deployment:
        outcome, model = train_here(parameters["series"], parameters.get("group"), candles)
        return Trained(outcome.action, outcome.version, "in-process"), ServingModel(model)
    # the train run reads its candles again: it runs in another process, perhaps another machine
    child = dispatch(
        deployment,
        parameters,
        key=f"train {scope.name}",
        timeout=get_settings().train_dispatch_timeout,
        via="CDDF_TRAIN_DEPLOYMENT",
        timeout_setting="CDDF_TRAIN_DISPATCH_TIMEOUT",
    )
    return trained_by(scope, str(child.id), deployment), None


@task(cache_policy=NO_CACHE, task_run_name="series {series}")
def run_series(
    series: str,
    source: str | None,
    trained: Trained | None = None,
    ingest: IngestResult | None = None,
    candles: pd.DataFrame | None = None,
    serving: ServingModel | None = None,
) -> SeriesOutcome:
    """One series through every step; the first failing step ends it (recorded, not raised).

    The series' final candles are read once, after its ingest, and handed to each step; the
    forecast uses the version the training step handed over and, trained here, its model.
    A series of a global model comes with its group's ``trained`` model (``serving``), its
    ``ingest`` result and ``candles`` (None: it has none to read, see ``run_group``): it only
    forecasts, evaluates and draws (or is skipped when too short).

    The train, forecast and evaluate flows' work runs here as this task run's (plain
    functions), not as subflows: a subflow costs about a second of orchestration (its flow
    run's creation, state changes and, in Prefect 3.9, the join of its heartbeat thread), more
    than a fine-tune day's whole work for a series (docs/benchmarks.md, many series). Their
    tasks still show, nested in this one; train keeps its timeout (``train_here``).
    """
    outcome = SeriesOutcome(series, ingest=ingest, trained=trained)
    step = "ingest"
    try:
        with ExitStack() as held:
            if trained is None:
                outcome.ingest = ingest_series_task(series, source)
                step = "train"  # one run at a time from here (a global group: run_group's)
                held.enter_context(one_run_at_a_time(series))
                candles = final_candles(series, None)
                step = "warm-up"  # a first run: walk forward over its newest periods first
                outcome.warmup = warm_up(series, candles)
                step = "train"
                outcome.trained, serving = train(ModelScope.of_series(series), {series: candles})
            else:
                if candles is None:  # none stored: fails here as it fails a series' own model
                    candles = final_candles(series, None)
                if problem := too_short(series, candles):
                    outcome.skipped = problem
                    get_run_logger().warning("%s: not forecast: %s", series, problem)
                    return outcome
            step = "forecast"
            version = outcome.trained.version
            check_serves(version, series, candles.index[-1].to_pydatetime())
            if serving is None:  # trained in another process: its model is in the registry
                serving = serving_model(version)
            outcome.forecast = forecast_series(series, candles, version, serving, "daily")
            step = "evaluate"
            outcome.evaluate = evaluate_series(series, candles)
        step = "chart"
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


def too_short(series: str, candles: pd.DataFrame) -> str | None:
    """Why a global model's series cannot be forecast yet (too little history), or None."""
    config = get_settings().series_config(series).forecaster
    return forecast_problem(candles.index, config)


def run_group(timeframe: str, members: list[str], source: str | None) -> list[SeriesOutcome]:
    """A global model's series: ingest each, read their final candles once, train the model
    once, then forecast each."""
    parallel = max(1, min(get_settings().max_parallel_series, len(members)))
    with ThreadPoolTaskRunner(max_workers=parallel) as runner:
        ingests = {
            key: runner.submit(ingest_series_task, {"key": key, "source": source})
            for key in members
        }
        outcomes = [ingested(key, future) for key, future in ingests.items()]
    scope = ModelScope.of_group(timeframe, members)
    with ExitStack() as held:
        try:  # one run of the group at a time trains it and forecasts its series
            held.enter_context(one_run_at_a_time(f"global-{timeframe}"))
            candles = scope_candles(scope, None)  # members without any are left out, named
            trained, serving = train(scope, candles)
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
                    {
                        "series": o.series,
                        "source": source,
                        "trained": trained,
                        "ingest": o.ingest,
                        "candles": candles.get(o.series),
                        "serving": serving,
                    },
                )
                for o in ready
            ]
            done = {outcome.series: outcome for outcome in (f.result() for f in futures)}
    return [done.get(outcome.series, outcome) for outcome in outcomes]


def ingested(series: str, ingest: PrefectFuture[IngestResult]) -> SeriesOutcome:
    """One member's ingest task run as its outcome (a failure recorded, not raised); its own
    task run, not one inside another (one task run fewer a series: Prefect's database)."""
    outcome = SeriesOutcome(series)
    try:
        outcome.ingest = ingest.result()
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
