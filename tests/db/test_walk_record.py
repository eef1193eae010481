"""A walk forward's record held in memory is, at every as_of, what the tables would give."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.orm import Session

from db.aggregation import RECORD_VALUES, WalkRecord, recent_closes, scored_record
from db.candles import upsert_candles
from db.engine import make_engine, migrate
from db.forecasts import write_forecast_run
from tests.db.test_forecast_store import CANDLES, KEY, SERIES, day, version

PERIOD = pd.Timedelta(days=1)
ROUNDS = 6  # a short window, so that it slides during the walk
FINAL = 34  # candles 0..33 are final, 34..39 not yet


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url)
    migrate(engine)
    candles = CANDLES.copy()
    candles.iloc[FINAL:, candles.columns.get_loc("is_final")] = False
    with Session(engine) as session, session.begin():
        upsert_candles(session, KEY, candles)
    yield engine
    engine.dispose()


def served(as_of: int, seed: int, horizon: int = 4) -> pd.DataFrame:
    """A served run as of day ``as_of``: random values, some serving columns missing (NULL)."""
    rng = np.random.default_rng(seed)
    close = float(CANDLES["close"].iloc[as_of])
    h = np.arange(1, horizon + 1)
    frame = pd.DataFrame(
        {"as_of": day(as_of), "target_time": [day(as_of + i) for i in h], "horizon": h}
    )
    for name in (*RECORD_VALUES, "drift", "volatility"):
        frame[name] = close * np.exp(rng.normal(0, 0.05, horizon))
    frame.loc[rng.random(horizon) < 0.3, "lstm_value"] = np.nan  # stored as NULL
    if seed % 3 == 0:
        frame = frame.drop(columns=["scale_80", "naive_lower_95"])  # an older run's columns
    return frame


def test_the_record_of_a_walk_is_what_the_tables_give_at_each_as_of(engine):
    old, new = version(engine), version(engine)
    for as_of in range(3, 15):  # runs before the walk, some in its first windows
        write_forecast_run(engine, SERIES, old, served(as_of, seed=as_of))
    # as of day 17 a newer version's run has the higher id; the walk's run of the old version
    # replaces the old one in place, keeping its lower id: the newer one still counts
    write_forecast_run(engine, SERIES, old, served(17, seed=100))
    write_forecast_run(engine, SERIES, new, served(17, seed=101))
    record = WalkRecord(engine, SERIES, day(15).to_pydatetime(), period=PERIOD, rounds=ROUNDS)
    compared = 0
    for as_of in range(15, 39):  # past the last final candle: targets without an actual
        at = day(as_of).to_pydatetime()
        expected = scored_record(engine, SERIES, at, period=PERIOD, rounds=ROUNDS)
        pd.testing.assert_frame_equal(record.at(at), expected, check_exact=True)
        since = (day(as_of) - pd.Timedelta(days=5)).to_pydatetime()
        pd.testing.assert_series_equal(
            record.closes(at, since=since), recent_closes(engine, SERIES, at, since=since)
        )
        compared += len(expected)
        written = write_forecast_run(
            engine, SERIES, old, served(as_of, seed=1000 + as_of), kind="backfill"
        )
        record.add(written.run.id, written.run.as_of, written.rows)
    assert compared > 100
    # closes from before what it read come from the tables
    early = day(2).to_pydatetime()
    at = day(20).to_pydatetime()
    pd.testing.assert_series_equal(
        record.closes(at, since=early), recent_closes(engine, SERIES, at, since=early)
    )
    with pytest.raises(ValueError, match="was read from"):
        record.at(day(14).to_pydatetime())


def test_a_walk_over_a_series_without_runs_starts_from_an_empty_record(engine):
    record = WalkRecord(engine, SERIES, day(10).to_pydatetime(), period=PERIOD, rounds=ROUNDS)
    v = version(engine)
    for as_of in range(10, 20):
        at = day(as_of).to_pydatetime()
        expected = scored_record(engine, SERIES, at, period=PERIOD, rounds=ROUNDS)
        pd.testing.assert_frame_equal(record.at(at), expected, check_exact=True)
        written = write_forecast_run(engine, SERIES, v, served(as_of, seed=as_of))
        record.add(written.run.id, written.run.as_of, written.rows)
    assert len(record.at(day(19).to_pydatetime())) > 0
