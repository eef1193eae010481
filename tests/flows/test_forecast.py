"""The forecast flow: H forecasts with intervals beside the naive one; a re-run replaces."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.forecast_tables import Forecast, ForecastRun, ModelVersion
from db.forecasts import run_forecasts, runs
from db.registry import ArtifactChecksumError
from flows.forecast import forecast_flow
from flows.train import train_flow
from tests.flows.forecast_service import (
    HORIZON,
    N_CANDLES,
    SERIES,
    candles_until,
    count_rebuilt_models,
    start_service,
)


@pytest.fixture
def service(service_database, monkeypatch, prefect_harness):
    return start_service(monkeypatch)


def count(engine, table) -> int:
    with Session(engine) as session:
        return session.execute(select(func.count()).select_from(table)).scalar_one()


def test_forecasts_with_intervals_beside_the_naive_and_a_rerun_replaces(service):
    version = train_flow(SERIES).version
    first = forecast_flow(SERIES)
    last = candles_until(N_CANDLES).iloc[-1]
    assert first.model_version_id == version.id and first.as_of == last.name
    stored = run_forecasts(service, [first.run_id])
    assert stored["horizon"].tolist() == list(range(1, HORIZON + 1))
    assert stored["target_time"].tolist() == [
        last.name + pd.Timedelta(days=h) for h in range(1, HORIZON + 1)
    ]
    assert (stored["naive"] == last["close"]).all()
    bands = stored[["lower_95", "lower_80", "value", "upper_80", "upper_95"]].to_numpy()
    assert (np.diff(bands, axis=1) >= 0).all()
    np.testing.assert_allclose(stored["value"], first.forecasts["value"])
    run = runs(service, SERIES)[0]
    assert run.kind == "daily" and run.flow_run_id

    again = forecast_flow(SERIES, kind="backfill")
    assert again.replaced and again.run_id == first.run_id
    assert count(service, ForecastRun) == 1 and count(service, Forecast) == HORIZON
    assert runs(service, SERIES)[0].kind == "backfill"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_forecasting_without_a_model_says_to_train_first(service):
    with pytest.raises(LookupError, match=f"run train_flow\\('{SERIES}'\\) first"):
        forecast_flow(SERIES)
    assert runs(service, SERIES) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_forecast_handed_a_version_uses_it_not_a_newer_one(service):
    handed = train_flow(SERIES).version
    newer = train_flow(SERIES, mode="retrain").version  # as a backfill registering one meanwhile
    outcome = forecast_flow(SERIES, version_id=handed.id)
    assert outcome.model_version_id == handed.id != newer.id
    assert forecast_flow(SERIES).model_version_id == newer.id  # a run on its own: the newest
    early = candles_until(60).index[-1].to_pydatetime()
    with pytest.raises(
        ValueError,
        match=f"model version {newer.id} of {SERIES}, trained up to .*: it cannot forecast",
    ):
        forecast_flow(SERIES, as_of=early, version_id=newer.id)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_model_is_rebuilt_once_per_process_yet_an_altered_artifact_still_fails(
    service, monkeypatch
):
    rebuilt = count_rebuilt_models(monkeypatch)
    version = train_flow(SERIES).version
    first = forecast_flow(SERIES)
    second = forecast_flow(SERIES, kind="backfill")
    assert rebuilt == [version.id]  # the second forecast reused the loaded model
    np.testing.assert_array_equal(first.forecasts["value"], second.forecasts["value"])

    with Session(service) as session, session.begin():
        altered = session.get(ModelVersion, version.id)
        altered.artifact = altered.artifact[:-1] + bytes([altered.artifact[-1] ^ 0xFF])
    with pytest.raises(ArtifactChecksumError, match=f"model version {version.id} of {SERIES}"):
        forecast_flow(SERIES)  # the artifact is checked on every forecast, loaded or not
