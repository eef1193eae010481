"""The daily pipeline: for each series, ingest → train or fine-tune → forecast → evaluate.

>>> daily_flow()                                   # every CDDF_SERIES
>>> daily_flow(["Bitstamp_BTCUSD_d"], source="./Bitstamp_BTCUSD_d.csv")

A series that fails stops there and the others go on; the run ends failed when any series
failed. Training runs in-process unless ``CDDF_TRAIN_DEPLOYMENT`` names a deployment (such as
``train/train`` on the ``gpu`` pool), which the flow then runs and waits for. Artifacts: a
markdown summary, a table of the new forecasts and a chart per series (PNG, in
``CDDF_CHART_DIR``, linked from the summary).
"""

# No `from __future__ import annotations` here: a served deployment may pickle the flow
# function, and its parameters' annotations must travel as objects, not as names.

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.deployments import run_deployment
from prefect.runtime import flow_run

from db.engine import get_engine
from db.registry import VersionInfo, latest_version, versions_of_flow_run
from db.settings import get_settings
from flows.charts import forecast_chart
from flows.config import DB_RETRY
from flows.evaluate import EvaluateOutcome, evaluate_flow
from flows.forecast import ForecastOutcome, forecast_flow
from flows.ingest import IngestResult, ingest_series_task, plan_series
from flows.tasks import final_candles
from flows.train import train_flow

DEFAULT_CHART_DIR = Path("cddf-data/charts")


@dataclass(frozen=True)
class Trained:
    """The model a series forecasts with after the training step."""

    action: str  # retrain, finetune or keep
    version: VersionInfo
    where: str  # in-process, or the deployment's flow run


@dataclass
class SeriesOutcome:
    series: str
    failed_step: str | None = None
    error: BaseException | None = None
    ingest: IngestResult | None = None
    trained: Trained | None = None
    forecast: ForecastOutcome | None = None
    evaluate: EvaluateOutcome | None = None
    chart: Path | None = field(default=None)


class DailyRunFailed(RuntimeError):
    """One or more series failed; ``outcomes`` holds every series' outcome."""

    def __init__(self, message: str, outcomes: list[SeriesOutcome]) -> None:
        super().__init__(message)
        self.outcomes = outcomes


@task(cache_policy=NO_CACHE, **DB_RETRY)
def trained_by(series: str, child_run_id: str, deployment: str) -> Trained:
    """The version a train deployment's flow run registered, or the one it kept."""
    engine = get_engine()
    registered = versions_of_flow_run(engine, child_run_id)
    if registered:
        return Trained(registered[-1].kind, registered[-1], f"{deployment} run {child_run_id}")
    kept = latest_version(engine, series)
    if kept is None:
        raise LookupError(f"{series}: the {deployment} run {child_run_id} left no model version")
    return Trained("keep", kept, f"{deployment} run {child_run_id}")


@task(cache_policy=NO_CACHE)
def draw_chart(series: str, candles: pd.DataFrame, forecasts: pd.DataFrame) -> Path:
    """Draw the last 90 candles with the forecast and its bands into the chart directory."""
    folder = get_settings().chart_dir or DEFAULT_CHART_DIR
    as_of = pd.Timestamp(forecasts["as_of"].iloc[0])
    path = folder / f"{series}_{as_of:%Y%m%d_%H%M}.png"
    return forecast_chart(candles, forecasts, series, path).resolve()


def train(series: str) -> Trained:
    """Train in-process, or dispatch the configured train deployment and wait for it."""
    deployment = get_settings().train_deployment
    if not deployment:
        outcome = train_flow(series, mode="auto")
        return Trained(outcome.action, outcome.version, "in-process")
    child = run_deployment(
        deployment, parameters={"series": series, "mode": "auto"}, timeout=None
    )
    if child.state is None or not child.state.is_completed():
        state = child.state.name if child.state else "unknown"
        message = child.state.message if child.state else ""
        raise RuntimeError(
            f"{series}: the {deployment} flow run {child.name} ({child.id}) ended {state}: "
            f"{message} — see its logs on the {deployment} deployment's work pool"
        )
    return trained_by(series, str(child.id), deployment)


