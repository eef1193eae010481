"""A backfill of a series in timeframe scope walks forward with its group's global model."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cdd.series_key import SeriesKey
from db.candles import upsert_candles
from db.engine import get_engine, make_engine, migrate
from db.forecast_tables import ForecastRun, ModelVersion
from db.forecasts import run_forecasts, runs
from db.locks import current
from db.registry import ModelScope, group_members, latest_version
from flows.backfill import backfill_flow, one_backfill_per_group
from flows.backfill_plan import BackfillError
from settings import get_settings
from tests.flows.cdd_files import make_candles
from tests.flows.forecast_service import TINY

BTC, ETH, NEW = "Bitstamp_BTCUSD_d", "Bitstamp_ETHUSD_d", "Kraken_NEWUSD_d"
FIRST_DAY = dt.date(2020, 1, 1)
# NEW starts on day 42 with 8 candles: a window (7) from day 48 on, never enough to train alone
CANDLES = {BTC: (0, 60), ETH: (0, 60), NEW: (42, 8)}  # series: (first day, candles)


def day(n: int) -> dt.date:
    return FIRST_DAY + dt.timedelta(days=n)


def at(n: int) -> pd.Timestamp:
    return pd.Timestamp(day(n), tz="UTC")


def candles_of(series: str) -> pd.DataFrame:
    first, n = CANDLES[series]
    return make_candles(
        SeriesKey.parse(series), n, start=str(day(first)), seed=list(CANDLES).index(series)
    )


def store(engine, series: str, candles: pd.DataFrame) -> None:
    with Session(engine) as session, session.begin():
        upsert_candles(session, SeriesKey.parse(series), candles)


def start_group(monkeypatch) -> object:
    monkeypatch.setenv("CDDF_FORECASTER", TINY)
    monkeypatch.setenv("CDDF_TIMEFRAME_SETTINGS", '{"d": {"model_scope": "timeframe"}}')
    monkeypatch.setenv("CDDF_SERIES", ",".join(CANDLES))
    fresh = make_engine(get_settings().database_url.get_secret_value())
    migrate(fresh)
    fresh.dispose()
    engine = get_engine()
    for series in CANDLES:
        store(engine, series, candles_of(series))
    return engine


@pytest.fixture
def group_service(service_database, monkeypatch, prefect_harness):
    """BTC, ETH and NEW of one global daily model, on SQLite and PostgreSQL."""
    return start_group(monkeypatch)


@pytest.fixture
def sqlite_group(sqlite_url, monkeypatch, prefect_harness):
    """As ``group_service``, on SQLite only."""
    monkeypatch.setenv("CDDF_DATABASE_URL", sqlite_url)
    return start_group(monkeypatch)


def run_versions(engine, series: str) -> dict[pd.Timestamp, ModelVersion]:
    """The model version of each as_of's run of ``series`` (one run per as_of)."""
    with Session(engine) as session:
        rows = session.execute(
            select(ForecastRun.as_of, ForecastRun.kind, ModelVersion)
            .join(ModelVersion, ModelVersion.id == ForecastRun.model_version_id)
            .where(ForecastRun.series == series)
        ).all()
    assert {kind for _, kind, _ in rows} <= {"backfill"}
    found = {pd.Timestamp(as_of).tz_convert("UTC"): version for as_of, _, version in rows}
    assert len(found) == len(rows), "two runs of one as_of"
    return found


def count(engine, table) -> int:
    with Session(engine) as session:
        return session.execute(select(func.count()).select_from(table)).scalar_one()


def lstm_values(engine, series: str, as_of: pd.Timestamp) -> pd.DataFrame:
    newest = max(r.id for r in runs(engine, series) if pd.Timestamp(r.as_of) == as_of)
    frame = run_forecasts(engine, [newest]).set_index("horizon")
    return frame[["lstm_value", "lstm_lower_80", "lstm_upper_95", "naive"]]


