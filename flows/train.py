"""Train or fine-tune the LSTM of one series on its final candles and register the version.

>>> train_flow("Bitstamp_BTCUSD_d")                    # auto: the policy picks
>>> train_flow("Bitstamp_BTCUSD_d", mode="retrain")    # from scratch
>>> train_flow("Bitstamp_BTCUSD_d", as_of=datetime(2024, 6, 30, tzinfo=UTC))  # point in time

The auto policy retrains when there is no model, when the model's artifact does not load,
when the service's forecaster config changed, when the last retrain is
``retrain_after_days`` or more of data old, or when the recent skill of the model's lineage
fell below ``retrain_below_skill``; with no new final candle it keeps the model; otherwise
it fine-tunes the latest version on the newest windows. A version is registered only after a
successful fit, in one transaction: a crash or kill registers nothing.
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
from db.registry import (
    ArtifactUnavailableError,
    NewVersion,
    VersionInfo,
    get_version,
    latest_version,
    register_version,
)
from db.series_key import SeriesKey
from db.settings import get_settings
from flows.config import DB_RETRY, RECENT_RUNS, forecaster_config, training_progress
from flows.tasks import final_candles, load_model, version_record
from forecaster import ArtifactError, ForecasterConfig, LSTMForecaster
from forecaster.metrics import score_forecasts

TrainMode = Literal["auto", "retrain", "finetune"]


@dataclass(frozen=True)
class TrainPlan:
    action: Literal["retrain", "finetune", "keep"]
    reason: str


@dataclass(frozen=True)
class TrainOutcome:
    series: str
    action: Literal["retrain", "finetune", "keep"]
    reason: str
    version: VersionInfo


def auto_plan(
    latest: VersionInfo,
    lineage_start: VersionInfo,
    data_end: pd.Timestamp,
    recent_skill: float | None,
    config: ForecasterConfig,
) -> TrainPlan:
    """The auto policy, given a loadable latest version (see the module docstring)."""
    settings = get_settings()
    if latest.config != config.to_dict():
        return TrainPlan("retrain", f"the forecaster config changed since version {latest.id}")
    if latest.train_last >= data_end:
        return TrainPlan("keep", f"no final candle after {latest.train_last:%Y-%m-%d %H:%M}")
    age = data_end - pd.Timestamp(lineage_start.train_last)
    if age >= pd.Timedelta(days=settings.retrain_after_days):
        return TrainPlan(
            "retrain",
            f"the last retrain (version {lineage_start.id}) is {age.days} days of data old "
            f"(retrain_after_days={settings.retrain_after_days})",
        )
    if recent_skill is not None and recent_skill < settings.retrain_below_skill:
        return TrainPlan(
            "retrain",
            f"recent skill {recent_skill:.3f} is below retrain_below_skill="
            f"{settings.retrain_below_skill}",
        )
    return TrainPlan("finetune", f"version {latest.id} is recent and skilful enough")


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
        get_engine(), version.series, last_runs=RECENT_RUNS, retrain_id=version.retrain_id,
        targets_until=candles.index[-1],
    )
    if forecasts.empty:
        return None
    skill = float(score_forecasts(forecasts, candles["close"]).loc[0, "skill"])
    return None if pd.isna(skill) else skill


@task(cache_policy=NO_CACHE)
def retrain(series: str, candles: pd.DataFrame, config: ForecasterConfig) -> LSTMForecaster:
    """Train a new model from scratch on every window of the candles."""
    get_run_logger().info(
        "%s: fitting a new model on %d candles (%s .. %s)", series, len(candles),
        candles.index[0], candles.index[-1],
    )
    with training_progress():
        return LSTMForecaster(config).fit(candles)


@task(cache_policy=NO_CACHE)
def finetune(series: str, model: LSTMForecaster, candles: pd.DataFrame) -> LSTMForecaster:
    """Fine-tune the latest version on the newest windows (they hold the new candles)."""
    get_run_logger().info(
        "%s: fine-tuning the model trained up to %s on the newest %d windows up to %s", series,
        model.training_range_[1], model.config.finetune_windows, candles.index[-1],
    )
    with training_progress():
        return model.update(candles)


@task(cache_policy=NO_CACHE, **DB_RETRY)
def register(version: NewVersion) -> VersionInfo:
    """Store the new version and its artifact in one transaction."""
    registered = register_version(get_engine(), version)
    get_run_logger().info(
        "%s: registered model version %d (%s, %s, trained up to %s)", version.series,
        registered.id, registered.kind, registered.device, registered.train_last,
    )
    return registered


def _run_name() -> str:
    parameters = flow_run.parameters
    as_of = parameters.get("as_of")
    suffix = f" as of {pd.Timestamp(as_of):%Y-%m-%d %H:%M}" if as_of is not None else ""
    return f"train {parameters['series']} ({parameters.get('mode', 'auto')}){suffix}"


@flow(name="train", flow_run_name=_run_name)
def train_flow(
    series: str, mode: TrainMode = "auto", as_of: datetime | None = None
) -> TrainOutcome:
    """Retrain or fine-tune ``series``'s model on its final candles up to ``as_of``."""
    logger = get_run_logger()
    series = SeriesKey.parse(series).key
    config = forecaster_config()
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
    version = register(version_record(series, plan.action, model, candles, parent, seconds))
    return TrainOutcome(series, plan.action, plan.reason, version)


def _plan(
    series: str, mode: TrainMode, candles: pd.DataFrame, config: ForecasterConfig
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
