"""Retention (db/retention.py): the weights of serving, retrain and recent versions stay, the
older ones go with their rows kept; busy scopes are skipped; SQLite returns the space."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from cdd.series_key import SeriesKey
from db.candles import upsert_candles
from db.engine import make_engine, migrate
from db.forecast_tables import TrainOutcomeRow
from db.locks import current, release, try_acquire
from db.registry import (
    ArtifactNotKeptError,
    ModelScope,
    NewVersion,
    get_version,
    latest_version,
    load_artifact,
    record_train_outcome,
    register_version,
    sha256,
)
from db.retention import prune, sqlite_file_size
from tests.flows.cdd_files import make_candles

SERIES = "Bitstamp_BTCUSD_d"
OTHER = "Bitstamp_ETHUSD_d"
OWN = ModelScope.of_series(SERIES)
GLOBAL = ModelScope.of_group("d", [SERIES, OTHER])
RUN = "1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed"


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url)
    migrate(engine)
    with Session(engine) as session, session.begin():  # the series rows
        for key in (SERIES, OTHER):
            upsert_candles(session, SeriesKey.parse(key), make_candles(SeriesKey.parse(key), 5))
    yield engine
    engine.dispose()


def day(n: int) -> dt.datetime:
    return dt.datetime(2020, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=n)


def lineage(engine, days: int, *, group: str | None = None, size: int = 64) -> list[int]:
    """A retrain on day 0 and a fine-tune of the one before on each later day; their ids."""
    ids: list[int] = []
    for n in range(days):
        version = NewVersion(
            series=SERIES,
            kind="finetune" if ids else "retrain",
            parent_id=ids[-1] if ids else None,
            config={"window": 7},
            train_first=day(0),
            train_last=day(n),
            n_windows=10,
            validation_metrics={"rmse": float(n)},
            artifact=os.urandom(size),  # weights do not compress
            device="CPU",
            train_seconds=1.0,
            model_group=group,
            members={} if group is None else {SERIES: True, OTHER: True},
        )
        ids.append(register_version(engine, version).id)
    return ids


def test_serving_retrain_and_recent_keep_their_weights_older_keep_their_rows(engine):
    ids = lineage(engine, 10)  # retrain ids[0], fine-tunes ids[1..9]
    before = {version: get_version(engine, version) for version in ids}

    report = prune(engine, keep_versions=2)

    kept, dropped = [ids[0], *ids[7:]], ids[1:7]
    assert [(s.scope, s.serving, s.kept, s.dropped) for s in report.scopes] == [
        (SERIES, ids[9], tuple(kept), tuple(dropped))
    ]
    assert report.versions_dropped == 6 and report.bytes_freed == 6 * 64
    for version in kept:
        assert sha256(load_artifact(engine, version)) == before[version].artifact_sha256
    for version in dropped:
        after = get_version(engine, version)
        assert after.artifact_size == 0
        assert (after.parent_id, after.retrain_id, after.validation_metrics) == (
            before[version].parent_id,
            before[version].retrain_id,
            before[version].validation_metrics,
        )
        assert after.artifact_sha256 == before[version].artifact_sha256
        with pytest.raises(ArtifactNotKeptError) as caught:
            load_artifact(engine, version)
        assert f"model version {version} of {SERIES}" in str(caught.value)
        assert "CDDF_KEEP_VERSIONS" in str(caught.value) and "retrain" in str(caught.value)
    assert latest_version(engine, OWN).id == ids[9]  # still served


def test_a_global_model_is_its_own_scope_and_a_prune_is_idempotent(engine):
    own = lineage(engine, 3)
    group = lineage(engine, 6, group="d")

    first = prune(engine, keep_versions=1)

    assert (
        {s.scope: s.dropped for s in first.scopes}
        == {
            SERIES: (),  # its retrain is own[0], the serving own[2], the recent own[1]
            "global d model": tuple(group[1:4]),
        }
    )
    assert latest_version(engine, GLOBAL).id == group[5]
    assert all(load_artifact(engine, version) for version in own + [group[0], *group[4:]])
    with pytest.raises(ArtifactNotKeptError, match=f"model version {group[1]} "):
        load_artifact(engine, group[1])
    again = prune(engine, keep_versions=1)
    assert again.versions_dropped == 0 and again.bytes_freed == 0


def test_a_dry_run_changes_nothing_and_names_what_would_go(engine):
    ids = lineage(engine, 5)
    planned = prune(engine, keep_versions=0, dry_run=True)
    assert planned.scopes[0].dropped == tuple(ids[1:4])
    assert "would drop the weights of 3 model versions" in planned.summary()
    assert all(get_version(engine, version).artifact_kept for version in ids)
    done = prune(engine, keep_versions=0)
    assert done.scopes == planned.scopes


def test_a_scope_a_run_holds_is_skipped_until_it_is_released(engine):
    ids = lineage(engine, 5)
    lease = try_acquire(engine, f"daily-{SERIES}", "a daily run", dt.timedelta(minutes=5))

    busy = prune(engine, keep_versions=0)

    assert busy.busy == [SERIES] and busy.versions_dropped == 0
    assert SERIES in busy.summary() and "pruned next time" in busy.summary()
    assert all(get_version(engine, version).artifact_kept for version in ids)
    assert current(engine, f"daily-{SERIES}").holder == "a daily run"  # not taken from it
    assert current(engine, f"backfill-{SERIES}") is None  # the prune gave its own back
    release(engine, lease)
    assert prune(engine, keep_versions=0).versions_dropped == 3


def test_old_train_outcomes_and_expired_leases_go(engine):
    ids = lineage(engine, 3)
    record_train_outcome(engine, RUN, OWN, "finetune", "recent and skilful", ids[2])
    expired = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    try_acquire(engine, "backfill-Bitstamp_LTCUSD_d", "killed", dt.timedelta(1), now=expired)

    soon = prune(engine, keep_versions=3)
    assert soon.outcomes_deleted == 0 and soon.expired_leases == 1
    assert current(engine, "backfill-Bitstamp_LTCUSD_d") is None

    later = prune(engine, keep_versions=3, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=31))
    assert later.outcomes_deleted == 1
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(TrainOutcomeRow)) == 0
    assert get_version(engine, ids[2]).artifact_kept  # the outcome went, not the version


def test_sqlite_returns_the_freed_space_to_the_operating_system(sqlite_url):
    engine = make_engine(sqlite_url)
    migrate(engine)
    with Session(engine) as session, session.begin():
        upsert_candles(session, SeriesKey.parse(SERIES), make_candles(SeriesKey.parse(SERIES), 5))
    lineage(engine, 12, size=1_000_000)
    before = sqlite_file_size(engine)

    report = prune(engine, keep_versions=1)

    assert report.versions_dropped == 9 and report.bytes_freed == 9_000_000
    assert report.vacuum is not None and report.vacuum.before >= before  # + the drop's log
    assert sqlite_file_size(engine) == report.vacuum.after < before - 8_000_000
    engine.dispose()


def test_postgresql_returns_it_after_vacuum_full_as_the_docs_say(postgres_url):
    engine = make_engine(postgres_url)
    migrate(engine)
    with Session(engine) as session, session.begin():
        upsert_candles(session, SeriesKey.parse(SERIES), make_candles(SeriesKey.parse(SERIES), 5))
    lineage(engine, 12, size=1_000_000)
    size = text("SELECT pg_total_relation_size('model_versions')")
    with engine.connect() as connection:
        before = connection.execute(size).scalar_one()

    report = prune(engine, keep_versions=1)

    assert report.bytes_freed == 9_000_000 and report.vacuum is None  # autovacuum's, or yours
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM FULL model_versions"))
        after = connection.execute(size).scalar_one()
    assert after < before - 8_000_000
    engine.dispose()
