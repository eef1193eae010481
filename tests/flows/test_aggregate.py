"""The served forecast in the service: the aggregate beside the LSTM's, weights stored, point
in time, interval state that survives a retrain, and its scores with DM in SQL."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from db.aggregation import forecast_weights, scored_record
from db.forecasts import run_forecasts, write_forecast_run
from db.registry import NewVersion, register_version
from flows.evaluate import evaluate_flow
from flows.forecast import forecast_flow
from flows.train import train_flow
from forecaster.aggregate import EXPERTS, QUANTITIES, RECORD_ROUNDS
from tests.db.factory import version_metrics
from tests.flows.forecast_service import HORIZON, N_CANDLES, SERIES, candles_until, start_service

CANDLES = candles_until(N_CANDLES)
FIRST = 40  # the record: a run as of each day from FIRST to the last candle


@pytest.fixture
def service(service_database, monkeypatch, prefect_harness):
    return start_service(monkeypatch)


def record_frame(day: int, *, noise: float, half: float, seed: int) -> pd.DataFrame:
    """A past run as of candle ``day``: the close moved by noise, bands ± half (log)."""
    rng = np.random.default_rng(seed)
    as_of, close = CANDLES.index[day], float(CANDLES["close"].iloc[day])
    h = np.arange(1, HORIZON + 1)
    value = close * np.exp(rng.normal(0, noise, HORIZON))
    bands = {
        f"{b}_{n}": value * np.exp(sign * width)
        for n, width in (("80", half), ("95", 2 * half))
        for b, sign in (("lower", -1), ("upper", 1))
    }
    return pd.DataFrame(
        {
            "as_of": as_of,
            "target_time": as_of + pd.to_timedelta(h, unit="D"),
            "horizon": h,
            "value": value,
            "naive": close,
            "drift": close,
            "volatility": 0.01 * (day % 5 + 1),
            **bands,
            **{f"lstm_{name}": band for name, band in bands.items()},
            "lstm_value": value,
            "naive_lower_80": close * 0.97,
            "naive_upper_80": close * 1.03,
            "naive_lower_95": close * 0.95,
            "naive_upper_95": close * 1.05,
            "scale_80": 1.0,
            "scale_95": 1.0,
        }
    )


def write_record(engine, version_id: int, *, half: float) -> None:
    for day in range(FIRST, N_CANDLES):
        frame = record_frame(day, noise=0.02, half=half, seed=day)
        write_forecast_run(engine, SERIES, version_id, frame, kind="backfill")


def test_the_service_serves_the_aggregate_and_its_intervals_survive_a_retrain(service):
    first = train_flow(SERIES).version
    outcome = forecast_flow(SERIES)
    assert outcome.weights["from_prior"].all()  # a new series: no scored forecast yet
    assert "weights from the prior" in outcome.summary and "a new series" in outcome.summary

    write_record(service, first.id, half=0.001)  # the old runs' bands: far too narrow
    again = forecast_flow(SERIES, version_id=first.id)
    as_of = CANDLES.index[-1]
    scored = scored_record(
        service, SERIES, as_of.to_pydatetime(), period=pd.Timedelta(days=1), rounds=RECORD_ROUNDS
    )
    assert len(scored) and (scored["target_time"] <= as_of).all()
    expected_rounds = scored.groupby("horizon").size().tolist()
    assert expected_rounds == [N_CANDLES - FIRST - h for h in range(1, HORIZON + 1)]

    weights = forecast_weights(service, again.run_id)
    assert sorted(weights["expert"].unique()) == sorted(EXPERTS)
    assert not weights["from_prior"].any()
    assert weights.groupby("horizon")["rounds"].first().tolist() == expected_rounds
    assert sorted(weights["quantity"].unique()) == sorted(QUANTITIES)  # the value, each bound
    assert np.allclose(weights.groupby(["horizon", "quantity"])["weight"].sum(), 1.0)

    stored = run_forecasts(service, [again.run_id])
    np.testing.assert_allclose(stored["value"], again.forecasts["value"])
    assert stored["lstm_value"].notna().all() and stored["drift"].notna().all()
    assert not np.allclose(stored["value"], stored["lstm_value"])  # the aggregate, not the LSTM
    assert (stored["scale_80"] > 1.2).all()  # the record's misses widened the bands

    retrained = train_flow(SERIES, mode="retrain").version
    after = forecast_flow(SERIES, version_id=retrained.id)
    assert after.model_version_id == retrained.id != first.id
    np.testing.assert_allclose(after.forecasts["scale_80"], again.forecasts["scale_80"])
    np.testing.assert_allclose(after.forecasts["scale_95"], again.forecasts["scale_95"])


def test_scores_of_the_served_the_lstm_and_the_naive_reference_with_dm_in_sql(service):
    version = register_version(
        service,
        NewVersion(
            series=SERIES,
            kind="retrain",
            parent_id=None,
            config={"horizon": HORIZON},
            train_first=CANDLES.index[0].to_pydatetime(),
            train_last=CANDLES.index[FIRST].to_pydatetime(),
            n_windows=10,
            validation_metrics={"rmse": 1.0},
            artifact=b"model",
            device="CPU",
            train_seconds=1.0,
        ),
    )
    write_record(service, version.id, half=0.01)
    outcome = evaluate_flow(SERIES)
    assert outcome.runs_scored == N_CANDLES - FIRST - HORIZON
    pooled = version_metrics(service, version.id).loc[0]
    for name in (
        "interval_score_80",
        "interval_score_95",
        "pinball_80",
        "dm_statistic",
        "dm_p_value",
        "coverage_80_low_vol",
        "coverage_80_high_vol",
        "lstm_skill",
        "lstm_interval_score_80",
        "lstm_dm_p_value",
        "naive_coverage_80",
        "naive_interval_score_95",
        "naive_coverage_80_mid_vol",
    ):
        assert np.isfinite(pooled[name]), name
    assert pooled["dm_statistic"] > 0 and pooled["dm_p_value"] < 0.05  # noise: worse than naive
    with service.connect() as connection:
        board = connection.execute(
            sa.text(
                "SELECT dm_statistic, dm_p_value, interval_score_80, naive_interval_score_80, "
                "lstm_skill FROM model_leaderboard WHERE series = :series"
            ),
            {"series": SERIES},
        ).one()
    assert board.dm_p_value == pytest.approx(pooled["dm_p_value"])
    assert board.naive_interval_score_80 == pytest.approx(pooled["naive_interval_score_80"])


def test_the_score_columns_of_the_forecaster_are_the_tables():
    from db.forecast_tables import SCORE_COLUMNS as TABLE_COLUMNS
    from forecaster.probabilistic import SCORE_COLUMNS

    assert list(TABLE_COLUMNS) == SCORE_COLUMNS
