"""Train or fine-tune the LSTM of one series on its final candles and register the version.

    train_flow("Bitstamp_BTCUSD_d")                    # auto: the policy picks
    train_flow("Bitstamp_BTCUSD_d", mode="retrain")    # from scratch
    train_flow("Bitstamp_BTCUSD_d", as_of=datetime(2024, 6, 30, tzinfo=UTC))  # point in time
    train_flow("d", group=["Bitstamp_BTCUSD_d", "Binance_ADAUSDT_d"])   # a global model

With ``group``, ``series`` is a timeframe and the flow trains that timeframe's global model on
the group's series (`flows.train_global`); the same deployment (``train/train`` on the ``gpu``
pool) serves both.

The auto policy retrains when there is no model, when the model's artifact does not load,
when the series' settings changed (its forecaster config or ``train_candles``), when the last
retrain is ``retrain_after`` or more candles of data old (candles of the series' timeframe),
or when the recent skill of the model's lineage fell below ``retrain_below_skill``; with no
new final candle it keeps the model; otherwise it fine-tunes the latest version on the newest
windows. A retrain fits on the newest ``train_candles`` final candles (all when unset). A
version is registered only after a successful fit, in one transaction: a crash or kill
registers nothing.
"""

# No `from __future__ import annotations` here: a served deployment may pickle the flow
# function, and its parameters' annotations must travel as objects, not as names.

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from db.engine import get_engine
from db.forecasts import recent_run_forecasts
from db.registry import ArtifactUnavailableError, VersionInfo, get_version, latest_version
from db.series_key import SeriesKey
from flows.config import DB_RETRY, RECENT_RUNS, series_config, training_progress
from flows.tasks import final_candles, load_model, register, version_record
from flows.train_global import train_group
from flows.train_policy import TrainPlan, auto_plan
from forecaster import ArtifactError, LSTMForecaster
from forecaster.metrics import score_forecasts
from settings import SeriesConfig

TrainMode = Literal["auto", "retrain", "finetune"]
# a daily series retrains in 11-31 s on 2 CPU cores (110 s on a loaded machine, first run
# included), an hourly one in minutes (docs/benchmarks.md); a fit still going after 2 hours is
# stuck or sized wrong (cap it with train_candles)
TRAIN_TIMEOUT_S = 2 * 3600


@dataclass(frozen=True)
class TrainOutcome:
    series: str
    action: Literal["retrain", "finetune", "keep"]
    reason: str
    version: VersionInfo


@task(cache_policy=NO_CACHE, **DB_RETRY)
def find_latest(series: str, data_end: datetime) -> tuple[VersionInfo, VersionInfo] | None:
    """The newest version trained on data up to ``data_end`` and the retrain it descends from."""
    engine = get_engine()
    latest = latest_version(engine, series, trained_until=data_end)
    if latest is None:
        return None
    return latest, get_version(engine, latest.retrain_id)


@task(cache_policy=NO_CACHE, **DB_RETRY)
def recent_skill(version: VersionInfo, candles: pd.DataFrame) -> float | None:
    """Skill of the lineage's newest scored runs with targets up to the last candle (or None)."""
    forecasts = recent_run_forecasts(
        get_engine(),
        version.series,
        last_runs=RECENT_RUNS,
        retrain_id=version.retrain_id,
        targets_until=candles.index[-1],
    )
    if forecasts.empty:
        return None
    skill = float(score_forecasts(forecasts, candles["close"]).loc[0, "skill"])
    return None if pd.isna(skill) else skill


@task(cache_policy=NO_CACHE)
def retrain(series: str, candles: pd.DataFrame, config: SeriesConfig) -> LSTMForecaster:
    """Train a new model from scratch on the newest ``train_candles`` candles (all if unset)."""
    if config.train_candles is not None:
        candles = candles.iloc[-config.train_candles :]
    get_run_logger().info(
        "%s: fitting a new model on %d candles (%s .. %s)",
        series,
        len(candles),
        candles.index[0],
        candles.index[-1],
    )
    with training_progress():
        return LSTMForecaster(config.forecaster).fit(candles)


@task(cache_policy=NO_CACHE)
def finetune(series: str, model: LSTMForecaster, candles: pd.DataFrame) -> LSTMForecaster:
    """Fine-tune the latest version on the newest windows (they hold the new candles)."""
    get_run_logger().info(
        "%s: fine-tuning the model trained up to %s on the newest %d windows up to %s",
        series,
        model.training_range_[1],
        model.config.finetune_windows,
        candles.index[-1],
    )
    with training_progress():
        return model.update(candles)


def _run_name() -> str:
    parameters = flow_run.parameters
    as_of = parameters.get("as_of")
    suffix = f" as of {pd.Timestamp(as_of):%Y-%m-%d %H:%M}" if as_of is not None else ""
    what = parameters["series"]
    if parameters.get("group"):
        what = f"global {what} model of {len(parameters['group'])} series"
    return f"train {what} ({parameters.get('mode', 'auto')}){suffix}"


@flow(name="train", flow_run_name=_run_name, timeout_seconds=TRAIN_TIMEOUT_S)
def train_flow(
    series: str,
    mode: TrainMode = "auto",
    as_of: datetime | None = None,
    group: list[str] | None = None,
) -> TrainOutcome:
    """Retrain or fine-tune ``series``'s model on its final candles up to ``as_of`` (with
    ``group``: the global model of timeframe ``series`` on the group's series)."""
    if group:
        action, reason, version = train_group(series, group, mode, as_of)
        return TrainOutcome(f"global {series}", action, reason, version)  # type: ignore[arg-type]
    logger = get_run_logger()
    series = SeriesKey.parse(series).key
    config = series_config(series)
    candles = final_candles(series, as_of)
    plan, parent, model = _plan(series, mode, candles, config)
    logger.info("%s: %s — %s", series, plan.action, plan.reason)
    if plan.action == "keep":
        return TrainOutcome(series, "keep", plan.reason, parent)
    started = time.perf_counter()
    if plan.action == "retrain":
        model = retrain(series, candles, config)
    else:
        model = finetune(series, model, candles)
    seconds = time.perf_counter() - started
    version = register(
        version_record(
            series, plan.action, model, candles, parent, seconds, config=config.version_config()
        )
    )
    return TrainOutcome(series, plan.action, plan.reason, version)


def _plan(
    series: str, mode: TrainMode, candles: pd.DataFrame, config: SeriesConfig
) -> tuple[TrainPlan, VersionInfo | None, LSTMForecaster | None]:
    """What to do, the version to start from and its loaded model."""
    if mode == "retrain":
        return TrainPlan("retrain", "a retrain was asked for"), None, None
    found = find_latest(series, candles.index[-1])
    if found is None:
        if mode == "finetune":
            raise LookupError(
                f"{series} has no model version to fine-tune: run train_flow with mode='retrain'"
            )
        return TrainPlan("retrain", "there is no model yet"), None, None
    latest, lineage_start = found
    try:
        model = load_model(latest)
    except (ArtifactUnavailableError, ArtifactError) as error:
        if mode == "finetune":
            raise
        get_run_logger().error("%s: %s — falling back to a retrain", series, error)
        return TrainPlan("retrain", f"the artifact of version {latest.id} is corrupted"), None, None
    if mode == "finetune":
        if latest.train_last >= candles.index[-1]:
            return TrainPlan("keep", "no final candle to fine-tune on"), latest, model
        return TrainPlan("finetune", "a fine-tune was asked for"), latest, model
    skill = recent_skill(latest, candles)
    return auto_plan(latest, lineage_start, candles.index[-1], skill, config), latest, model
