"""Revisions of stored final candles on both databases: kept as history, limited, old downloads."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from cdd.series_key import SeriesKey
from db.candles import UpsertCounts, load_candles, upsert_candles
from db.ingest_runs import start_run
from db.models import CandleRevision, Series
from db.revisions import RevisionLimits, RevisionsRefusedError
from tests.db.factory import make_candles, snapshot

KEY = SeriesKey.parse("Bitstamp_BTCUSD_d")
LIMITS = RevisionLimits(max_revisions=5, max_age_periods=3)


def upsert(
    engine: Engine,
    candles: pd.DataFrame,
    *,
    run_id: int | None = None,
    limits: RevisionLimits | None = None,
) -> UpsertCounts:
    with Session(engine) as session, session.begin():
        return upsert_candles(session, KEY, candles, ingest_run_id=run_id, limits=limits)


def revisions(engine: Engine) -> list[CandleRevision]:
    with Session(engine) as session:
        query = sa.select(CandleRevision).order_by(CandleRevision.time, CandleRevision.id)
        return list(session.execute(query).scalars())


def everything(engine: Engine) -> dict[str, list[tuple]]:
    """Every row of series, candles, ingest_runs and candle_revisions."""
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT * FROM candle_revisions ORDER BY id")).all()
    return snapshot(engine) | {"candle_revisions": [tuple(row) for row in rows]}


def test_a_restated_close_of_a_final_candle_is_kept_as_a_revision(engine):
    candles = make_candles(periods=10)
    upsert(engine, candles)
    run_id = start_run(engine, KEY, "file:///Bitstamp_BTCUSD_d.csv")
    restated = candles.copy()
    day = candles.index[-2]
    restated.loc[day, "close"] += 7.25

    counts = upsert(engine, restated, run_id=run_id, limits=LIMITS)

    assert counts == UpsertCounts(inserted=0, updated=1, unchanged=9, revised=1)
    (revision,) = revisions(engine)
    with Session(engine) as session:
        sid = session.execute(sa.select(Series.id).where(Series.key == KEY.key)).scalar_one()
    assert (revision.series_id, revision.time, revision.ingest_run_id) == (sid, day, run_id)
    assert (revision.old_close, revision.new_close) == (
        candles.loc[day, "close"],
        restated.loc[day, "close"],
    )
    assert revision.old_open == revision.new_open == candles.loc[day, "open"]
    assert (revision.old_is_final, revision.new_is_final) == (True, True)
    assert revision.revised_at.tzinfo is not None
    assert load_candles(engine, KEY.key).loc[day, "close"] == restated.loc[day, "close"]


def test_partial_to_partial_and_partial_to_final_are_not_revisions(engine):
    final = make_candles(periods=8)
    morning = final.copy()
    morning.loc[final.index[-1], ["close", "is_final"]] = [final["close"].iat[-1] - 3, False]
    upsert(engine, morning)
    noon = morning.copy()
    noon.loc[final.index[-1], "close"] += 1  # the open day still moves

    assert upsert(engine, noon, limits=LIMITS) == UpsertCounts(0, 1, 7, revised=0)
    assert upsert(engine, final, limits=LIMITS) == UpsertCounts(0, 1, 7, revised=0)
    assert revisions(engine) == []
    pd.testing.assert_frame_equal(load_candles(engine, KEY.key), final, check_freq=False)


def test_more_revisions_than_the_limit_are_refused_and_nothing_is_written(engine):
    candles = make_candles(periods=10)
    upsert(engine, candles)
    before = everything(engine)
    restated = pd.concat([candles, make_candles("2024-01-11", periods=2, seed=5)])
    restated.loc[candles.index[-6:], "close"] += 1.0  # six final candles, within 5 periods

    with pytest.raises(RevisionsRefusedError) as refused:
        upsert(engine, restated, limits=RevisionLimits(max_revisions=5, max_age_periods=10))

    message = str(refused.value)
    assert message.startswith("Bitstamp_BTCUSD_d: the file revises 6 final candles already stored")
    assert "more than 5 (CDDF_MAX_REVISIONS)" in message
    old, new = candles["close"].iat[4], candles["close"].iat[4] + 1.0
    assert f"2024-01-05 close {old:,.8g} -> {new:,.8g}" in message
    assert "and 1 more" in message and "Nothing was written" in message
    assert "--accept-revisions" in message
    assert everything(engine) == before


def test_a_revision_older_than_the_age_limit_is_refused(engine):
    candles = make_candles(periods=10)
    upsert(engine, candles)
    before = everything(engine)
    restated = candles.copy()
    restated.loc[candles.index[5], "low"] -= 2.0  # 4 periods before the newest stored candle

    with pytest.raises(RevisionsRefusedError, match="CDDF_REVISION_MAX_AGE_PERIODS") as refused:
        upsert(engine, restated, limits=LIMITS)

    assert "the oldest 2024-01-06 is 4 periods before the newest stored candle 2024-01-10" in str(
        refused.value
    )
    assert everything(engine) == before
    younger = candles.copy()
    younger.loc[candles.index[6], "low"] -= 2.0  # 3 periods before: allowed
    assert upsert(engine, younger, limits=LIMITS).revised == 1


def test_without_limits_every_revision_is_stored_and_recorded(engine):
    candles = make_candles(periods=30)
    upsert(engine, candles)
    restated = candles.copy()
    restated["volume_quote"] *= 2

    assert upsert(engine, restated).revised == 30
    assert [revision.time for revision in revisions(engine)] == list(candles.index)
    pd.testing.assert_frame_equal(load_candles(engine, KEY.key), restated, check_freq=False)


def old_download(current: pd.DataFrame, end: int) -> pd.DataFrame:
    """What a download made during day ``end`` showed: the open day's values still moving,
    and two days that CryptoDataDownload corrected since. The parser, run today, calls every
    row final."""
    old = current.iloc[: end + 1].copy()
    old.loc[old.index[-1], ["close", "high"]] = [old["close"].iat[-1] - 40, old["high"].iat[-1] + 9]
    old.loc[old.index[[3, 7]], "close"] -= 5.0
    return old


def test_an_old_download_is_refused_its_partial_day_never_overwrites_a_final(engine):
    current = make_candles(periods=40)
    upsert(engine, current)
    before = everything(engine)
    old = old_download(current, end=20)

    with pytest.raises(RevisionsRefusedError) as refused:
        upsert(engine, old, limits=LIMITS)

    message = str(refused.value)
    assert "revises 2 final candles" in message  # the open day of the old file is no revision
    assert "the oldest 2024-01-04 is 36 periods before the newest stored candle 2024-02-09" in (
        message
    )
    assert everything(engine) == before


def test_an_accepted_old_download_records_its_revisions_but_keeps_the_newer_day(engine):
    current = make_candles(periods=40)
    upsert(engine, current)
    old = old_download(current, end=20)
    run_id = start_run(engine, KEY, "file:///2020/Bitstamp_BTCUSD_d.csv")

    counts = upsert(engine, old, run_id=run_id, limits=None)  # --accept-revisions

    assert counts == UpsertCounts(inserted=0, updated=2, unchanged=19, revised=2)
    assert [(r.time, r.ingest_run_id) for r in revisions(engine)] == [
        (current.index[3], run_id),
        (current.index[7], run_id),
    ]
    expected = current.copy()
    expected.loc[current.index[[3, 7]], "close"] -= 5.0
    pd.testing.assert_frame_equal(load_candles(engine, KEY.key), expected, check_freq=False)


def test_an_old_downloads_newest_candle_is_stored_as_partial(engine):
    current = make_candles(periods=40)
    missing = current.index[20]
    upsert(engine, current.drop(missing))
    old = current.iloc[:21].copy()  # its newest row is the missing day, then still open

    assert upsert(engine, old, limits=LIMITS) == UpsertCounts(1, 0, 20, revised=0)
    stored = load_candles(engine, KEY.key, final_only=False)
    assert not stored.loc[missing, "is_final"]
    assert missing not in load_candles(engine, KEY.key).index
