"""Two ingests of one series at the same time: serialised, never mixed, never a raw error."""

from __future__ import annotations

import sqlite3
import threading
import time

import pandas as pd
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

from cdd.series_key import SeriesKey
from db.candles import SeriesBusyError, UpsertCounts, load_candles, upsert_candles
from db.candles_postgresql import lock_series
from db.engine import SessionLimits, make_engine, migrate
from tests.db.factory import make_candles, table_rows

KEY = SeriesKey.parse("Bitstamp_BTCUSD_1h")


def _upsert_together(engine: Engine, frames: list[pd.DataFrame]) -> list[UpsertCounts]:
    """Upsert each frame in its own thread and transaction, all starting at once."""
    start = threading.Barrier(len(frames))
    results: list[UpsertCounts | BaseException | None] = [None] * len(frames)

    def ingest(slot: int) -> None:
        try:
            start.wait()
            with Session(engine) as session, session.begin():
                results[slot] = upsert_candles(session, KEY, frames[slot])
        except BaseException as error:  # reported by the assertion below
            results[slot] = error

    threads = [threading.Thread(target=ingest, args=(slot,)) for slot in range(len(frames))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(isinstance(result, UpsertCounts) for result in results), results
    return results


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_upserts_of_one_series_run_one_after_the_other(engine, round_):
    # the series exists already (so its row cannot serialise them); both downloads cover the
    # same 1,500 hours with different values, and each has hours of its own before them (the
    # same newest hour: neither is an old download, whose newest candle would count as partial)
    with Session(engine) as session, session.begin():
        older = make_candles("2023-12-30", periods=24, timeframe="1h", seed=98)
        upsert_candles(session, KEY, older)
    a = make_candles("2024-01-01", periods=1500, timeframe="1h", seed=round_)
    a = pd.concat([make_candles("2023-12-20", periods=100, timeframe="1h", seed=97), a])
    b = make_candles("2024-01-01", periods=1500, timeframe="1h", seed=round_ + 10)
    b = pd.concat([make_candles("2023-12-31", periods=24, timeframe="1h", seed=99), b])

    counts = _upsert_together(engine, [a, b])

    overlap = a.index.intersection(b.index)
    assert len(overlap) == 1500
    # the second to commit revises the 1,500 final hours of the first
    a_first = [UpsertCounts(1600, 0, 0), UpsertCounts(24, 1500, 0, revised=1500)]
    b_first = [UpsertCounts(100, 1500, 0, revised=1500), UpsertCounts(1524, 0, 0)]
    assert counts in (a_first, b_first)
    winner = b if counts == a_first else a  # the later transaction's values stand, all of them
    stored = load_candles(engine, KEY.key)
    assert stored.index.is_unique and len(stored) == 24 + 1624
    pd.testing.assert_frame_equal(stored.loc[overlap], winner.loc[overlap], check_freq=False)
    assert len(table_rows(engine, "series")) == 1


def test_an_upsert_holds_its_series_lock_until_commit(engine):
    with Session(engine) as session:
        with session.begin():
            upsert_candles(session, KEY, make_candles(periods=3, timeframe="1h"))
            assert not _can_write_now(engine)
        assert _can_write_now(engine)


def _can_write_now(engine: Engine) -> bool:
    """Whether another connection could start writing KEY's candles without waiting."""
    if engine.dialect.name == "postgresql":  # the writers' own path, waiting 0.2 s at most
        with Session(engine) as session, session.begin():
            session.execute(text("SET LOCAL lock_timeout = '200ms'"))
            try:
                lock_series(session, KEY)
            except SeriesBusyError:
                return False
            session.rollback()
            return True
    other = sqlite3.connect(engine.url.database, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as error:
        assert "locked" in str(error)
        return False
    finally:
        other.close()


def test_a_sqlite_writer_that_outlasts_the_busy_timeout_is_a_clear_error(sqlite_url):
    migrated = make_engine(sqlite_url)
    migrate(migrated)
    migrated.dispose()
    impatient = create_engine(sqlite_url, connect_args={"timeout": 0.05})
    other = sqlite3.connect(impatient.url.database, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another ingest in the middle of its transaction
    try:
        with pytest.raises(SeriesBusyError, match="candles of Bitstamp_BTCUSD_1h: another writer"):
            with Session(impatient) as session, session.begin():
                upsert_candles(session, KEY, make_candles(periods=3, timeframe="1h"))
    finally:
        other.execute("ROLLBACK")
        other.close()
        impatient.dispose()


def test_the_first_ingests_of_a_new_series_also_run_one_after_the_other(engine):
    # no series row yet: the second INSERT of the row waits for the first transaction
    a = make_candles("2024-01-01", periods=500, timeframe="1h", seed=1)
    b = make_candles("2024-01-01", periods=500, timeframe="1h", seed=2)

    counts = _upsert_together(engine, [a, b])

    assert sorted(counts, key=lambda c: c.inserted) == [
        UpsertCounts(0, 500, 0, revised=500),
        UpsertCounts(500, 0, 0),
    ]
    assert len(table_rows(engine, "series")) == 1
    assert len(load_candles(engine, KEY.key)) == 500


def test_a_postgresql_writer_queued_past_its_lock_timeout_is_a_clear_error(postgres_url):
    """A stuck writer holds the series; the next one ends within its lock_timeout, naming the
    series and what to do, instead of waiting without limit."""
    holder = make_engine(postgres_url)
    migrate(holder)
    impatient = make_engine(postgres_url, limits=SessionLimits(lock=1))
    try:
        with Session(holder) as stuck, stuck.begin():
            upsert_candles(stuck, KEY, make_candles(periods=3, timeframe="1h"))
            started = time.monotonic()
            with pytest.raises(SeriesBusyError, match="candles of Bitstamp_BTCUSD_1h: another"):
                with Session(impatient) as session, session.begin():
                    upsert_candles(session, KEY, make_candles(periods=3, timeframe="1h", seed=5))
            waited = time.monotonic() - started
        assert 1 <= waited < 30  # the 1 s lock_timeout, not the default minute nor forever
    finally:
        impatient.dispose()
        holder.dispose()
