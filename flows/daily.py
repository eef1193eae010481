"""The daily pipeline: for each series, ingest → train or fine-tune → forecast → evaluate.

    daily_flow()                                   # every CDDF_SERIES
    daily_flow(["Bitstamp_BTCUSD_d"], source="./Bitstamp_BTCUSD_d.csv")

The settings are validated before any work (a bad one fails the run and names it). Series run
side by side, at most ``CDDF_MAX_PARALLEL_SERIES`` at once (a Prefect thread-pool task
runner; one task run per series); a series that fails stops there and the others go on; the
run ends failed when any series failed and names them. Training runs in-process unless
``CDDF_TRAIN_DEPLOYMENT`` names a deployment (such as ``train/train`` on the ``gpu`` pool):
then every series' train run is dispatched at once and the pool's concurrency limit decides how
many run together. With ``CDDF_SERIES_DEPLOYMENT`` (such as ``series/series`` on the ``cpu``
pool) each series instead runs as a flow run of that deployment (`flows/series.py`), all
dispatched at once, so that every worker of the pool can pick some up. No wait is endless: a
dispatched run that has not ended within ``CDDF_TRAIN_DISPATCH_TIMEOUT`` /
``CDDF_SERIES_DISPATCH_TIMEOUT`` is cancelled and its series fails naming the work pool and how
to start a worker (`flows/dispatch.py`); the flow itself times out after ``DAILY_TIMEOUT_S``.
The forecast uses the version the training step handed over: a dispatched train run's is the
outcome it recorded under its flow run id (`db.registry.train_outcome`), never "the latest"
(another run may have registered a newer one meanwhile). A series' own model and a timeframe's
global model are trained alike (`train`, on a `ModelScope`). Each series' steps
are `flows/pipeline.py`'s. Artifacts (`flows/summary.py`): a
markdown summary with a chart per series (a PNG embedded as a ``data:`` image, so that the
Prefect UI shows it on any machine; also written to ``CDDF_CHART_DIR``) and a table of the
new forecasts.
"""

# No `from __future__ import annotations` here: a served deployment may pickle the flow
# function, and its parameters' annotations must travel as objects, not as names.

from prefect import flow
from prefect.runtime import flow_run

from cdd.client import refuse_credentials
from flows.ingest import SeriesEntry, plan_series
from flows.pipeline import SeriesOutcome, run_group, run_side_by_side
from flows.retention import prune_after_run
from flows.run_logs import quiet_completed_task_runs
from flows.scopes import global_groups
from flows.summary import publish
from settings import SettingsError, get_settings

# a run must end before the next day's is due (docs/deploy.md: the timeouts); the benchmarks'
# N = 8 daily run took minutes (docs/benchmarks.md)
DAILY_TIMEOUT_S = 23 * 3600


class DailyRunFailed(RuntimeError):
    """One or more series failed; ``outcomes`` holds every series' outcome."""

    def __init__(self, message: str, outcomes: list[SeriesOutcome]) -> None:
        super().__init__(message)
        self.outcomes = outcomes


def _run_name() -> str:
    series = flow_run.parameters.get("series")
    if not series:
        try:
            series = get_settings().series
        except SettingsError:  # the run itself fails on it and says why
            return "daily (invalid settings)"
    return run_name(series)


RUN_NAME_KEYS = 3  # a run's name lists this many series keys, then counts the others


def run_name(series: list[str]) -> str:
    """The daily run's name: a few keys and the count, short at any number of series.

    >>> run_name(["Bitstamp_BTCUSD_d"])
    'daily Bitstamp_BTCUSD_d'
    >>> run_name([f"Binance_C{i}USDT_d" for i in range(96)])
    'daily Binance_C0USDT_d,Binance_C1USDT_d,Binance_C2USDT_d +93 (96 series)'
    """
    if len(series) <= RUN_NAME_KEYS:
        return f"daily {','.join(series)}"
    shown = ",".join(series[:RUN_NAME_KEYS])
    return f"daily {shown} +{len(series) - RUN_NAME_KEYS} ({len(series)} series)"


@flow(name="daily", flow_run_name=_run_name, timeout_seconds=DAILY_TIMEOUT_S)
def daily_flow(
    series: list[SeriesEntry] | None = None, source: str | None = None
) -> list[SeriesOutcome]:
    """Ingest, train or fine-tune, forecast and evaluate each series (default CDDF_SERIES).

    ``series`` (keys or patterns) are parsed where they enter (a deployment's texts by
    Prefect's parameter validation; the CLI's plan, already `SeriesKey`, taken as it is) and
    handed on as `SeriesKey`.
    """
    settings = get_settings()  # a bad setting fails here, before any work
    quiet_completed_task_runs()  # a line per task run is noise at hundreds of series
    refuse_credentials(source)  # a run made elsewhere (a deployment's) stops at once
    # a deployment's run is planned here; a CLI run's plan (SeriesKeys, no pattern left) is
    # only checked again: nothing parsed, no catalogue read (the CLI planned it to fail before
    # Prefect's API starts)
    keys = plan_series(series, source)
    for key in keys:
        settings.series_config(key)  # so does a series' bad model settings
    groups = global_groups(keys)
    grouped = {key for members in groups.values() for key in members}
    outcomes = run_side_by_side([key for key in keys if key not in grouped], source)
    for timeframe, members in groups.items():
        outcomes += run_group(timeframe, members, source)
    outcomes.sort(key=lambda outcome: keys.index(outcome.series))
    publish(outcomes)
    prune_after_run()  # the weights no model can serve or roll back to (db/retention.py)
    failed = [outcome for outcome in outcomes if outcome.failed_step]
    if failed:
        details = "; ".join(
            f"{o.series} at {o.failed_step}: {type(o.error).__name__}: {o.error}" for o in failed
        )
        raise DailyRunFailed(f"{len(failed)} of {len(outcomes)} series failed: {details}", outcomes)
    return outcomes
