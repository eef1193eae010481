"""Forecast one series with a model version and store the run.

    forecast_flow("Bitstamp_BTCUSD_d")             # as of the last final candle, latest version
    forecast_flow("Bitstamp_BTCUSD_d", version_id=12)  # the version the caller just trained
    forecast_flow("Bitstamp_BTCUSD_d", as_of=datetime(2024, 6, 30, tzinfo=UTC), kind="backfill")

Point in time: only candles up to ``as_of`` and a version trained on data up to it are used.
The stored ``value`` and bounds are the served forecast: the LSTM's, naive and drift
aggregated with weights learnt from the series' forecasts scored by ``as_of``, with
intervals whose scale tracks their realised coverage (flows/served.py); the LSTM's own
forecast is stored beside it (``lstm_value`` …) and the weights in ``forecast_weights``.
Without ``version_id`` the newest such version serves (a forecast run on its own); a caller
that holds a version passes it, so that another run registering a newer one in between cannot
change which model forecasts. Re-running for the same (series, as_of, version) replaces the
run's forecasts.
"""

# No `from __future__ import annotations` here: a served deployment may pickle the flow
# function, and its parameters' annotations must travel as objects, not as names.

from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from cdd.series_key import SeriesKey, timeframe_of
from db.engine import get_engine
from db.forecasts import RunKind
from db.registry import VersionInfo, get_version, latest_version
from flows.candles import final_candles
from flows.retry import DB_RETRY
from flows.scopes import serving_scope
from flows.served import store_forecasts
from flows.versions import ServingModel, serving_model
from forecaster.aggregate import QUANTITIES
from forecaster.baselines import naive_forecast


@dataclass(frozen=True)
class ForecastOutcome:
    series: str
    run_id: int
    model_version_id: int
    as_of: datetime
    replaced: bool
    forecasts: pd.DataFrame = field(repr=False)  # the served forecast, lstm_* beside it
    weights: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    summary: str = ""  # where the weights came from: the prior (a new series) or the record


@task(cache_policy=NO_CACHE, **DB_RETRY)
def serving_version(series: str, data_end: datetime, version_id: int | None) -> VersionInfo:
    """Version ``version_id``, or the newest version trained on data up to ``data_end``."""
    if version_id is None:
        version = latest_version(get_engine(), serving_scope(series), trained_until=data_end)
        if version is None:
            raise LookupError(
                f"{series} has no model version trained on data up to "
                f"{data_end:%Y-%m-%d %H:%M}: run train_flow('{series}') first"
            )
        return version
    return check_serves(get_version(get_engine(), version_id), series, data_end)


def check_serves(version: VersionInfo, series: str, data_end: datetime) -> VersionInfo:
    """``version``, when it may forecast ``series`` from candles ending at ``data_end``; else a
    ValueError saying why not."""
    # a global version forecasts every series of its timeframe, new ones at once
    serves = version.series == series and version.model_group is None
    if version.model_group is not None:
        serves = version.model_group == timeframe_of(series)
    if serves and version.model_group is not None and version.train_last > data_end:
        raise ValueError(  # a series behind its group: forecasting it would look ahead
            f"{series}: its final candles end at {data_end:%Y-%m-%d %H:%M}, but the global "
            f"{version.model_group} model ({version.label}) saw its group's candles up to "
            f"{version.train_last:%Y-%m-%d %H:%M}, after them; ingest {series}'s newer candles "
            f"(is its source still updated?) or take it out of CDDF_SERIES"
        )
    if not serves or version.train_last > data_end:
        raise ValueError(
            f"model {version.label}, trained up to "
            f"{version.train_last:%Y-%m-%d %H:%M}: it cannot forecast {series} as of "
            f"{data_end:%Y-%m-%d %H:%M}; pass a version of this series trained up to then"
        )
    return version


def make_forecasts(serving: ServingModel, candles: pd.DataFrame, series: str) -> pd.DataFrame:
    """The model's forecasts after the last candle, with the naive forecast beside each (a
    computation in the caller's task run, not one of its own: nothing here to retry or show).

    A hole of a few candles just before it is filled (the forecasts' ``filled`` column says
    how many, and a warning); a longer one is a HoleError naming the hole.
    """
    forecasts = serving.predict(candles, series)  # a global model's own calibration
    forecasts["naive"] = naive_forecast(candles)  # "the next close = the last one"
    filled = int(forecasts["filled"].iloc[0])
    if filled:
        get_run_logger().warning(
            "forecast as of %s: %d of the %d input candles were missing (a hole) and were "
            "filled with the last close and zero volume",
            candles.index[-1],
            filled,
            serving.model.config.window,
        )
    return forecasts


def _run_name() -> str:
    parameters = flow_run.parameters
    as_of = parameters.get("as_of")
    when = f"as of {pd.Timestamp(as_of):%Y-%m-%d %H:%M}" if as_of is not None else "latest"
    return f"forecast {parameters['series']} {when}"


@flow(name="forecast", flow_run_name=_run_name)
def forecast_flow(
    series: str,
    as_of: datetime | None = None,
    kind: RunKind = "daily",
    version_id: int | None = None,
) -> ForecastOutcome:
    """Forecast ``series`` from its final candles up to ``as_of`` with version ``version_id``
    (default: the newest version trained on data up to then)."""
    series = SeriesKey.of(series).key
    candles = final_candles(series, as_of)
    version = serving_version(series, candles.index[-1].to_pydatetime(), version_id)
    outcome = forecast_series(series, candles, version, serving_model(version), kind)
    create_markdown_artifact(
        key=f"forecast-{series.lower().replace('_', '-')}",
        markdown=f"# Forecast {series} as of {outcome.as_of:%Y-%m-%d %H:%M}\n\n"
        f"{outcome.summary}\n\n{weights_table(outcome.weights)}",
        description=f"The served forecast of {series}: weights of the LSTM and naive",
    )
    return outcome


def forecast_series(
    series: str, candles: pd.DataFrame, version: VersionInfo, serving: ServingModel, kind: RunKind
) -> ForecastOutcome:
    """Forecast ``series`` after ``candles`` (its final candles, as read by the caller) with
    ``version``'s model ``serving`` and store the run: the forecast flow's work, and the
    pipeline's with the candles and the model it holds (`flows/pipeline.py`). No artifact: the
    forecast flow publishes ``forecast-<key>``, a daily run each series' ``series-<key>``."""
    forecasts = make_forecasts(serving, candles, series)
    written = store_forecasts(series, version, forecasts, kind)
    served = written.served
    return ForecastOutcome(
        series,
        written.run.id,
        version.id,
        written.run.as_of,
        written.replaced,
        served.forecasts,
        served.weights,
        served.summary(),
    )


def weights_table(weights: pd.DataFrame) -> str:
    """The LSTM's weight per horizon in the served value and each bound (naive's: the rest)."""
    table = weights[weights["expert"] == "lstm"].pivot(
        index="horizon", columns="quantity", values="weight"
    )
    rounds = weights.groupby("horizon")["rounds"].max()
    quantities = [q for q in QUANTITIES if q in table.columns]
    lines = [
        "| horizon | " + " | ".join(f"LSTM in {q}" for q in quantities) + " | scored rounds |",
        "|---:|" + "---:|" * (len(quantities) + 1),
    ]
    lines += [
        f"| {h} | " + " | ".join(f"{row[q]:.3f}" for q in quantities) + f" | {rounds[h]} |"
        for h, row in table.iterrows()
    ]
    return "\n".join(lines)
