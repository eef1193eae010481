"""Score every forecast run of a series whose targets now have final candles.

    evaluate_flow("Bitstamp_BTCUSD_d").runs_scored  # -> 7

Each run gets its scores per horizon (0: all pooled) beside the naive forecast's; then each
model version with newly scored runs is scored again over all its scored runs. A run scored
before one of its target candles was revised (db/revisions.py) is scored again, and so is its
model version: ``runs_rescored`` says how many, so that forecast_metrics and the
forecast_vs_actual view agree again.

A series' evaluation is one task run (``evaluate {series}``), its steps plain functions: on
most days there is at most one run to score, and a task run per step cost more in Prefect's
bookkeeping (its states, events and log lines) than the step's own work. With nothing to score
(no final candle at a new target, no revision) it only reads the recent skill.
"""

# No `from __future__ import annotations` here: a served deployment may pickle the flow
# function, and its parameters' annotations must travel as objects, not as names.

from dataclasses import dataclass

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cdd.series_key import SeriesKey
from db.engine import get_engine
from db.forecasts import (
    RunInfo,
    recent_run_forecasts,
    revised_runs,
    run_forecasts,
    unscored_runs,
    version_scored_forecasts,
    write_run_metrics,
    write_version_metrics,
)
from flows.candles import final_candles
from flows.retry import DB_RETRY
from flows.scopes import RECENT_RUNS
from forecaster.metrics import score_forecasts


@dataclass(frozen=True)
class EvaluateOutcome:
    series: str
    runs_scored: int  # including the re-scored ones
    versions_scored: int
    recent_skill: float | None  # pooled over the newest RECENT_RUNS scoreable runs
    runs_rescored: int = 0  # scored before, scored again: a candle at a target was revised


def scores(forecasts: pd.DataFrame, actuals: pd.Series) -> pd.DataFrame:
    """``score_forecasts`` plus the first and last target time scored, per horizon."""
    metrics = score_forecasts(forecasts, actuals)
    scored = forecasts[forecasts["target_time"].isin(actuals.index)]
    spans = scored.groupby("horizon")["target_time"].agg(["min", "max"])
    spans.loc[0] = [scored["target_time"].min(), scored["target_time"].max()]
    spans.index = spans.index.astype(int)
    metrics["first_target"] = spans["min"].reindex(metrics.index)
    metrics["last_target"] = spans["max"].reindex(metrics.index)
    return metrics[metrics["n"] > 0]


def find_unscored(series: str) -> list[RunInfo]:
    """The runs not scored yet whose every target has a final candle."""
    return unscored_runs(get_engine(), series)


def find_revised(series: str) -> list[RunInfo]:
    """The scored runs with a target candle revised since they were scored."""
    return revised_runs(get_engine(), series)


def score_runs(runs: list[RunInfo], actuals: pd.Series) -> list[RunInfo]:
    """Score and store each run; returns the runs that had actuals to score."""
    engine, logger = get_engine(), get_run_logger()
    forecasts = run_forecasts(engine, [run.id for run in runs])
    done = []
    for run in runs:
        run_rows = forecasts[forecasts["run_id"] == run.id]
        in_holes = run_rows.loc[~run_rows["target_time"].isin(actuals.index), "target_time"]
        if len(in_holes):  # later candles are final: these targets never got a candle
            logger.warning(
                "%s: run %d: %d forecast(s) unscorable, the series has no candle at %s (a "
                "hole); forecast_vs_actual lists them with scorable = 0",
                run.series,
                run.id,
                len(in_holes),
                ", ".join(f"{t:%Y-%m-%d %H:%M}" for t in in_holes),
            )
        metrics = scores(run_rows, actuals)
        if metrics.empty:
            logger.warning("%s: run %d has no final candle at its targets", run.series, run.id)
            continue
        write_run_metrics(engine, run, metrics)
        done.append(run)
    return done


def score_version(series: str, model_version_id: int, actuals: pd.Series) -> float | None:
    """Score a model version over all its scored runs; returns its pooled skill."""
    engine = get_engine()
    forecasts = version_scored_forecasts(engine, model_version_id, series)
    metrics = scores(forecasts, actuals)
    n_runs = forecasts["run_id"].nunique()
    write_version_metrics(engine, series, model_version_id, metrics, n_runs=n_runs)
    if 0 in metrics.index and pd.notna(metrics.loc[0, "dm_p_value"]):
        pooled = metrics.loc[0]
        get_run_logger().info(
            "%s: model version %d against naive: served DM %+.2f (p %.3f), the LSTM's own "
            "skill %s, DM %+.2f (p %.3f)",
            series,
            model_version_id,
            pooled["dm_statistic"],
            pooled["dm_p_value"],
            _fmt(pooled["lstm_skill"]),
            pooled["lstm_dm_statistic"],
            pooled["lstm_dm_p_value"],
        )
    skill = metrics.loc[0, "skill"] if 0 in metrics.index else None
    return None if skill is None or pd.isna(skill) else float(skill)


def series_recent_skill(series: str, actuals: pd.Series) -> float | None:
    """The pooled skill of the series' newest scoreable runs, whatever their version."""
    forecasts = recent_run_forecasts(get_engine(), series, last_runs=RECENT_RUNS)
    if forecasts.empty:
        return None
    skill = score_forecasts(forecasts, actuals).loc[0, "skill"]
    return None if pd.isna(skill) else float(skill)


@flow(name="evaluate", flow_run_name="evaluate {series}")
def evaluate_flow(series: str) -> EvaluateOutcome:
    """Score the forecasts of ``series`` that have final candles at all their targets."""
    series = SeriesKey.of(series).key
    return evaluate_series(series, final_candles(series, None))


@task(cache_policy=NO_CACHE, task_run_name="evaluate {series}", **DB_RETRY)
def evaluate_series(series: str, candles: pd.DataFrame) -> EvaluateOutcome:
    """The evaluate flow's work on ``candles``, all final candles of ``series`` as read by the
    caller (the pipeline reads them once for every step, `flows/pipeline.py`)."""
    logger = get_run_logger()
    revised = find_revised(series)
    runs = find_unscored(series) + revised
    actuals = candles["close"]
    scored = score_runs(runs, actuals) if runs else []
    rescored = len({run.id for run in revised} & {run.id for run in scored})
    version_ids = sorted({run.model_version_id for run in scored})
    skills = {version_id: score_version(series, version_id, actuals) for version_id in version_ids}
    recent = series_recent_skill(series, actuals)
    if scored:  # a day with nothing to score says nothing: the summary shows the recent skill
        logger.info(
            "%s: scored %d runs (%d again: candles at their targets were revised) of model "
            "versions %s; recent skill %s",
            series,
            len(scored),
            rescored,
            ", ".join(f"{v} (skill {_fmt(skill)})" for v, skill in skills.items()),
            _fmt(recent),
        )
    return EvaluateOutcome(series, len(scored), len(version_ids), recent, rescored)


def _fmt(skill: float | None) -> str:
    return "n/a" if skill is None or pd.isna(skill) else f"{skill:+.3f}"
