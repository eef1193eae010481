"""Forecast one series with its latest model version and store the run.

>>> forecast_flow("Bitstamp_BTCUSD_d")             # as of the last final candle
>>> forecast_flow("Bitstamp_BTCUSD_d", as_of=datetime(2024, 6, 30, tzinfo=UTC), kind="backfill")

Point in time: only candles up to ``as_of`` and a version trained on data up to it are used.
Re-running for the same (series, as_of, version) replaces the run's forecasts.
"""

# No `from __future__ import annotations` here: a served deployment may pickle the flow
# function, and its parameters' annotations must travel as objects, not as names.

from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from db.engine import get_engine
from db.forecasts import RunKind, WrittenRun, write_forecast_run
from db.registry import VersionInfo, latest_version
from db.series_key import SeriesKey
from flows.config import DB_RETRY
from flows.tasks import final_candles, load_model
from forecaster import LSTMForecaster, NaiveForecaster


@dataclass(frozen=True)
class ForecastOutcome:
    series: str
    run_id: int
    model_version_id: int
    as_of: datetime
    replaced: bool
    forecasts: pd.DataFrame = field(repr=False)


@task(cache_policy=NO_CACHE, **DB_RETRY)
def serving_version(series: str, data_end: datetime) -> VersionInfo:
    """The newest version trained on data up to ``data_end``."""
    version = latest_version(get_engine(), series, trained_until=data_end)
    if version is None:
        raise LookupError(
            f"{series} has no model version trained on data up to {data_end:%Y-%m-%d %H:%M}: "
            f"run train_flow('{series}') first"
        )
    return version


@task(cache_policy=NO_CACHE)
def make_forecasts(model: LSTMForecaster, candles: pd.DataFrame) -> pd.DataFrame:
    """The model's forecasts after the last candle, with the naive forecast beside each."""
    horizon = model.config.horizon
    forecasts = model.predict(candles)
    naive = NaiveForecaster(horizon=horizon).fit(candles.iloc[-(2 * horizon + 1) :])
    forecasts["naive"] = naive.predict(candles)["value"].to_numpy()
    return forecasts


@task(cache_policy=NO_CACHE, **DB_RETRY)
def store_forecasts(
    series: str, version: VersionInfo, forecasts: pd.DataFrame, kind: RunKind
) -> WrittenRun:
    """Write the run and its forecasts, replacing an earlier run of the same as_of and version."""
    run_id = str(flow_run.id) if flow_run.id else None
    written = write_forecast_run(
        get_engine(), series, version.id, forecasts, kind=kind, flow_run_id=run_id
    )
    get_run_logger().info(
        "%s: %s run %d as of %s with model version %d (%d forecasts)", series,
        "replaced" if written.replaced else "wrote", written.run.id, written.run.as_of,
        version.id, written.n_forecasts,
    )
    return written


def _run_name() -> str:
    parameters = flow_run.parameters
    as_of = parameters.get("as_of")
    when = f"as of {pd.Timestamp(as_of):%Y-%m-%d %H:%M}" if as_of is not None else "latest"
    return f"forecast {parameters['series']} {when}"


@flow(name="forecast", flow_run_name=_run_name)
def forecast_flow(
    series: str, as_of: datetime | None = None, kind: RunKind = "daily"
) -> ForecastOutcome:
    """Forecast ``series`` from its final candles up to ``as_of`` with the latest version."""
    series = SeriesKey.parse(series).key
    candles = final_candles(series, as_of)
    version = serving_version(series, candles.index[-1].to_pydatetime())
    model = load_model(version)
    forecasts = make_forecasts(model, candles)
    written = store_forecasts(series, version, forecasts, kind)
    return ForecastOutcome(
        series, written.run.id, version.id, written.run.as_of, written.replaced, forecasts
    )
