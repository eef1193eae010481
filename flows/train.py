"""Train or fine-tune a model on its series' final candles and register the version.

    train_flow("Bitstamp_BTCUSD_d")                    # auto: the policy picks
    train_flow("Bitstamp_BTCUSD_d", mode="retrain")    # from scratch
    train_flow("Bitstamp_BTCUSD_d", as_of=datetime(2024, 6, 30, tzinfo=UTC))  # point in time
    train_flow("d", group=["Bitstamp_BTCUSD_d", "Binance_ADAUSDT_d"])   # a global model

A model belongs to a `ModelScope`: a series' own model is the model of a group of one; with
``group``, ``series`` is a timeframe whose ``model_scope`` is ``timeframe``
(``CDDF_TIMEFRAME_SETTINGS``) and the flow trains its global model: once on every series'
windows, fine-tuned once a day on every series' newest windows, forecasting each series
(`forecaster.pooled`). Both take the one path below; the same deployment (``train/train`` on
the ``gpu`` pool) serves both.

The auto policy (`flows.train_policy.auto_plan`) retrains when there is no model, when the
model's artifact does not load, when the settings changed (the forecaster config or
``train_candles``), when its retrain day passed since the last retrain (every ``retrain_after``
candles from an offset of its own, so that series retrain on different days), or
when the recent skill of the model's lineage fell below ``retrain_below_skill`` (a group's: the
mean of its series' recent skills, each scale-free, so that no series drowns the others; series
below it on their own are named in the reason); with no new final candle it keeps the model;
otherwise it fine-tunes the latest version on the newest windows. A retrain fits on the newest
``train_candles`` final candles of each series (a group's share ``group_train_candles``; all
when unset). A series new to a group is forecast by the current model at once and joins the
training at the next retrain (and the fine-tunes before it); one with too little history is
kept out of training (``model_version_series.trained`` 0, the version's ``skipped_series``).

A version is registered only after a successful fit, in one transaction: a crash or kill
registers nothing. The run records its outcome, the version it registered or kept, under its
flow run id (`db.registry.record_train_outcome`): what a daily run that dispatched it serves.
"""

# No `from __future__ import annotations` here: a served deployment may pickle the flow
# function, and its parameters' annotations must travel as objects, not as names.

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from cdd.series_key import SeriesKey, timeframe_of
from db.engine import get_engine
from db.forecasts import lineage_series, recent_run_forecasts
from db.registry import (
    ArtifactUnavailableError,
    ModelScope,
    VersionInfo,
    get_version,
    latest_version,
    record_train_outcome,
)
from flows.candles import scope_candles
from flows.gpu import gpu_for_this_train_run
from flows.retry import DB_RETRY
from flows.scopes import RECENT_RUNS, series_config
from flows.train_policy import TrainPlan, auto_plan, pooled_skill
from flows.train_progress import training_progress
from flows.versions import load_model, register, version_record
from forecaster import ArtifactError, LSTMForecaster
from forecaster.backtest import newest_candles
from forecaster.limits import TimeLimit, TrainingTimeout
from forecaster.metrics import skill
from settings import SeriesConfig, get_settings

TrainMode = Literal["auto", "retrain", "finetune"]
# a daily series retrains in 11-31 s on 2 CPU cores (110 s on a loaded machine, first run
# included), an hourly one in minutes (docs/benchmarks.md); a fit still going after 2 hours is
# stuck or sized wrong (cap it with train_candles). The fit and fine-tune check it after every
# batch themselves (train_scope): Prefect's timeout cannot interrupt a task in a worker thread.
TRAIN_TIMEOUT_S = 2 * 3600


@dataclass(frozen=True)
class TrainOutcome:
    series: str  # the scope's name: the series key, or "global <timeframe>"
    action: Literal["retrain", "finetune", "keep"]
    reason: str
    version: VersionInfo


def model_scope(series: str, group: list[str] | None) -> tuple[ModelScope, SeriesConfig]:
    """The scope the flow's parameters name and its config; a ValueError names a bad series
    key, or a member of another timeframe or of a model of its own."""
    if not group:
        key = SeriesKey.of(series)
        return ModelScope.of_series(key), series_config(key)
    timeframe = series
    strays = [key for key in group if timeframe_of(key) != timeframe]
    if strays:
        raise ValueError(
            f"the global {timeframe} model trains series of timeframe {timeframe} only, not "
            f"{', '.join(strays)}: a group is one timeframe; train those in their own group"
        )
    scope = ModelScope.of_group(timeframe, group)
    local = [key for key in scope.members if series_config(key).group != timeframe]
    if local:
        raise ValueError(
            f"{', '.join(local)} have model_scope 'series': set CDDF_TIMEFRAME_SETTINGS="
            f'\'{{"{timeframe}": {{"model_scope": "timeframe"}}}}\' to train them globally'
        )
    return scope, series_config(scope.members[0])


