"""The served forecast of a run, from the LSTM's forecast and the series' own scored record,
and storing it.

    served = served_forecast("Bitstamp_BTCUSD_d", lstm_forecasts)
    served.forecasts["value"], served.weights, served.summary()

Every forecast the service stores goes through here (`store_forecasts` below: the
forecast flow, the daily flow and backfills alike), so that history is reproducible: the
served forecast as of t depends only on the candles up to t and the forecasts scored by then
(`forecaster.aggregate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from cdd.series_key import SeriesKey
from db.aggregation import WalkRecord, recent_closes, scored_record
from db.engine import get_engine
from db.forecasts import RunKind, WrittenRun, write_forecast_run
from db.registry import VersionInfo
from flows.retry import DB_RETRY
from forecaster.aggregate import RECORD_ROUNDS, REFERENCE_PERIODS, Served, serve


@task(cache_policy=NO_CACHE, **DB_RETRY)
def store_forecasts(
    series: str,
    version: VersionInfo,
    forecasts: pd.DataFrame,
    kind: RunKind,
    record: WalkRecord | None = None,
) -> ServedRun:
    """Serve the aggregate of the LSTM's ``forecasts`` (``served_forecast``) and write the run
    with its weights, replacing an earlier run of the same as_of and version; ``record``: a
    walk forward's record, served from and kept current with the run."""
    run_id = str(flow_run.id) if flow_run.id else None
    served = served_forecast(series, forecasts, record)
    written = write_forecast_run(
        get_engine(),
        series,
        version.id,
        served.forecasts,
        kind=kind,
        flow_run_id=run_id,
        weights=served.weights,
    )
    if record is not None:
        record.add(written.run.id, written.run.as_of, written.rows)
    logger = get_run_logger()
    (logger.warning if served.from_prior else logger.info)(
        "%s as of %s: served forecast: %s", series, written.run.as_of, served.summary()
    )
    logger.info(
        "%s: %s run %d as of %s with model version %d (%d forecasts)",
        series,
        "replaced" if written.replaced else "wrote",
        written.run.id,
        written.run.as_of,
        version.id,
        written.n_forecasts,
    )
    return ServedRun(written.run, written.replaced, written.n_forecasts, written.rows, served)


@dataclass(frozen=True)
class ServedRun(WrittenRun):
    """A stored run and the served forecast it holds (``served.forecasts``, ``.weights``)."""

    served: Served = field(repr=False)


def walk_record(series: str, first: pd.Timestamp) -> WalkRecord:
    """The record a walk forward over ``series`` from ``first`` serves from (`WalkRecord`)."""
    period = SeriesKey.of(series).period
    return WalkRecord(
        get_engine(), series, first.to_pydatetime(), period=period, rounds=RECORD_ROUNDS
    )


def served_forecast(
    series: str, forecasts: pd.DataFrame, record: WalkRecord | None = None
) -> Served:
    """Aggregate ``forecasts`` (the LSTM's, with ``naive``, one as_of) into the served one,
    from the record in the tables or the same held in ``record``."""
    engine = get_engine()
    period = SeriesKey.of(series).period
    as_of = pd.Timestamp(forecasts["as_of"].iloc[0]).tz_convert("UTC")
    horizon = int(forecasts["horizon"].max())
    since = (as_of - period * (REFERENCE_PERIODS + horizon + 1)).to_pydatetime()
    close = (
        recent_closes(engine, series, as_of.to_pydatetime(), since=since)
        if record is None
        else record.closes(as_of.to_pydatetime(), since=since)
    )
    if close.empty or close.index[-1] != as_of:
        raise ValueError(
            f"{series} has no final candle at the forecast's as_of {as_of:%Y-%m-%d %H:%M}: "
            "forecast from stored final candles (ingest the series first)"
        )
    scored = (
        scored_record(engine, series, as_of.to_pydatetime(), period=period, rounds=RECORD_ROUNDS)
        if record is None
        else record.at(as_of.to_pydatetime())
    )
    return serve(forecasts, close, scored)
