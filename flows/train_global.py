"""Train or fine-tune one global model for every series of a timeframe group.

    train_flow("d", group=["Bitstamp_BTCUSD_d", "Binance_ADAUSDT_d"])   # auto: the policy picks

A timeframe whose ``model_scope`` is ``timeframe`` (``CDDF_TIMEFRAME_SETTINGS``) has one
model for all its series: trained once on every series' windows, fine-tuned once a day on
every series' newest windows, forecasting each series (`forecaster.pooled`). The auto policy
is the per-series one (`flows.train_policy.auto_plan`) on the group: retrain when there is no global
model, its artifact does not load, the timeframe's settings changed, the last retrain is
``retrain_after`` candles old, or the group's recent skill (the mean of its series' recent
skills: each scale-free, so no series drowns the others) fell below ``retrain_below_skill``;
series below it on their own are named in the reason. A series new to the group is forecast
by the current model at once and joins the training at the next retrain (and the fine-tunes
before it). A series with too little history is kept out of training (recorded in
``model_version_series`` with ``trained`` 0, and in the version's ``skipped_series``).
"""

from __future__ import annotations

import time
from datetime import datetime

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from db.candles import UnknownSeriesError, load_candles
from db.engine import get_engine
from db.forecasts import recent_run_forecasts
from db.registry import (
    ArtifactUnavailableError,
    NewVersion,
    VersionInfo,
    get_version,
    latest_group_version,
)
from flows.config import DB_RETRY, RECENT_RUNS, series_config, training_progress
from flows.tasks import as_utc, load_model, register
from flows.train_policy import auto_plan
from forecaster import ArtifactError, LSTMForecaster
from forecaster.backtest import newest_candles
from forecaster.metrics import score_forecasts
from settings import SeriesConfig, get_settings
from settings.series import timeframe_of


def check_group(timeframe: str, group: list[str]) -> SeriesConfig:
    """The group's config; a ValueError names a series of another timeframe or scope."""
    if not group:
        raise ValueError(f"the global {timeframe} model needs one series at least")
    strays = [key for key in group if timeframe_of(key) != timeframe]
    if strays:
        raise ValueError(
            f"the global {timeframe} model trains series of timeframe {timeframe} only, not "
            f"{', '.join(strays)}: a group is one timeframe; train those in their own group"
        )
    local = [key for key in group if series_config(key).group != timeframe]
    if local:
        raise ValueError(
            f"{', '.join(local)} have model_scope 'series': set CDDF_TIMEFRAME_SETTINGS="
            f'\'{{"{timeframe}": {{"model_scope": "timeframe"}}}}\' to train them globally'
        )
    return series_config(group[0])


@task(cache_policy=NO_CACHE, **DB_RETRY)
def group_candles(group: list[str], as_of: datetime | None) -> dict[str, pd.DataFrame]:
    """Each series' final candles up to ``as_of``; a series with none, or never ingested (its
    ingest failed: a 404, an unreadable file), is left out and named in the log."""
    frames = {}
    for key in group:
        try:
            frames[key] = load_candles(get_engine(), key, until=as_utc(as_of))
        except UnknownSeriesError:
            frames[key] = pd.DataFrame()
    if absent := [key for key, frame in frames.items() if frame.empty]:
        get_run_logger().warning(
            "global %s model: %s have no final candle (never ingested, or none yet): left out",
            timeframe_of(group[0]),
            ", ".join(absent),
        )
    return {key: frame for key, frame in frames.items() if not frame.empty}


@task(cache_policy=NO_CACHE, **DB_RETRY)
def group_skill(version: VersionInfo, candles: dict[str, pd.DataFrame]) -> dict[str, float]:
    """Each series' skill over the lineage's newest scored runs (series without any: left out)."""
    skills = {}
    for key, frame in candles.items():
        forecasts = recent_run_forecasts(
            get_engine(),
            key,
            last_runs=RECENT_RUNS,
            retrain_id=version.retrain_id,
            targets_until=frame.index[-1],
        )
        if not forecasts.empty:
            skill = float(score_forecasts(forecasts, frame["close"]).loc[0, "skill"])
            if not pd.isna(skill):
                skills[key] = skill
    return skills


@task(cache_policy=NO_CACHE)
def fit_group(
    timeframe: str, candles: dict[str, pd.DataFrame], config: SeriesConfig
) -> LSTMForecaster:
    """Train the global model from scratch on each series' newest candles.

    ``group_train_candles`` in all, shared by the series, each at most ``train_candles``.
    """
    candles = newest_candles(
        candles, config.train_candles, config.group_train_candles, config.forecaster.min_history
    )
    get_run_logger().info(
        "global %s model: fitting on %d series (%d candles in all, each its newest %d at most)",
        timeframe,
        len(candles),
        sum(len(frame) for frame in candles.values()),
        max(len(frame) for frame in candles.values()),
    )
    with training_progress():
        return LSTMForecaster(config.forecaster).fit(candles)