@task(cache_policy=NO_CACHE, **DB_RETRY)
def find_latest(scope: ModelScope, data_end: datetime) -> tuple[VersionInfo, VersionInfo] | None:
    """The newest version trained on data up to ``data_end`` and the retrain it descends from."""
    engine = get_engine()
    latest = latest_version(engine, scope, trained_until=data_end)
    if latest is None:
        return None
    return latest, get_version(engine, latest.retrain_id)


@task(cache_policy=NO_CACHE, **DB_RETRY)
def recent_skills(version: VersionInfo, candles: dict[str, pd.DataFrame]) -> dict[str, float]:
    """Each series' skill over the lineage's newest scored runs with targets up to its last
    candle (series without any: left out)."""
    skills = {}
    with_runs = lineage_series(get_engine(), version.retrain_id)  # one query, not one a member
    for key, frame in candles.items():
        if key not in with_runs:
            continue
        forecasts = recent_run_forecasts(
            get_engine(),
            key,
            last_runs=RECENT_RUNS,
            retrain_id=version.retrain_id,
            targets_until=frame.index[-1],
        )
        if not forecasts.empty:
            scored = skill(forecasts, frame["close"])
            if not pd.isna(scored):
                skills[key] = scored
    return skills


def fit_input(
    scope: ModelScope, candles: dict[str, pd.DataFrame]
) -> pd.DataFrame | dict[str, pd.DataFrame]:
    """What the forecaster fits on: a series' own candles, or ``{series: candles}`` of a group."""
    return candles[scope.members[0]] if scope.group is None else candles


@task(cache_policy=NO_CACHE)
def fit(
    scope: ModelScope, candles: dict[str, pd.DataFrame], config: SeriesConfig, limit: TimeLimit
) -> LSTMForecaster:
    """Train a new model from scratch on each series' newest candles: ``train_candles`` at
    most (all if unset), a group's ``group_train_candles`` in all."""
    newest = newest_candles(
        fit_input(scope, candles),
        config.train_candles,
        config.group_train_candles,
        config.forecaster.min_history,
    )
    frames = {scope.members[0]: newest} if isinstance(newest, pd.DataFrame) else newest
    get_run_logger().info(
        "%s: fitting a new model on %d series, %d candles in all (%s .. %s, each its newest %d "
        "at most)",
        scope.label,
        len(frames),
        sum(len(frame) for frame in frames.values()),
        min(frame.index[0] for frame in frames.values()),
        max(frame.index[-1] for frame in frames.values()),
        max(len(frame) for frame in frames.values()),
    )
    with training_progress(), stopped_at(scope, limit):
        return LSTMForecaster(config.forecaster).fit(newest, time_limit=time_left(limit))


@task(cache_policy=NO_CACHE)
def finetune(
    scope: ModelScope, model: LSTMForecaster, candles: dict[str, pd.DataFrame], limit: TimeLimit
) -> LSTMForecaster:
    """Fine-tune the latest version on each series' newest windows (they hold the new candles;
    a group's new series too)."""
    trained_until = model.training_range_[1]
    with training_progress(), stopped_at(scope, limit):
        model.update(fit_input(scope, candles), time_limit=time_left(limit))
    get_run_logger().info(
        "%s: fine-tuned the model trained up to %s on %d windows, the newest of %d series, up "
        "to %s",
        scope.label,
        trained_until,
        model.update_windows_,
        len(model.update_series_) if scope.group is not None else 1,
        max(frame.index[-1] for frame in candles.values()),
    )
    return model


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
    scope, config = model_scope(series, group)
    gpu_for_this_train_run(scope.label)
    outcome, _ = train_scope(scope, config, mode, scope_candles(scope, as_of))
    return outcome


