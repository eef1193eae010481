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
(no final candle at a new target, no revision) it only reads the recent skill. A backfill's
evaluation scores its thousands of runs and one-run versions in two transactions, each version
from the rows already read where it can (`score_versions`).
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
    VersionScores,
    recent_run_forecasts,
    revised_runs,
    run_forecasts,
    scored_runs_of,
    unscored_runs,
    version_scored_forecasts,
    write_scores,
)
from flows.candles import final_candles
from flows.retry import DB_RETRY
from flows.scopes import RECENT_RUNS
from forecaster.metrics import score_forecasts

MAX_VERSION_LINES = 10  # versions scored in one evaluation with a log line each (the newest)


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


@dataclass(frozen=True)
class Scored:
    """A run scored now: its forecast rows and their scores."""

    run: RunInfo
    rows: pd.DataFrame
    metrics: pd.DataFrame


def score_runs(runs: list[RunInfo], actuals: pd.Series) -> dict[int, Scored]:
    """Score each run; returns the runs that had actuals to score, by id (stored by
    `store_scores`)."""
    logger = get_run_logger()
    forecasts = run_forecasts(get_engine(), [run.id for run in runs])
    by_id, done = {run.id: run for run in runs}, {}
    for run_id, run_rows in forecasts.groupby("run_id", sort=False):
        run = by_id[int(run_id)]
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
        done[run.id] = Scored(run, run_rows, metrics)
    return done


def score_versions(
    series: str, version_ids: list[int], scored: dict[int, Scored], actuals: pd.Series
) -> list[VersionScores]:
    """Each version's scores over all its scored runs (``scored`` stored already).

    A version whose scored runs are all among ``scored`` is scored from their rows in
    memory, and one with a single scored run takes that run's scores: the same rows, in the
    same order, as `db.forecasts.version_scored_forecasts` would read (a backfill scores
    thousands of one-run versions at once). Any other is read back from the tables.
    """
    engine = get_engine()
    found = scored_runs_of(engine, version_ids, series)
    done = []
    for version_id in version_ids:
        run_ids = found[version_id]
        if len(run_ids) == 1 and run_ids[0] in scored:
            metrics = scored[run_ids[0]].metrics
        elif run_ids and all(run_id in scored for run_id in run_ids):
            metrics = scores(pd.concat([scored[i].rows for i in run_ids]), actuals)
        else:
            metrics = scores(version_scored_forecasts(engine, version_id, series), actuals)
        done.append(VersionScores(series, version_id, metrics, len(run_ids)))
    return done


def log_versions(versions: list[VersionScores]) -> None:
    """A line per version against naive; a backfill's thousands of versions: the newest."""
    logger = get_run_logger()
    if len(versions) > MAX_VERSION_LINES:
        logger.info(
            "%s: %d model versions scored; the newest %d:",
            versions[0].series,
            len(versions),
            MAX_VERSION_LINES,
        )
    for version in versions[-MAX_VERSION_LINES:]:
        metrics = version.metrics
        if 0 in metrics.index and pd.notna(metrics.loc[0, "dm_p_value"]):
            pooled = metrics.loc[0]
            logger.info(
                "%s: model version %d against naive: served DM %+.2f (p %.3f), the LSTM's own "
                "skill %s, DM %+.2f (p %.3f)",
                version.series,
                version.model_version_id,
                pooled["dm_statistic"],
                pooled["dm_p_value"],
                _fmt(pooled["lstm_skill"]),
                pooled["lstm_dm_statistic"],
                pooled["lstm_dm_p_value"],
            )


def skill_of(metrics: pd.DataFrame) -> float | None:
    """The pooled skill of a scores frame, None when it has none."""
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
    engine = get_engine()
    scored = score_runs(runs, actuals) if runs else {}
    write_scores(engine, runs=[(done.run, done.metrics) for done in scored.values()])
    rescored = len({run.id for run in revised} & set(scored))
    version_ids = sorted({done.run.model_version_id for done in scored.values()})
    versions = score_versions(series, version_ids, scored, actuals) if version_ids else []
    write_scores(engine, versions=versions)
    log_versions(versions)
    skills = {v.model_version_id: skill_of(v.metrics) for v in versions[-MAX_VERSION_LINES:]}
    recent = series_recent_skill(series, actuals)
    if scored:  # a day with nothing to score says nothing: the summary shows the recent skill
        logger.info(
            "%s: scored %d runs (%d again: candles at their targets were revised) of %d model "
            "version(s)%s %s; recent skill %s",
            series,
            len(scored),
            rescored,
            len(versions),
            "" if len(versions) <= MAX_VERSION_LINES else f", the newest {MAX_VERSION_LINES}",
            ", ".join(f"{v} (skill {_fmt(skill)})" for v, skill in skills.items()),
            _fmt(recent),
        )
    return EvaluateOutcome(series, len(scored), len(version_ids), recent, rescored)


def _fmt(skill: float | None) -> str:
    return "n/a" if skill is None or pd.isna(skill) else f"{skill:+.3f}"