@task(cache_policy=NO_CACHE)
def finetune_group(
    timeframe: str, model: LSTMForecaster, candles: dict[str, pd.DataFrame]
) -> LSTMForecaster:
    """Fine-tune the global model on every series' newest windows (new series too)."""
    with training_progress():
        model.update(candles)
    get_run_logger().info(
        "global %s model: fine-tuned on %d windows, the newest of each of %d series",
        timeframe,
        model.update_windows_,
        len(model.update_series_),
    )
    return model


def plan_group(
    timeframe: str,
    mode: str,
    candles: dict[str, pd.DataFrame],
    config: SeriesConfig,
) -> tuple[str, str, VersionInfo | None, LSTMForecaster | None]:
    """``(action, reason, parent, its model)`` for the group (see the module docstring)."""
    if mode == "retrain":
        return "retrain", "a retrain was asked for", None, None
    data_end = max(frame.index[-1] for frame in candles.values())
    engine = get_engine()
    latest = latest_group_version(engine, timeframe, trained_until=data_end)
    if latest is None:
        if mode == "finetune":
            raise LookupError(f"there is no global {timeframe} model to fine-tune: retrain")
        return "retrain", f"there is no global {timeframe} model yet", None, None
    try:
        model = load_model(latest)
    except (ArtifactUnavailableError, ArtifactError) as error:
        if mode == "finetune":
            raise
        get_run_logger().error("global %s model: %s — falling back to a retrain", timeframe, error)
        return "retrain", f"the artifact of {latest.label} is corrupted", None, None
    if mode == "finetune":
        if latest.train_last >= data_end:
            return "keep", "no final candle to fine-tune on", latest, model
        return "finetune", "a fine-tune was asked for", latest, model
    skills = group_skill(latest, candles)
    pooled = sum(skills.values()) / len(skills) if skills else None
    plan = auto_plan(latest, get_version(engine, latest.retrain_id), data_end, pooled, config)
    reason = plan.reason
    threshold = get_settings().retrain_below_skill
    weak = sorted(key for key, skill in skills.items() if skill < threshold)
    if weak and plan.action == "finetune":
        reason += f"; below retrain_below_skill on their own: {', '.join(weak)}"
    return plan.action, reason, latest, model


def train_group(
    timeframe: str, group: list[str], mode: str = "auto", as_of: datetime | None = None
) -> tuple[str, str, VersionInfo]:
    """Retrain, fine-tune or keep the global model of ``timeframe``: (action, reason, version)."""
    logger = get_run_logger()
    config = check_group(timeframe, sorted(group))
    candles = group_candles(sorted(group), as_of)
    if not candles:
        raise ValueError(f"no series of the global {timeframe} model has a final candle: ingest")
    action, reason, parent, model = plan_group(timeframe, mode, candles, config)
    logger.info("global %s model: %s — %s", timeframe, action, reason)
    if action == "keep":
        assert parent is not None
        return action, reason, parent
    started = time.perf_counter()
    if action == "retrain":
        model = fit_group(timeframe, candles, config)
    else:
        assert model is not None
        model = finetune_group(timeframe, model, candles)
    seconds = time.perf_counter() - started
    version = register(
        group_version_record(timeframe, group, action, model, candles, parent, seconds, config)
    )
    return action, reason, version


def group_version_record(
    timeframe: str,
    group: list[str],
    action: str,
    model: LSTMForecaster,
    candles: dict[str, pd.DataFrame],
    parent: VersionInfo | None,
    seconds: float,
    config: SeriesConfig,
) -> NewVersion:
    """The registry row of a global model just retrained or fine-tuned on ``candles`` (each
    series' final candles up to the same time: the daily's, or a backfill's as_of)."""
    trained = set(model.series_ if action == "retrain" else model.update_series_)
    metrics = {
        **model.validation_metrics_,
        "skipped_series": model.skipped_series_,
        "calibration": model.calibration_,
    }
    if action == "finetune":
        metrics["validated_version"] = parent.retrain_id if parent else None
        metrics["finetune_loss"] = model.last_update_loss_
        n_windows = model.update_windows_
    else:
        n_windows, seconds = model.n_windows_, model.train_seconds_
    return NewVersion(
        series=min(trained),  # the group's first series trained on (see 0006)
        kind=action,  # type: ignore[arg-type]
        parent_id=parent.id if parent is not None and action == "finetune" else None,
        config=config.version_config(),
        train_first=pd.Timestamp(model.training_range_[0]).to_pydatetime(),
        train_last=max(frame.index[-1] for frame in candles.values()).to_pydatetime(),
        n_windows=int(n_windows),
        validation_metrics=metrics,
        artifact=model.to_bytes(),
        device=model.device_,
        train_seconds=float(seconds),
        flow_run_id=str(flow_run.id) if flow_run.id else None,
        model_group=timeframe,
        members={key: key in trained for key in sorted(group) if key in candles},
    )