def train_scope(
    scope: ModelScope,
    config: SeriesConfig,
    mode: TrainMode,
    candles: dict[str, pd.DataFrame],
    time_limit: float = TRAIN_TIMEOUT_S,
) -> tuple[TrainOutcome, LSTMForecaster]:
    """The train flow's work on ``candles`` (each member's final candles, as read by the
    caller); the outcome and the model of its version, loaded or just trained, for the caller
    to forecast with (the pipeline's, `flows/pipeline.py`). A fit or fine-tune still running
    ``time_limit`` seconds after the start stops with a TimeoutError; nothing is registered."""
    limit = TimeLimit.of(time_limit)
    assert limit is not None
    plan, parent, model = _plan(scope, mode, candles, config)
    get_run_logger().info("%s: %s — %s", scope.label, plan.action, plan.reason)
    version = parent
    if plan.action != "keep":
        started = time.perf_counter()
        if plan.action == "retrain":
            model = fit(scope, candles, config, limit)
        else:
            model = finetune(scope, model, candles, limit)
        seconds = time.perf_counter() - started
        version = register(
            version_record(
                scope, plan.action, model, candles, parent, seconds, config.version_config()
            )
        )
    assert version is not None and model is not None  # a keep has a parent and its model
    outcome = TrainOutcome(scope.name, plan.action, plan.reason, version)
    if flow_run.id:  # whoever dispatched this run serves what it did (flows/pipeline.py)
        record_outcome(scope, outcome)
    return outcome, model


def time_left(limit: TimeLimit) -> float:
    """What is left of ``limit`` for the next step (a step that starts late stops at once)."""
    return max(limit.seconds - limit.elapsed(), 1e-9)


@contextmanager
def stopped_at(scope: ModelScope, limit: TimeLimit) -> Iterator[None]:
    """A fit or fine-tune stopped by the time limit, as the error of the series' train step."""
    try:
        yield
    except TrainingTimeout as error:
        raise TimeoutError(
            f"{scope.label}: training stopped at {error.where}, {limit.elapsed():.1f} s after "
            f"the train step started: over its limit of {limit.seconds:g} s "
            "(flows.train.TRAIN_TIMEOUT_S); nothing was registered. Cap the fit with "
            "train_candles or max_epochs (CDDF_TIMEFRAME_SETTINGS, CDDF_SERIES_SETTINGS) or "
            "train on a GPU"
        ) from error


@task(cache_policy=NO_CACHE, **DB_RETRY)
def record_outcome(scope: ModelScope, outcome: TrainOutcome) -> None:
    """Record under this flow run's id the version it registered or kept."""
    record_train_outcome(
        get_engine(), str(flow_run.id), scope, outcome.action, outcome.reason, outcome.version.id
    )


def _plan(
    scope: ModelScope, mode: TrainMode, candles: dict[str, pd.DataFrame], config: SeriesConfig
) -> tuple[TrainPlan, VersionInfo | None, LSTMForecaster | None]:
    """What to do, the version to start from and its loaded model."""
    if mode == "retrain":
        return TrainPlan("retrain", "a retrain was asked for"), None, None
    data_end = max(frame.index[-1] for frame in candles.values())
    the_model = "model" if scope.group is None else scope.label
    found = find_latest(scope, data_end)
    if found is None:
        if mode == "finetune":
            raise LookupError(
                f"{scope.label}: there is no model version to fine-tune: run train_flow with "
                "mode='retrain'"
            )
        return TrainPlan("retrain", f"there is no {the_model} yet"), None, None
    latest, lineage_start = found
    try:
        model = load_model(latest)
    except (ArtifactUnavailableError, ArtifactError) as error:
        if mode == "finetune":
            raise
        get_run_logger().error("%s: %s — falling back to a retrain", scope.label, error)
        which = f"version {latest.id}" if scope.group is None else latest.label
        return TrainPlan("retrain", f"the artifact of {which} is corrupted"), None, None
    if mode == "finetune":
        if latest.train_last >= data_end:
            return TrainPlan("keep", "no final candle to fine-tune on"), latest, model
        return TrainPlan("finetune", "a fine-tune was asked for"), latest, model
    skills = recent_skills(latest, candles)
    plan = auto_plan(latest, lineage_start, data_end, pooled_skill(skills), config)
    threshold = get_settings().retrain_below_skill
    weak = sorted(key for key, value in skills.items() if value < threshold)
    if weak and plan.action == "finetune":  # never one series alone: its skill is the mean
        plan = TrainPlan(
            "finetune", f"{plan.reason}; below retrain_below_skill on their own: {', '.join(weak)}"
        )
    return plan, latest, model
