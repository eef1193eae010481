"""Forecast runs, scores and the analysts' views, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from cdd.series_key import SeriesKey
from db.candles import upsert_candles
from db.engine import downgrade, make_engine, migrate
from db.forecasts import (
    latest_forecasts,
    recent_run_forecasts,
    run_forecasts,
    runs,
    unscored_runs,
    write_forecast_run,
    write_run_metrics,
    write_version_metrics,
)
from db.registry import NewVersion, register_version
from tests.db.factory import run_metrics, version_metrics
from tests.flows.cdd_files import make_candles

SERIES = "Bitstamp_BTCUSD_d"
KEY = SeriesKey.parse(SERIES)
CANDLES = make_candles(KEY, 40, start="2020-01-01")


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url)
    migrate(engine)
    store_candles(engine, 20)
    yield engine
    engine.dispose()


def store_candles(engine, n: int) -> None:
    with Session(engine) as session, session.begin():
        upsert_candles(session, KEY, CANDLES.iloc[:n])


def version(engine, last: int = 19) -> int:
    return register_version(
        engine,
        NewVersion(
            series=SERIES,
            kind="retrain",
            parent_id=None,
            config={},
            train_first=day(0),
            train_last=day(last),
            n_windows=10,
            validation_metrics={},
            artifact=b"m",
            device="CPU",
            train_seconds=1.0,
        ),
    ).id


def day(n: int) -> pd.Timestamp:
    return pd.Timestamp("2020-01-01", tz="UTC") + pd.Timedelta(days=n)


def forecasts(as_of: int, value: float = 100.0, horizon: int = 3) -> pd.DataFrame:
    h = np.arange(1, horizon + 1)
    return pd.DataFrame(
        {
            "as_of": day(as_of),
            "target_time": [day(as_of + i) for i in h],
            "horizon": h,
            "value": value + h,
            "lower_80": value - 10.0,
            "upper_80": value + 10.0,
            "lower_95": value - 20.0,
            "upper_95": value + 20.0,
            "naive": float(CANDLES["close"].iloc[as_of]),
        }
    )


def utc(value) -> pd.Timestamp:
    """A view's time (SQLite returns text without offset) as a UTC timestamp."""
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def rows(engine, sql: str, **params) -> list[sa.Row]:
    with engine.connect() as connection:
        return connection.execute(sa.text(sql), params).all()


def test_rewriting_a_run_replaces_its_forecasts(engine):
    v = version(engine)
    first = write_forecast_run(engine, SERIES, v, forecasts(19, 100.0))
    again = write_forecast_run(engine, SERIES, v, forecasts(19, 200.0), kind="backfill")
    assert (first.replaced, again.replaced) == (False, True)
    assert again.run.id == first.run.id
    assert [r.kind for r in runs(engine, SERIES)] == ["backfill"]
    stored = run_forecasts(engine, [first.run.id])
    assert stored["value"].tolist() == [201.0, 202.0, 203.0]
    assert stored["target_time"].tolist() == [day(20), day(21), day(22)]
    other = write_forecast_run(engine, SERIES, version(engine), forecasts(19))
    assert other.run.id != first.run.id  # another version: another run


def test_bad_forecasts_are_refused_with_the_reason(engine):
    v = version(engine)
    broken = forecasts(19).assign(value=[1.0, np.nan, 3.0])
    with pytest.raises(ValueError, match="not finite at horizon 2"):
        write_forecast_run(engine, SERIES, v, broken)
    with pytest.raises(ValueError, match="missing columns naive"):
        write_forecast_run(engine, SERIES, v, forecasts(19).drop(columns="naive"))
    with pytest.raises(ValueError, match="one tz-aware as_of"):
        write_forecast_run(engine, SERIES, v, pd.concat([forecasts(18), forecasts(19)]))
    assert runs(engine, SERIES) == []


def test_latest_forecasts_view_takes_the_newest_run_per_target(engine):
    v = version(engine)
    write_forecast_run(engine, SERIES, v, forecasts(17, 100.0))  # targets 18, 19, 20
    write_forecast_run(engine, SERIES, v, forecasts(19, 300.0))  # targets 20, 21, 22
    view = rows(
        engine,
        "SELECT target_time, value FROM latest_forecasts WHERE series = :s ORDER BY target_time",
        s=SERIES,
    )
    values = [value for _, value in view]
    assert values == [101.0, 102.0, 301.0, 302.0, 303.0]
    upcoming = latest_forecasts(engine, SERIES)
    assert upcoming["target_time"].tolist() == [day(20), day(21), day(22)]
    assert upcoming["value"].tolist() == [301.0, 302.0, 303.0]


