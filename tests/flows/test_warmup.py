"""A series' first run warms up (issue 27.3): it walks forward over its newest periods before it
serves, so its first forecast serves learned weights and its metrics have rows from day one."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

import flows.backfill
from db.forecast_tables import ForecastMetric, ForecastRun, ForecastWeight
from db.forecasts import runs
from db.registry import versions
from flows.cli import app
from flows.daily import daily_flow
from forecaster.online import MIN_ROUNDS
from tests.flows.cdd_files import make_cdd_csv
from tests.flows.forecast_service import (
    HORIZON,
    KEY,
    N_CANDLES,
    SERIES,
    candles_until,
    start_service,
)

PERIODS = MIN_ROUNDS + HORIZON - 1  # the default: every horizon scored MIN_ROUNDS times


@pytest.fixture
def service(service_database, monkeypatch, prefect_harness, tmp_path):
    monkeypatch.setenv("CDDF_CHART_DIR", str(tmp_path / "charts"))
    monkeypatch.delenv("CDDF_WARMUP_PERIODS")  # the service's default, as users run it
    return start_service(monkeypatch)


def kinds_by_as_of(engine) -> dict[pd.Timestamp, list[str]]:
    found: dict[pd.Timestamp, list[str]] = {}
    for run in runs(engine, SERIES):
        found.setdefault(pd.Timestamp(run.as_of), []).append(run.kind)
    return found


def weights_of(engine, run_id: int) -> pd.DataFrame:
    query = select(ForecastWeight.horizon, ForecastWeight.from_prior, ForecastWeight.rounds).where(
        ForecastWeight.run_id == run_id
    )
    with Session(engine) as session:
        return pd.DataFrame(session.execute(query).all(), columns=["horizon", "prior", "rounds"])


def count(engine, table) -> int:
    with Session(engine) as session:
        return session.execute(select(func.count()).select_from(table)).scalar_one()


def test_a_first_run_warms_up_then_serves_learned_weights_and_scores_from_day_one(service, cdd):
    engine = service
    cdd(N_CANDLES + 1)
    state = daily_flow(return_state=True)
    assert state.is_completed()
    [outcome] = state.result()
    warm = outcome.warmup
    newest = candles_until(N_CANDLES + 1).index
    expected = newest[-PERIODS - 1 : -1]  # the periods before today's as_of, none after
    assert (warm.first, warm.last) == (expected[0], expected[-1])
    assert (warm.forecast, warm.done, warm.retrained, warm.finetuned) == (
        PERIODS,
        0,
        1,
        PERIODS - 1,
    )
    kinds = kinds_by_as_of(engine)
    assert kinds == {**{t: ["backfill"] for t in expected}, newest[-1]: ["daily"]}
    # today's forecast serves weights learned on the warm-up's scored forecasts, every horizon
    weights = weights_of(engine, outcome.forecast.run_id)
    assert sorted(weights["horizon"].unique()) == list(range(1, HORIZON + 1))
    assert not weights["prior"].any() and (weights["rounds"] >= MIN_ROUNDS).all(), weights
    # the evaluate step scored them: metrics from the first day
    assert outcome.evaluate.runs_scored >= PERIODS - HORIZON + 1
    assert outcome.evaluate.recent_skill is not None and count(engine, ForecastMetric) > 0
    # the warm-up's models: one retrain, fine-tunes, then today's own training step; the
    # newest warm-up version and today's keep their weights
    kinds_of_versions = [v.kind for v in versions(engine, SERIES)]
    assert kinds_of_versions == ["retrain"] + ["finetune"] * (PERIODS - 1) + ["retrain"]
    summary = flows_artifact(state, "daily-summary")
    assert f"warmed up (first runs): 1 series, {PERIODS} as_ofs" in summary

    cdd(N_CANDLES + 2)  # the next day: no warm-up again
    [second] = daily_flow()
    assert second.warmup is None and second.trained.action == "finetune"
    assert kinds_by_as_of(engine)[newest[-1] + pd.Timedelta(days=1)] == ["daily"]


def flows_artifact(state, key: str) -> str:
    from tests.flows.test_daily import artifacts_of

    return artifacts_of(state.state_details.flow_run_id)[key]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_warm_up_cut_short_fails_the_series_and_the_rerun_goes_on_from_it(
    service, cdd, monkeypatch
):
    engine = service
    cdd(N_CANDLES + 1)
    real, calls = flows.backfill.store_forecasts.fn, []

    def fails_at_the_fifth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(flows.backfill.store_forecasts, "fn", fails_at_the_fifth)
    [failed] = daily_flow(return_state=True).result(raise_on_failure=False).outcomes
    assert failed.failed_step == "warm-up" and "disk full" in str(failed.error)
    assert count(engine, ForecastRun) == 4  # the as_ofs before it; no daily forecast

    monkeypatch.setattr(flows.backfill.store_forecasts, "fn", real)
    [outcome] = daily_flow()
    assert (outcome.warmup.done, outcome.warmup.forecast) == (4, PERIODS - 4)
    assert outcome.forecast is not None
    assert all(len(kinds) == 1 for kinds in kinds_by_as_of(engine).values())  # no duplicate


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_no_warmup_on_the_command_line_or_in_the_settings(service, tmp_path, monkeypatch):
    path = tmp_path / f"{SERIES}.csv"
    path.write_bytes(make_cdd_csv(KEY, candles_until(N_CANDLES + 1)))
    ran = CliRunner().invoke(app, ["run", "--source", str(path), "--no-warmup"])
    assert ran.exit_code == 0, ran.output
    assert "warmed up" not in ran.output
    assert list(kinds_by_as_of(service).values()) == [["daily"]]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_short_history_warms_up_from_its_first_trainable_as_of(service, cdd, monkeypatch):
    monkeypatch.setenv("CDDF_WARMUP_PERIODS", "500")  # more than the history holds
    cdd(N_CANDLES + 1)
    [outcome] = daily_flow()
    kinds = kinds_by_as_of(service)
    backfilled = [t for t, k in kinds.items() if k == ["backfill"]]
    assert outcome.warmup.first == backfilled[0] and outcome.warmup.forecast == len(backfilled)
    assert N_CANDLES - len(backfilled) > 0  # the first trainable as_of, not the first candle
    assert outcome.forecast is not None and max(kinds) == candles_until(N_CANDLES + 1).index[-1]
