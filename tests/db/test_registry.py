"""The model registry: one-transaction registration, latest / point-in-time lookup, checksums."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cdd.series_key import SeriesKey
from db.candles import upsert_candles
from db.engine import make_engine, migrate
from db.forecast_tables import ModelVersion
from db.registry import (
    ArtifactChecksumError,
    ArtifactNotKeptError,
    ModelScope,
    NewVersion,
    UnknownModelVersionError,
    drop_artifacts,
    get_version,
    latest_version,
    load_artifact,
    record_train_outcome,
    register_version,
    sha256,
    train_outcome,
    versions,
)
from tests.flows.cdd_files import make_candles

SERIES = "Bitstamp_BTCUSD_d"
OWN = ModelScope.of_series(SERIES)


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url)
    migrate(engine)
    with Session(engine) as session, session.begin():  # creates the series row
        upsert_candles(session, SeriesKey.parse(SERIES), make_candles(SeriesKey.parse(SERIES), 5))
    yield engine
    engine.dispose()


def day(n: int) -> dt.datetime:
    return dt.datetime(2020, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=n)


def new(kind="retrain", parent_id=None, last=10, artifact=b"model bytes", series=SERIES):
    return NewVersion(
        series=series,
        kind=kind,
        parent_id=parent_id,
        config={"window": 7, "horizon": 3},
        train_first=day(0),
        train_last=day(last),
        n_windows=42,
        validation_metrics={"rmse": 1.5, "skill": float("nan")},
        artifact=artifact,
        device="CPU",
        train_seconds=2.5,
        flow_run_id="1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed",
    )


def count(engine) -> int:
    with Session(engine) as session:
        return session.execute(select(func.count()).select_from(ModelVersion)).scalar_one()


def test_register_stores_every_field_and_the_artifact(engine):
    registered = register_version(engine, new())
    assert registered.retrain_id == registered.id and registered.parent_id is None
    stored = get_version(engine, registered.id)
    assert stored == registered
    assert stored.train_last == day(10) and stored.train_first.tzinfo is not None
    assert stored.validation_metrics == {"rmse": 1.5, "skill": None}  # JSON has no NaN
    assert stored.artifact_sha256 == sha256(b"model bytes") and stored.artifact_size == 11
    assert stored.flow_run_id == "1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed"
    assert load_artifact(engine, registered.id) == b"model bytes"


def test_a_fine_tune_joins_its_parents_lineage(engine):
    root = register_version(engine, new())
    child = register_version(engine, new("finetune", parent_id=root.id, last=11))
    grandchild = register_version(engine, new("finetune", parent_id=child.id, last=12))
    assert (child.parent_id, child.retrain_id) == (root.id, root.id)
    assert (grandchild.parent_id, grandchild.retrain_id) == (child.id, root.id)
    assert [v.id for v in versions(engine, SERIES)] == [root.id, child.id, grandchild.id]


def test_latest_is_by_training_data_and_point_in_time(engine):
    recent = register_version(engine, new(last=30))
    older = register_version(engine, new(last=10))  # registered later, trained on older data
    assert latest_version(engine, OWN).id == recent.id
    assert latest_version(engine, OWN, trained_until=day(20)).id == older.id
    assert latest_version(engine, OWN, trained_until=day(5)) is None
    assert latest_version(engine, ModelScope.of_series("Bitstamp_ETHUSD_d")) is None


def test_a_failed_registration_stores_nothing(engine):
    with pytest.raises(UnknownModelVersionError, match="does not exist"):
        register_version(engine, new("finetune", parent_id=999))
    with pytest.raises(IntegrityError):  # the series was never ingested
        register_version(engine, new(series="Bitstamp_ETHUSD_d"))
    with pytest.raises(ValueError, match="a fine-tune needs parent_id"):
        register_version(engine, new("finetune"))
    with pytest.raises(ValueError, match="non-empty bytes"):
        register_version(engine, new(artifact=b""))
    assert count(engine) == 0


def test_a_corrupted_artifact_is_a_clear_error(engine):
    registered = register_version(engine, new(artifact=b"the original model"))
    with Session(engine) as session, session.begin():
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.id == registered.id)
            .values(artifact=b"the 0riginal model")
        )
    with pytest.raises(ArtifactChecksumError) as caught:
        load_artifact(engine, registered.id)
    message = str(caught.value)
    assert f"model version {registered.id} of {SERIES}" in message
    assert "corrupted" in message and "retrain" in message
    with pytest.raises(UnknownModelVersionError):
        load_artifact(engine, registered.id + 1)


def test_dropped_weights_keep_the_row_and_are_never_served(engine):
    root = register_version(engine, new(last=10))
    child = register_version(engine, new("finetune", parent_id=root.id, last=11))
    assert drop_artifacts(engine, [child.id]) == 1
    assert drop_artifacts(engine, [child.id]) == 0  # already dropped
    stored = get_version(engine, child.id)
    assert (stored.artifact_size, stored.artifact_kept) == (0, False)
    assert stored.artifact_sha256 == child.artifact_sha256 and stored.parent_id == root.id
    with pytest.raises(ArtifactNotKeptError, match=f"model version {child.id} of {SERIES}"):
        load_artifact(engine, child.id)
    # the newest loadable model, trained on older data, is the one served
    assert latest_version(engine, OWN).id == root.id
    assert load_artifact(engine, root.id) == b"model bytes"
    assert drop_artifacts(engine, []) == 0


def test_a_global_version_is_no_series_own_and_the_reverse(engine):
    own = register_version(engine, new(last=10))
    group = register_version(engine, replace(new(last=20), model_group="d", members={SERIES: True}))
    assert latest_version(engine, OWN).id == own.id
    assert latest_version(engine, ModelScope.of_group("d", [SERIES])).id == group.id
    assert latest_version(engine, ModelScope.of_group("d", [SERIES])).members == (SERIES,)
    assert latest_version(engine, ModelScope.of_group("1h", [SERIES])) is None


def test_a_train_run_outcome_is_the_version_it_named_not_the_latest(engine):
    run = "0e4b9f7c-2f43-4a86-8f6c-1a2b3c4d5e6f"
    kept = register_version(engine, new(last=10))
    assert train_outcome(engine, run, OWN) is None
    record_train_outcome(engine, run, OWN, "keep", "no final candle after 2020-01-11", kept.id)
    newer = register_version(engine, new(last=12))  # another run's, registered afterwards
    assert latest_version(engine, OWN).id == newer.id
    assert train_outcome(engine, run, OWN) == ("keep", kept)
    # a scope the run did not train has no outcome; a rerun of the run replaces its row
    assert train_outcome(engine, run, ModelScope.of_group("d", [SERIES])) is None
    record_train_outcome(engine, run, OWN, "retrain", "a retrain was asked for", newer.id)
    assert train_outcome(engine, run, OWN) == ("retrain", newer)