def test_a_global_backfill_walks_forward_with_point_in_time_global_versions(group_service):
    engine = group_service
    # day 41 is a retrain day of the global d model every 3 days (retrain_offset 0): so are 44, 47
    summary = backfill_flow(BTC, day(41), day(45), retrain_every=3)
    assert [(s.as_of, s.action) for s in summary.steps] == [
        (at(41), "retrain"),
        (at(42), "finetune"),
        (at(43), "finetune"),
        (at(44), "retrain"),
        (at(45), "finetune"),
    ]
    assert (summary.group, summary.members) == ("d", (BTC, ETH, NEW))
    assert f"models (global d model of {BTC}, {ETH}, {NEW}): 2 retrained" in summary.lines()[1]

    by_as_of = run_versions(engine, BTC)
    assert sorted(by_as_of) == [at(n) for n in range(41, 46)]
    for as_of, version in by_as_of.items():
        # a global version of the group, trained on no candle after its as_of, of any member
        assert version.model_group == "d" and version.flow_run_id is not None
        assert pd.Timestamp(version.train_last) == as_of
        members = group_members(engine, version.id)
        assert members == {
            BTC: True,
            ETH: True,
            **({NEW: False} if as_of >= at(42) else {}),  # none before day 42; then too short
        }
        assert all(candles_of(m).index[0] <= as_of for m in members)
    v = [by_as_of[at(n)] for n in range(41, 46)]
    assert [(x.kind, x.parent_id) for x in v] == [
        ("retrain", None),
        ("finetune", v[0].id),
        ("finetune", v[1].id),
        ("retrain", None),
        ("finetune", v[3].id),
    ]
    assert [x.artifact_size > 0 for x in v] == [False] * 4 + [True]  # the newest keeps weights
    assert latest_version(engine, ModelScope.of_series(BTC)) is None  # no model of its own
    with Session(engine) as session:
        own = select(func.count()).where(ModelVersion.model_group.is_(None))
        assert session.execute(own).scalar_one() == 0
    assert summary.scored_runs == 5

    # idempotent: a rerun does nothing; resumable: a longer range fine-tunes the newest version
    n_versions, n_runs = count(engine, ModelVersion), count(engine, ForecastRun)
    again = backfill_flow(BTC, day(41), day(45), retrain_every=3)
    assert again.steps == [] and again.skipped == 5
    assert (count(engine, ModelVersion), count(engine, ForecastRun)) == (n_versions, n_runs)
    resumed = backfill_flow(BTC, day(41), day(47), retrain_every=3)
    assert resumed.skipped == 5
    assert [(s.as_of, s.action) for s in resumed.steps] == [
        (at(46), "finetune"),
        (at(47), "retrain"),
    ]
    after = run_versions(engine, BTC)
    assert after[at(46)].parent_id == v[4].id and after[at(46)].model_group == "d"
    assert {k: x.id for k, x in after.items() if k <= at(45)} == {
        k: x.id for k, x in by_as_of.items()
    }
    kept = [k for k, x in after.items() if x.artifact_size > 0]
    assert kept == [at(47)]


def test_no_member_candle_after_the_as_of_reaches_a_global_backfill(sqlite_group):
    engine = sqlite_group
    backfill_flow(BTC, day(40), day(42), retrain_every=7)
    before = {n: lstm_values(engine, BTC, at(n)) for n in (40, 41, 42)}

    # every ETH candle after day 41 changes (x 1.5); BTC's own candles stay as they were
    changed = candles_of(ETH)
    later = changed.index > at(41)
    changed.loc[later, ["open", "high", "low", "close"]] *= 1.5
    store(engine, ETH, changed)

    backfill_flow(BTC, day(40), day(42), retrain_every=7, force=True)
    for n in (40, 41):  # nothing they may see changed, another member's candles included
        pd.testing.assert_frame_equal(lstm_values(engine, BTC, at(n)), before[n], rtol=1e-6)
    # the control: as of day 42 ETH's changed candle is in the fine-tune, and the model moves
    after = lstm_values(engine, BTC, at(42))
    assert after["naive"].equals(before[42]["naive"])  # BTC's close is the same
    assert not np.allclose(after["lstm_value"], before[42]["lstm_value"], rtol=1e-9, atol=0)


def test_a_series_too_short_to_train_alone_is_backfilled_by_its_group(sqlite_group):
    engine = sqlite_group
    summary = backfill_flow(NEW, day(48), day(49), retrain_every=7)
    assert [s.action for s in summary.steps] == ["retrain", "finetune"]
    versions = run_versions(engine, NEW)
    assert sorted(versions) == [at(48), at(49)]
    for version in versions.values():
        assert version.series == BTC  # the group's first series trained on
        assert group_members(engine, version.id) == {BTC: True, ETH: True, NEW: False}

    with pytest.raises(BackfillError, match="the global d model needs one series of"):
        backfill_flow(BTC, day(5), day(6))  # no member has enough windows by then


def test_one_global_backfill_of_a_group_at_a_time(sqlite_group):
    with one_backfill_per_group("d") as lease:
        assert lease.name == "backfill-global-d"
        assert current(sqlite_group, "backfill-global-d").holder == lease.holder
    assert current(sqlite_group, "backfill-global-d") is None
