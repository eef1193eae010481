"""The evaluate flow: scores once final candles exist at every target, once per run."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.candles import upsert_candles
from db.forecasts import run_forecasts, version_scored_forecasts
from db.revisions import RevisionLimits
from flows.evaluate import evaluate_flow, scores
from flows.forecast import forecast_flow
from flows.train import train_flow
from tests.db.factory import run_metrics, version_metrics
from tests.flows.forecast_service import (
    HORIZON,
    KEY,
    N_CANDLES,
    SERIES,
    candles_until,
    start_service,
    store,
)


@pytest.fixture
def service(service_database, monkeypatch, prefect_harness):
    return start_service(monkeypatch)


def test_a_run_is_scored_once_its_targets_have_final_candles(service):
    version = train_flow(SERIES).version
    run = forecast_flow(SERIES)
    assert evaluate_flow(SERIES).runs_scored == 0  # no target has a candle yet

    later = candles_until(N_CANDLES + HORIZON)
    partial = later.copy()
    partial.loc[partial.index[-1], "is_final"] = False  # the last target's day is still open
    store(service, partial)
    assert evaluate_flow(SERIES).runs_scored == 0

    store(service, later)
    outcome = evaluate_flow(SERIES)
    assert (outcome.runs_scored, outcome.versions_scored) == (1, 1)
    assert outcome.recent_skill is not None

    forecasts = run_forecasts(service, [run.run_id])
    actual = later["close"].loc[forecasts["target_time"]].to_numpy()
    error = forecasts["value"].to_numpy() - actual
    naive_error = forecasts["naive"].to_numpy() - actual
    rmse, naive_rmse = np.sqrt(np.mean(error**2)), np.sqrt(np.mean(naive_error**2))
    inside_80 = (forecasts["lower_80"] <= actual) & (actual <= forecasts["upper_80"])
    scores = run_metrics(service, run.run_id)
    assert scores.index.tolist() == [0, *range(1, HORIZON + 1)]
    pooled = scores.loc[0]
    assert pooled["n"] == HORIZON and pooled["n_runs"] == 1
    assert pooled["rmse"] == pytest.approx(rmse)
    assert pooled["mae"] == pytest.approx(np.mean(np.abs(error)))
    assert pooled["naive_rmse"] == pytest.approx(naive_rmse)
    assert pooled["skill"] == pytest.approx(1 - rmse / naive_rmse)
    assert pooled["coverage_80"] == pytest.approx(inside_80.mean())
    assert scores.loc[1, "rmse"] == pytest.approx(abs(error[0]))
    assert version_metrics(service, version.id).loc[0, "rmse"] == pytest.approx(rmse)

    with service.connect() as connection:
        vs_actual = connection.execute(
            sa.text("SELECT horizon, error FROM forecast_vs_actual ORDER BY horizon")
        ).all()
        board = connection.execute(
            sa.text("SELECT model_version_id, skill_rank, skill FROM model_leaderboard")
        ).all()
    np.testing.assert_allclose([e for _, e in vs_actual], -error)
    assert [(v, rank) for v, rank, _ in board] == [(version.id, 1)]
    assert board[0][2] == pytest.approx(1 - rmse / naive_rmse)

    assert evaluate_flow(SERIES).runs_scored == 0  # scored once


def view_rmse(engine: sa.Engine, run_id: int) -> float:
    """The RMSE of a run computed from the forecast_vs_actual view."""
    with engine.connect() as connection:
        errors = connection.execute(
            sa.text("SELECT error FROM forecast_vs_actual WHERE run_id = :run"), {"run": run_id}
        ).scalars()
        return float(np.sqrt(np.mean(np.square(list(errors)))))


def test_a_revised_actual_is_scored_again_and_the_scores_match_the_view(service):
    version = train_flow(SERIES).version
    run = forecast_flow(SERIES)
    later = candles_until(N_CANDLES + HORIZON)
    store(service, later)
    assert evaluate_flow(SERIES).runs_scored == 1
    scored = run_metrics(service, run.run_id).loc[0, "rmse"]
    assert scored == pytest.approx(view_rmse(service, run.run_id))

    restated = later.copy()
    target = later.index[-2]  # the close of one target day, restated by CryptoDataDownload
    restated.loc[target, ["close", "high"]] += 900.0
    with Session(service) as session, session.begin():
        assert upsert_candles(session, KEY, restated, limits=RevisionLimits()).revised == 1
    assert view_rmse(service, run.run_id) != pytest.approx(scored)  # stale until evaluated

    outcome = evaluate_flow(SERIES)

    assert (outcome.runs_scored, outcome.runs_rescored, outcome.versions_scored) == (1, 1, 1)
    rmse = view_rmse(service, run.run_id)
    assert run_metrics(service, run.run_id).loc[0, "rmse"] == pytest.approx(rmse)
    assert version_metrics(service, version.id).loc[0, "rmse"] == pytest.approx(rmse)
    with service.connect() as connection:
        board = connection.execute(sa.text("SELECT rmse FROM model_leaderboard")).scalar_one()
    assert board == pytest.approx(rmse)
    again = evaluate_flow(SERIES)
    assert (again.runs_scored, again.runs_rescored) == (0, 0)  # scored again once


def test_versions_scored_in_bulk_equal_their_scores_read_back(service):
    """A version is scored from the rows just read (all its runs new, or its one run) or read
    back from the tables (older scored runs): every way gives what scoring all its scored
    runs read back gives (`score_forecasts` over `version_scored_forecasts`)."""
    first = train_flow(SERIES, as_of=candles_until(N_CANDLES - 6).index[-1]).version
    for back in (6, 5, 4):  # three runs of one version, scored together
        as_of = candles_until(N_CANDLES - back).index[-1].to_pydatetime()
        forecast_flow(SERIES, as_of=as_of, kind="backfill")
    second = train_flow(SERIES, mode="retrain").version  # one run, scored with them
    forecast_flow(SERIES)
    store(service, candles_until(N_CANDLES + HORIZON))
    assert (evaluate_flow(SERIES).runs_scored, version_runs(service, first.id)) == (4, 3)
    as_of = candles_until(N_CANDLES - 3).index[-1].to_pydatetime()
    forecast_flow(SERIES, as_of=as_of, kind="backfill", version_id=first.id)
    assert evaluate_flow(SERIES).runs_scored == 1  # a fourth run of `first`: read back

    actuals = candles_until(N_CANDLES + HORIZON)["close"]
    for version_id, runs in ((first.id, 4), (second.id, 1)):
        reference = scores(version_scored_forecasts(service, version_id, SERIES), actuals)
        stored = version_metrics(service, version_id)
        assert (stored["n_runs"] == runs).all()
        for name in ("n", "rmse", "skill", "interval_score_80", "dm_statistic", "coverage_80"):
            assert stored[name].to_numpy() == pytest.approx(
                reference[name].to_numpy(dtype=float), nan_ok=True
            ), (version_id, name)


def version_runs(engine, version_id: int) -> int:
    return version_metrics(engine, version_id).loc[0, "n_runs"]
