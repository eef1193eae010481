"""load_candles and series_summary on both databases."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import db.candles_postgresql
from cdd.series_key import SeriesKey
from db.candles import (
    SeriesSummary,
    UnknownSeriesError,
    load_candles,
    series_summary,
    upsert_candles,
)
from tests.db.factory import make_candles

KEY = SeriesKey.parse("Bitstamp_BTCUSD_d")


def store(engine: Engine, key: SeriesKey, candles: pd.DataFrame) -> None:
    with Session(engine) as session, session.begin():
        upsert_candles(session, key, candles)


def test_load_candles_returns_the_candles_frame(engine):
    candles = make_candles(periods=40, partial_last=True)
    store(engine, KEY, candles)

    loaded = load_candles(engine, KEY)

    assert isinstance(loaded.index, pd.DatetimeIndex) and str(loaded.index.tz) == "UTC"
    assert loaded.index.name == "time" and loaded.index.is_monotonic_increasing
    assert list(loaded.columns) == [*candles.columns]
    assert loaded.dtypes.to_dict() == {
        **dict.fromkeys(candles.columns[:-1], np.float64),
        "is_final": bool,
    }
    pd.testing.assert_frame_equal(loaded, candles.iloc[:-1], check_freq=False)
    everything = load_candles(engine, KEY.key, final_only=False)
    pd.testing.assert_frame_equal(everything, candles, check_freq=False)


def test_until_is_inclusive_and_may_be_any_tz_aware_time(engine):
    candles = make_candles(periods=20)
    store(engine, KEY, candles)

    assert load_candles(engine, KEY.key, until=candles.index[9]).index[-1] == candles.index[9]
    tokyo = pd.Timestamp("2024-01-10 08:59", tz="Asia/Tokyo")  # 2024-01-09 23:59 UTC
    assert load_candles(engine, KEY.key, until=tokyo).index[-1] == candles.index[8]
    assert len(load_candles(engine, KEY.key, until=dt.datetime(2023, 1, 1, tzinfo=dt.UTC))) == 0
    assert len(load_candles(engine, KEY.key, until="2030-01-01T00:00Z")) == 20


def test_a_naive_until_is_refused(engine):
    store(engine, KEY, make_candles(periods=3))
    with pytest.raises(ValueError, match="until=.* for Bitstamp_BTCUSD_d is naive"):
        load_candles(engine, KEY.key, until=pd.Timestamp("2024-01-02"))


def test_an_unknown_series_is_a_clear_error(engine):
    with pytest.raises(UnknownSeriesError, match="Bitstamp_ETHUSD_d .*cdd-forecast ingest"):
        load_candles(engine, "Bitstamp_ETHUSD_d")


def test_a_series_without_final_candles_loads_empty(engine):
    store(engine, KEY, make_candles(periods=1, partial_last=True))

    loaded = load_candles(engine, KEY.key)

    assert loaded.empty and list(loaded.columns) == [*make_candles().columns]
    assert str(loaded.index.tz) == "UTC" and loaded["is_final"].dtype == bool


def test_loads_read_long_series_in_windows(engine, monkeypatch):
    monkeypatch.setattr(db.candles_postgresql, "WINDOW_PERIODS", 7)  # PostgreSQL reads windows
    candles = make_candles(periods=50)
    store(engine, KEY, candles.iloc[:30])

    revised = candles.copy()
    revised.loc[candles.index[3], "low"] -= 1
    with Session(engine) as session, session.begin():
        assert upsert_candles(session, KEY, revised) == (20, 1, 29, 1)  # 1 revised
    pd.testing.assert_frame_equal(load_candles(engine, KEY.key), revised, check_freq=False)


def test_series_summary_counts_candles_and_missing_periods(engine):
    daily = make_candles("2024-01-01", periods=10).drop(
        pd.to_datetime(["2024-01-03", "2024-01-07"], utc=True)
    )
    hourly = make_candles("2024-03-01", periods=48, timeframe="1h", partial_last=True)
    hourly = hourly.drop(hourly.index[10:13])
    store(engine, KEY, daily)
    store(engine, SeriesKey.parse("Bitstamp_ETHUSD_1h"), hourly)
    store(engine, SeriesKey.parse("Binance_BTCUSDT_minute"), make_candles(periods=0))

    summaries = series_summary(engine)

    utc = dt.UTC
    assert summaries == [
        SeriesSummary("Binance_BTCUSDT_minute", "Binance", "BTCUSDT", "minute", None, None, 0, 0),
        SeriesSummary(
            "Bitstamp_BTCUSD_d",
            "Bitstamp",
            "BTCUSD",
            "d",
            dt.datetime(2024, 1, 1, tzinfo=utc),
            dt.datetime(2024, 1, 10, tzinfo=utc),
            8,
            2,
        ),
        SeriesSummary(
            "Bitstamp_ETHUSD_1h",
            "Bitstamp",
            "ETHUSD",
            "1h",
            dt.datetime(2024, 3, 1, tzinfo=utc),
            dt.datetime(2024, 3, 2, 23, tzinfo=utc),
            45,
            3,
        ),
    ]
