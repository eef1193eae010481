"""The global model's part of a backfill: its group, the members' candles, its versions' rows.

A series whose timeframe has ``model_scope: "timeframe"`` is backfilled with its group's
global model (see `flows.backfill`); the group is the one the daily run trains. With
``CDDF_SERIES=Bitstamp_BTCUSD_d,Bitstamp_ETHUSD_d`` and
``CDDF_TIMEFRAME_SETTINGS='{"d": {"model_scope": "timeframe"}}'``:

    group_of("Bitstamp_ETHUSD_d")  # ['Bitstamp_BTCUSD_d', 'Bitstamp_ETHUSD_d']
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from db.candles import UnknownSeriesError, load_candles
from db.engine import get_engine
from db.registry import NewVersion, VersionInfo
from flows.backfill_plan import BackfillPlan
from flows.config import DB_RETRY, global_groups, series_config
from flows.tasks import version_record
from flows.train_global import group_version_record
from forecaster.backtest import BacktestStep, up_to
from settings import SeriesConfig, get_settings


def group_of(series: str) -> list[str]:
    """The series of the global model that ``series`` is in, in key order: the daily run's
    group of its timeframe in ``CDDF_SERIES``, and ``series`` itself."""
    keys = list(dict.fromkeys([*get_settings().series, series]))
    return sorted(global_groups(keys)[series_config(series).group])


@task(cache_policy=NO_CACHE, **DB_RETRY)
def member_candles(
    series: str, candles: pd.DataFrame, logger: Any = None
) -> dict[str, pd.DataFrame]:
    """Every final candle of each series of ``series``' group (``candles``: its own, loaded
    already); a member never ingested, or without a final candle, is left out (and logged to
    ``logger``, by default the run's)."""
    frames = {series: candles}
    for key in group_of(series):
        if key != series:
            try:
                frames[key] = load_candles(get_engine(), key)
            except UnknownSeriesError:
                frames[key] = candles.iloc[:0]
    if absent := sorted(key for key, frame in frames.items() if frame.empty):
        (logger or get_run_logger()).warning(
            "global %s model: %s have no final candle: left out of its training (ingest them)",
            series_config(series).group,
            ", ".join(absent),
        )
    return {key: frame for key, frame in sorted(frames.items()) if not frame.empty}


def stored_config(config: SeriesConfig, group: str | None) -> dict[str, Any]:
    """What a backfill's version stores as its config (a global one: as the daily's does)."""
    return config.forecaster.to_dict() if group is None else config.version_config()


def step_version(
    plan: BackfillPlan,
    step: BacktestStep,
    parent: VersionInfo | None,
    seconds: float,
    config: SeriesConfig,
) -> NewVersion:
    """The registry row of the model of ``step``: the series' own, or its group's global one
    (its members: the series with candles up to the as_of)."""
    if plan.group is None:
        visible = plan.candles.loc[: step.as_of]
        return version_record(plan.series, step.action, step.model, visible, parent, seconds)
    return group_version_record(
        plan.group,
        list(plan.members),
        step.action,
        step.model,
        up_to(plan.members, step.as_of),
        parent,
        seconds,
        config,
    )
