"""The train flow: registration, the auto policy, corrupted artifacts, a kill mid-fit."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from prefect.exceptions import ParameterTypeError
from sqlalchemy import update
from sqlalchemy.orm import Session

from db.forecast_tables import ModelVersion
from db.registry import (
    ArtifactChecksumError,
    ModelScope,
    latest_version,
    load_artifact,
    versions,
)
from flows.candles import as_utc
from flows.evaluate import evaluate_flow
from flows.forecast import forecast_flow
from flows.train import train_flow
from forecaster import ArtifactError, LSTMForecaster
from tests.flows.forecast_service import (
    HORIZON,
    N_CANDLES,
    SERIES,
    candles_until,
    start_service,
    store,
)

LAST = candles_until(N_CANDLES).index[-1]
# the policy does not depend on the database: these run on SQLite only, to save time
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def service(service_database, monkeypatch, prefect_harness):
    return start_service(monkeypatch)


def test_train_registers_a_version_then_auto_fine_tunes_keeps_and_retrains(service, monkeypatch):
    monkeypatch.delenv("CDDF_TIMEFRAME_SETTINGS")  # its retrain_after would win over the old form
    monkeypatch.setenv("CDDF_RETRAIN_AFTER_DAYS", "3")
    first = train_flow(SERIES)
    assert (first.action, first.reason) == ("retrain", "there is no model yet")
    version = first.version
    assert version.kind == "retrain" and version.parent_id is None
    assert (version.train_first, version.train_last) == (candles_until(1).index[0], LAST)
    assert version.config["units"] == 8 and version.config["horizon"] == HORIZON
    assert version.n_windows > 0 and version.device in ("CPU", "GPU")
    assert version.flow_run_id and version.train_seconds > 0
    assert "rmse" in version.validation_metrics
    model = LSTMForecaster.from_bytes(load_artifact(service, version.id))
    assert model.training_range_[1] == LAST

    store(service, candles_until(N_CANDLES + 2))
    second = train_flow(SERIES)
    assert second.action == "finetune"
    assert second.version.kind == "finetune" and second.version.parent_id == version.id
    assert second.version.retrain_id == version.id
    assert second.version.train_last == candles_until(N_CANDLES + 2).index[-1]

    third = train_flow(SERIES)  # no new final candle: the model stays
    assert third.action == "keep" and third.version.id == second.version.id
    assert [v.id for v in versions(service, SERIES)] == [version.id, second.version.id]

    store(service, candles_until(N_CANDLES + 3))
    fourth = train_flow(SERIES)  # 3 days of data since the retrain
    assert fourth.action == "retrain" and "3 days of data old" in fourth.reason
    assert fourth.version.retrain_id == fourth.version.id


@SQLITE_ONLY
def test_changing_a_series_settings_retrains_it_and_counts_age_in_its_candles(service, monkeypatch):
    monkeypatch.setenv("CDDF_SERIES", SERIES)
    monkeypatch.setenv("CDDF_SERIES_SETTINGS", f'{{"{SERIES}": {{"retrain_after": 2}}}}')
    first = train_flow(SERIES).version
    # its retrain days are every 2 days from its offset (0): the day after the first run is one
    store(service, candles_until(N_CANDLES + 1))
    aged = train_flow(SERIES)
    assert aged.action == "retrain"
    assert "(every retrain_after=2 days, offset 0) passed" in aged.reason
    assert "1 day of data old" in aged.reason
    store(service, candles_until(N_CANDLES + 2))
    tuned = train_flow(SERIES)
    assert tuned.action == "finetune"  # 1 candle old, no retrain day passed

    # a setting outside the forecaster config changes too: the series retrains
    monkeypatch.setenv(
        "CDDF_SERIES_SETTINGS", f'{{"{SERIES}": {{"retrain_after": 2, "train_candles": 40}}}}'
    )
    store(service, candles_until(N_CANDLES + 3))
    capped = train_flow(SERIES)
    assert capped.action == "retrain"
    assert capped.reason == f"the series' settings changed since version {tuned.version.id}"
    assert capped.version.config["train_candles"] == 40  # the newest 40 candles only
    assert capped.version.train_first == candles_until(N_CANDLES + 3).index[-40]
    assert first.train_first == candles_until(1).index[0]

    monkeypatch.setenv(  # and so does a forecaster setting of the series
        "CDDF_SERIES_SETTINGS",
        f'{{"{SERIES}": {{"retrain_after": 2, "train_candles": 40, "finetune_windows": 8}}}}',
    )
    store(service, candles_until(N_CANDLES + 4))
    again = train_flow(SERIES)
    assert again.action == "retrain" and "settings changed" in again.reason
    assert again.version.config["finetune_windows"] == 8


@SQLITE_ONLY
def test_a_version_stored_before_a_config_field_existed_is_fine_tuned_not_retrained(
    service, monkeypatch
):
    """An upgrade that adds a ForecasterConfig field at its default retrains nothing."""
    first = train_flow(SERIES).version
    older = {key: value for key, value in first.config.items() if key != "series_embedding"}
    with Session(service) as session, session.begin():
        session.execute(
            update(ModelVersion).where(ModelVersion.id == first.id).values(config=older)
        )
    store(service, candles_until(N_CANDLES + 1))
    assert train_flow(SERIES).action == "finetune"

    monkeypatch.setenv("CDDF_SERIES_SETTINGS", f'{{"{SERIES}": {{"series_embedding": 4}}}}')
    store(service, candles_until(N_CANDLES + 2))
    changed = train_flow(SERIES)  # the field set to another value is a change of settings
    assert changed.action == "retrain" and "settings changed" in changed.reason


@SQLITE_ONLY
def test_auto_retrains_when_the_recent_skill_falls_below_the_threshold(service, monkeypatch):
    train_flow(SERIES)
    forecast_flow(SERIES)
    store(service, candles_until(N_CANDLES + HORIZON))
    assert evaluate_flow(SERIES).runs_scored == 1
    monkeypatch.setenv("CDDF_RETRAIN_BELOW_SKILL", "1.5")  # no model reaches a skill of 1.5
    outcome = train_flow(SERIES)
    assert outcome.action == "retrain" and "below retrain_below_skill=1.5" in outcome.reason


def test_a_corrupted_artifact_fails_clearly_and_auto_falls_back_to_a_retrain(service):
    broken = train_flow(SERIES).version
    with Session(service) as session, session.begin():
        blob = bytearray(load_artifact(service, broken.id))
        blob[len(blob) // 2] ^= 0xFF
        session.execute(
            update(ModelVersion).where(ModelVersion.id == broken.id).values(artifact=bytes(blob))
        )
    with pytest.raises(ArtifactChecksumError, match=f"model version {broken.id} of {SERIES}"):
        forecast_flow(SERIES)
    with pytest.raises(ArtifactChecksumError, match="corrupted"):
        train_flow(SERIES, mode="finetune")

    outcome = train_flow(SERIES)  # same data, but the model does not load: retrain
    assert outcome.action == "retrain"
    assert outcome.reason == f"the artifact of version {broken.id} is corrupted"
    assert latest_version(service, ModelScope.of_series(SERIES)).id == outcome.version.id
    assert forecast_flow(SERIES).model_version_id == outcome.version.id


@SQLITE_ONLY
def test_an_artifact_that_does_not_load_is_a_clear_error(service):
    broken = train_flow(SERIES).version
    garbage = b"not a model at all"
    with Session(service) as session, session.begin():  # consistent checksum, bad content
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.id == broken.id)
            .values(artifact=garbage, artifact_sha256=hashlib.sha256(garbage).hexdigest())
        )
    with pytest.raises(ArtifactError, match=f"model version {broken.id} of {SERIES}"):
        forecast_flow(SERIES)
    with pytest.raises(ArtifactError):
        train_flow(SERIES, mode="finetune")


@SQLITE_ONLY
def test_point_in_time_training_and_forecasts_see_only_candles_up_to_as_of(service):
    as_of = candles_until(60).index[-1]
    early = train_flow(SERIES, as_of=as_of.to_pydatetime())
    assert early.version.train_last == as_of
    later = candles_until(68).index[-1]
    late = train_flow(SERIES, as_of=later.to_pydatetime())  # the age counts candle time
    assert late.action == "retrain" and "8 days of data old" in late.reason
    assert late.version.train_last == later
    outcome = forecast_flow(SERIES, as_of=as_of.to_pydatetime(), kind="backfill")
    assert outcome.model_version_id == early.version.id and outcome.as_of == as_of
    assert outcome.forecasts["target_time"].min() == as_of + pd.Timedelta(days=1)


def test_a_naive_as_of_is_read_as_utc():
    naive = datetime(2024, 6, 30)
    assert as_utc(naive) == datetime(2024, 6, 30, tzinfo=UTC)
    assert as_utc(datetime(2024, 6, 30, 2, tzinfo=timezone(timedelta(hours=2)))) == datetime(
        2024, 6, 30, tzinfo=UTC
    )
    assert as_utc(None) is None


@SQLITE_ONLY
def test_bad_parameters_fail_before_any_work(service):
    with pytest.raises(ValueError, match="invalid series key"):
        train_flow("BTCUSD")
    with pytest.raises(ParameterTypeError, match="mode"):
        train_flow(SERIES, mode="sometimes")
    with pytest.raises(LookupError, match="no model version to fine-tune"):
        train_flow(SERIES, mode="finetune")
    with pytest.raises(LookupError, match="ingest it first"):
        train_flow("Bitstamp_ETHUSD_d")
    assert versions(service, SERIES) == []


@SQLITE_ONLY
def test_killing_the_training_process_mid_fit_registers_nothing(service, tmp_path):
    serving = train_flow(SERIES).version
    store(service, candles_until(N_CANDLES + 2))
    child = subprocess.Popen(
        [sys.executable, "-c", _TRAIN_FOREVER],
        cwd=Path(__file__).parents[2],
        env=_child_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watchdog = threading.Timer(180, child.kill)  # a hung child fails the test, never hangs it
    watchdog.start()
    try:
        seen = []
        for line in child.stdout:  # wait until the network is in its second epoch
            seen.append(line)
            if "fit epoch 2/" in line:
                break
        else:
            pytest.fail("the training process ended before fitting:\n" + "".join(seen[-30:]))
        child.send_signal(signal.SIGKILL)
    finally:
        watchdog.cancel()
        child.kill()
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert [v.id for v in versions(service, SERIES)] == [serving.id]
    assert forecast_flow(SERIES).model_version_id == serving.id  # the old version serves


# A retrain that would run for a long time, its epochs logged to stdout.
_TRAIN_FOREVER = """
import logging, sys
handler = logging.StreamHandler(sys.stdout)
logging.getLogger("forecaster").addHandler(handler)
logging.getLogger("forecaster").setLevel(logging.INFO)
from flows.candles import as_utc
from flows.train import train_flow
train_flow("Bitstamp_BTCUSD_d", mode="retrain")
"""


def _child_environment() -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return os.environ | {
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PYTHONUNBUFFERED": "1",
        "CDDF_FORECASTER": '{"units": 8, "window": 7, "horizon": 3, "max_epochs": 100000, '
        '"patience": 100000, "batch_size": 8}',
    }


def test_training_progress_restores_the_level_after_trainings_that_overlap():
    """Two series training side by side in threads: the level comes back when both end."""
    import logging
    import threading

    from flows.train_progress import training_progress

    log = logging.getLogger("forecaster")
    before = log.level
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    while_second_trains: list[int] = []

    def first() -> None:
        with training_progress():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with training_progress():
            second_in.set()
            first_out.wait(5)
            while_second_trains.append(log.level)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert while_second_trains == [logging.INFO]  # the first's end left the second's lines on
    assert log.level == before