def test_unscored_runs_wait_for_final_candles_at_every_target(engine):
    v = version(engine)
    run = write_forecast_run(engine, SERIES, v, forecasts(18)).run  # targets 19, 20, 21
    assert unscored_runs(engine, SERIES) == []  # candles end at day 19
    store_candles(engine, 22)
    assert [r.id for r in unscored_runs(engine, SERIES)] == [run.id]
    assert recent_run_forecasts(engine, SERIES, last_runs=5)["run_id"].unique().tolist() == [run.id]
    metrics = pd.DataFrame(
        {
            "n": [3, 1],
            "rmse": [2.0, 1.0],
            "skill": [np.nan, 0.5],
            "first_target": [day(19), day(19)],
            "last_target": [day(21), day(19)],
        },
        index=pd.Index([0, 1], name="horizon"),
    )
    for name in (
        "mae",
        "mape",
        "smape",
        "mase",
        "direction",
        "coverage_80",
        "width_80",
        "coverage_95",
        "width_95",
        "naive_rmse",
    ):
        metrics[name] = 1.0
    write_run_metrics(engine, run, metrics)
    write_run_metrics(engine, run, metrics.assign(rmse=[4.0, 3.0]))  # again: replaced
    assert unscored_runs(engine, SERIES) == []
    stored = run_metrics(engine, run.id)
    assert stored["rmse"].tolist() == [4.0, 3.0] and pd.isna(stored.loc[0, "skill"])
    write_version_metrics(engine, SERIES, v, metrics, n_runs=1)
    write_version_metrics(engine, SERIES, v, metrics.assign(skill=[0.25, 0.5]), n_runs=1)
    assert version_metrics(engine, v)["skill"].tolist() == [0.25, 0.5]
    board = rows(engine, "SELECT model_version_id, skill_rank, skill FROM model_leaderboard")
    assert [tuple(row) for row in board] == [(v, 1, 0.25)]


def test_forecast_vs_actual_view_sets_each_forecast_beside_its_close(engine):
    v = version(engine)
    write_forecast_run(engine, SERIES, v, forecasts(18, 100.0))
    store_candles(engine, 21)  # day 19 and 20 final, day 21 not yet there
    view = rows(
        engine,
        "SELECT target_time, forecast, actual, error, inside_95 "
        "FROM forecast_vs_actual ORDER BY target_time",
    )
    assert len(view) == 2
    for target, forecast, actual, error, inside in view:
        close = float(CANDLES["close"].loc[utc(target)])
        assert actual == pytest.approx(close)
        assert error == pytest.approx(close - forecast)
        assert inside == int(80.0 <= close <= 120.0)


def test_downgrade_drops_the_views_and_tables(engine):
    downgrade(engine, "0001")
    names = set(sa.inspect(engine).get_table_names()) | set(sa.inspect(engine).get_view_names())
    assert not names & {"model_versions", "forecasts", "latest_forecasts", "model_leaderboard"}
    migrate(engine)
    assert "latest_forecasts" in sa.inspect(engine).get_view_names()


def test_latest_forecast_of_one_series_is_an_index_lookup(sqlite_url):
    engine = make_engine(sqlite_url)
    migrate(engine)
    plan = rows(
        engine,
        "EXPLAIN QUERY PLAN SELECT * FROM latest_forecasts "
        "WHERE series = 'Bitstamp_BTCUSD_d' AND target_time > '2020-01-01'",
    )
    details = " ".join(str(row[-1]) for row in plan)
    assert "SEARCH f USING INDEX ix_forecasts_series_target_time" in details
    assert "SCAN" not in details


def test_times_are_utc_everywhere(engine):
    v = version(engine)
    run = write_forecast_run(engine, SERIES, v, forecasts(19)).run
    assert run.as_of == dt.datetime(2020, 1, 20, tzinfo=dt.UTC)
    assert runs(engine, SERIES)[0].created_at.tzinfo is not None