def run_series(series: str, source: str | None) -> SeriesOutcome:
    """One series through every step; the first failing step ends it (recorded, not raised)."""
    outcome = SeriesOutcome(series)
    step = "ingest"
    try:
        outcome.ingest = ingest_series_task(series, source)
        step = "train"
        outcome.trained = train(series)
        step = "forecast"
        outcome.forecast = forecast_flow(series)
        step = "evaluate"
        outcome.evaluate = evaluate_flow(series)
        step = "chart"
        candles = final_candles(series, None)
        outcome.chart = draw_chart(series, candles, outcome.forecast.forecasts)
    except Exception as error:  # isolate the series: record and log, the others go on
        outcome.failed_step, outcome.error = step, error
        get_run_logger().error("%s: %s failed: %s: %s", series, step, type(error).__name__, error)
    return outcome


def _run_name() -> str:
    series = flow_run.parameters.get("series") or get_settings().series
    return f"daily {','.join(series)}"


@flow(name="daily", flow_run_name=_run_name)
def daily_flow(
    series: list[str] | None = None, source: str | None = None
) -> list[SeriesOutcome]:
    """Ingest, train or fine-tune, forecast and evaluate each series (default CDDF_SERIES)."""
    keys = plan_series(series, source)
    outcomes = [run_series(key, source) for key in keys]
    publish(outcomes)
    failed = [outcome for outcome in outcomes if outcome.failed_step]
    if failed:
        details = "; ".join(
            f"{o.series} at {o.failed_step}: {type(o.error).__name__}: {o.error}" for o in failed
        )
        raise DailyRunFailed(f"{len(failed)} of {len(outcomes)} series failed: {details}", outcomes)
    return outcomes


def publish(outcomes: list[SeriesOutcome]) -> None:
    """The run's artifacts: the markdown summary and the table of new forecasts."""
    create_markdown_artifact(
        key="daily-summary", markdown=summary_markdown(outcomes),
        description="Per series: rows ingested, model version, skill, chart",
    )
    rows = forecast_rows(outcomes)
    if rows:
        create_table_artifact(
            key="daily-forecasts", table=rows, description="The forecasts of this run"
        )


def summary_markdown(outcomes: list[SeriesOutcome]) -> str:
    """A markdown table of every series' outcome with links to the charts."""
    lines = [
        "# Daily forecast run", "",
        "| series | status | rows ingested | model version | as of | recent skill | chart |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        status = "ok" if o.failed_step is None else f"**failed at {o.failed_step}**"
        ingested = "" if o.ingest is None else str(o.ingest.inserted + o.ingest.updated)
        model = "" if o.trained is None else (
            f"{o.trained.version.id} ({'kept' if o.trained.action == 'keep' else o.trained.action})"
        )
        as_of = "" if o.forecast is None else f"{pd.Timestamp(o.forecast.as_of):%Y-%m-%d %H:%M}"
        skill = o.evaluate.recent_skill if o.evaluate else None
        shown = "n/a" if skill is None else f"{skill:+.3f}"
        chart = "" if o.chart is None else f"[{o.chart.name}]({o.chart.as_uri()})"
        lines.append(f"| {o.series} | {status} | {ingested} | {model} | {as_of} | {shown} "
                     f"| {chart} |")
    errors = [o for o in outcomes if o.error is not None]
    if errors:
        lines += ["", "## Errors", ""]
        lines += [
            f"- **{o.series}** ({o.failed_step}): {type(o.error).__name__}: {o.error}"
            for o in errors
        ]
    return "\n".join(lines) + "\n"


def forecast_rows(outcomes: list[SeriesOutcome]) -> list[dict[str, Any]]:
    """One row per new forecast, for the table artifact."""
    rows = []
    for o in outcomes:
        if o.forecast is None:
            continue
        for record in o.forecast.forecasts.to_dict("records"):
            rows.append({
                "series": o.series, "model_version": o.forecast.model_version_id,
                "as_of": pd.Timestamp(record["as_of"]).isoformat(),
                "target_time": pd.Timestamp(record["target_time"]).isoformat(),
                "horizon": int(record["horizon"]),
                **{name: round(float(record[name]), 6) for name in (
                    "value", "lower_80", "upper_80", "lower_95", "upper_95", "naive")},
            })
    return rows
