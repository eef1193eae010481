"""upsert_candles on both databases: counts, revisions, partial candles, rollback, bad frames."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from cdd.series_key import SeriesKey
from db.candles import UpsertCounts, load_candles, upsert_candles
from db.models import Candle, Series
from tests.db.factory import make_candles, snapshot, table_rows

KEY = SeriesKey.parse("Bitstamp_BTCUSD_d")


def upsert(engine: Engine, candles: pd.DataFrame, key: SeriesKey = KEY) -> UpsertCounts:
    with Session(engine) as session, session.begin():
        return upsert_candles(session, key, candles)


def stamps(engine: Engine) -> dict[pd.Timestamp, tuple]:
    """first_seen_at and updated_at of every stored candle, by candle time."""
    with Session(engine) as session:
        rows = session.execute(select(Candle.time, Candle.first_seen_at, Candle.updated_at))
        return {pd.Timestamp(time): (first, updated) for time, first, updated in rows}


def test_first_upsert_inserts_every_candle_and_creates_the_series(engine):
    candles = make_candles(periods=30)

    assert upsert(engine, candles) == UpsertCounts(inserted=30, updated=0, unchanged=0)

    with Session(engine) as session:
        series = session.execute(select(Series)).scalar_one()
    assert (series.key, series.exchange, series.pair, series.timeframe) == (
        "Bitstamp_BTCUSD_d",
        "Bitstamp",
        "BTCUSD",
        "d",
    )
    pd.testing.assert_frame_equal(load_candles(engine, KEY.key), candles, check_freq=False)


def test_reupserting_identical_candles_writes_nothing(engine):
    candles = make_candles(periods=30, partial_last=True)
    upsert(engine, candles)
    before = snapshot(engine)

    assert upsert(engine, candles) == UpsertCounts(inserted=0, updated=0, unchanged=30)
    assert snapshot(engine) == before  # updated_at untouched


def test_revised_and_new_candles_are_written_and_counted(engine):
    candles = make_candles(periods=20)
    upsert(engine, candles)
    before = stamps(engine)
    revised = pd.concat([candles, make_candles("2024-01-21", periods=3, seed=1)])
    revised.loc[candles.index[4], "close"] += 0.5
    revised.loc[candles.index[9], "volume_quote"] = 0.0

    assert upsert(engine, revised) == UpsertCounts(inserted=3, updated=2, unchanged=18, revised=2)

    pd.testing.assert_frame_equal(load_candles(engine, KEY.key), revised, check_freq=False)
    after = stamps(engine)
    for time, (first_seen, updated) in before.items():
        assert after[time][0] == first_seen  # first_seen_at kept
        if time in (candles.index[4], candles.index[9]):
            assert after[time][1] > updated
        else:
            assert after[time][1] == updated


def test_a_partial_candle_is_replaced_by_the_later_final_one(engine):
    next_download = make_candles(periods=11, partial_last=True)
    first_download = next_download.iloc[:10].copy()
    first_download.iloc[-1, first_download.columns.get_loc("is_final")] = False
    first_download.iloc[-1, first_download.columns.get_loc("close")] -= 1.0  # still moving
    upsert(engine, first_download)
    assert len(load_candles(engine, KEY.key)) == 9  # final candles only
    assert not load_candles(engine, KEY.key, final_only=False)["is_final"].iloc[-1]

    assert upsert(engine, next_download) == UpsertCounts(inserted=1, updated=1, unchanged=9)
    stored = load_candles(engine, KEY.key)
    assert len(stored) == 10
    pd.testing.assert_series_equal(stored.iloc[-1], next_download.iloc[9], check_names=False)


def test_a_final_candle_is_never_replaced_by_a_partial_one(engine):
    final = make_candles(periods=5)
    upsert(engine, final)
    stale = final.copy()
    stale.loc[final.index[-1], ["close", "is_final"]] = [1.0, False]

    assert upsert(engine, stale) == UpsertCounts(inserted=0, updated=0, unchanged=5)
    pd.testing.assert_frame_equal(load_candles(engine, KEY.key), final, check_freq=False)


@pytest.mark.parametrize("new_series", [False, True], ids=["same-series", "new-series"])
def test_a_failed_transaction_leaves_the_tables_exactly_as_before(engine, new_series):
    candles = make_candles(periods=15)
    upsert(engine, candles)
    before = snapshot(engine)
    key = SeriesKey.parse("Bitstamp_ETHUSD_d") if new_series else KEY
    changed = pd.concat([candles, make_candles("2024-01-16", periods=5, seed=2)])
    changed["close"] += 1.0

    with pytest.raises(RuntimeError, match="failed after the upsert"):
        with Session(engine) as session, session.begin():
            counts = upsert_candles(session, key, changed)
            assert counts.inserted + counts.updated == 20
            raise RuntimeError("ingest failed after the upsert")

    assert snapshot(engine) == before


def test_two_series_upserted_in_one_transaction(engine):
    eth = SeriesKey.parse("Bitstamp_ETHUSD_d")
    btc_revised, eth_revised = make_candles(periods=6), make_candles(periods=6, seed=3)
    upsert(engine, btc_revised.iloc[:5])
    upsert(engine, eth_revised.iloc[:5], eth)
    btc_revised["close"] += 1
    eth_revised["close"] += 2

    with Session(engine) as session, session.begin():
        assert upsert_candles(session, KEY, btc_revised) == UpsertCounts(1, 5, 0, 5)
        assert upsert_candles(session, eth, eth_revised) == UpsertCounts(1, 5, 0, 5)

    pd.testing.assert_frame_equal(load_candles(engine, KEY.key), btc_revised, check_freq=False)
    pd.testing.assert_frame_equal(load_candles(engine, eth.key), eth_revised, check_freq=False)


def test_an_empty_frame_only_registers_the_series(engine):
    assert upsert(engine, make_candles(periods=0)) == UpsertCounts(0, 0, 0)
    assert [row[1] for row in table_rows(engine, "series")] == ["Bitstamp_BTCUSD_d"]
    assert table_rows(engine, "candles") == []


def _naive(frame):
    return frame.tz_localize(None)


def _duplicated(frame):
    return pd.concat([frame, frame.iloc[[3]]])


def _missing_close(frame):
    return frame.drop(columns="close")


def _nan_close(frame):
    frame.iloc[2, frame.columns.get_loc("close")] = float("nan")
    return frame


def _infinite_volume(frame):
    frame.iloc[1, frame.columns.get_loc("volume_base")] = float("inf")
    return frame


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (_naive, "tz-aware UTC DatetimeIndex"),
        (_duplicated, "duplicate candle time 2024-01-04T00:00:00"),
        (_missing_close, "missing columns close"),
        (_nan_close, "close is missing or not a finite number at 2024-01-03T00:00:00"),
        (_infinite_volume, "volume_base is missing or not a finite number at 2024-01-02"),
    ],
)
def test_bad_frames_are_rejected_naming_the_series_and_nothing_is_written(engine, spoil, message):
    candles = spoil(make_candles(periods=6))

    with pytest.raises(ValueError, match=f"candles of Bitstamp_BTCUSD_d: .*{message}"):
        upsert(engine, candles)

    assert table_rows(engine, "series") == [] and table_rows(engine, "candles") == []


def test_the_series_may_be_given_by_its_key(engine):
    with Session(engine) as session, session.begin():
        assert upsert_candles(session, "Bitstamp_BTCUSD_d", make_candles(periods=4)).inserted == 4
    with pytest.raises(ValueError, match="invalid series key 'BTCUSD'"):
        with Session(engine) as session, session.begin():
            upsert_candles(session, "BTCUSD", make_candles(periods=4))


def test_a_nanosecond_index_of_a_daily_series_upserts_twice(engine):
    candles = make_candles(periods=30)
    candles.index = candles.index.as_unit("ns")

    assert upsert(engine, candles) == UpsertCounts(inserted=30, updated=0, unchanged=0)
    assert upsert(engine, candles) == UpsertCounts(inserted=0, updated=0, unchanged=30)


def test_a_series_key_longer_than_its_columns_is_refused_naming_the_limit(engine):
    """Issue 24.12: a 159-character key raised PostgreSQL's raw StringDataRightTruncation."""
    longest = SeriesKey.parse("E" * 50 + "_BTCUSD_d")  # series.exchange holds 50 characters
    assert upsert(engine, make_candles(periods=3), longest).inserted == 3
    for key, part, limit in (
        ("E" * 150 + "_BTCUSD_d", "key", 100),
        ("E" * 51 + "_BTCUSD_d", "exchange", 50),
    ):
        with pytest.raises(ValueError) as raised:
            SeriesKey.parse(key)
        message = str(raised.value)
        assert message.startswith(
            f"series key {key!r} is too long: its {part} has {len(key) if part == 'key' else 51}"
        )
        assert f"at most {limit} (column series.{part})" in message
