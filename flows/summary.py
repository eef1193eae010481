"""A run's artifacts: the markdown summary of each series' outcome with its chart, and the
table of the new forecasts (the daily flow's and the series flow's alike).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.charts import markdown_image
from flows.pipeline import SeriesOutcome


def publish(outcomes: list[SeriesOutcome]) -> None:
    """The run's artifacts: the markdown summary and the table of new forecasts."""
    create_markdown_artifact(
        key="daily-summary",
        markdown=summary_markdown(outcomes),
        description="Per series: rows ingested, model version, skill; the charts",
    )
    rows = forecast_rows(outcomes)
    if rows:
        create_table_artifact(
            key="daily-forecasts", table=rows, description="The forecasts of this run"
        )


def summary_markdown(outcomes: list[SeriesOutcome]) -> str:
    """A markdown table of every series' outcome, then each series' chart as an image."""
    lines = [
        "# Daily forecast run",
        "",
        "| series | status | rows ingested | model version | as of | recent skill |",
        "|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        status = "ok" if o.failed_step is None else f"**failed at {o.failed_step}**"
        if o.skipped:
            status = f"skipped: {o.skipped}"
        if o.flow_run:  # dispatched: the details are in that run's own summary
            status += f" in flow run {o.flow_run}"
        ingested = "" if o.ingest is None else str(o.ingest.inserted + o.ingest.updated)
        model = ""
        if o.trained is not None:
            action = "kept" if o.trained.action == "keep" else o.trained.action
            model = f"{o.trained.version.id} ({action})"
        as_of = "" if o.forecast is None else f"{pd.Timestamp(o.forecast.as_of):%Y-%m-%d %H:%M}"
        skill = o.evaluate.recent_skill if o.evaluate else None
        shown = "n/a" if skill is None else f"{skill:+.3f}"
        lines.append(f"| {o.series} | {status} | {ingested} | {model} | {as_of} | {shown} |")
    errors = [o for o in outcomes if o.error is not None]
    if errors:
        lines += ["", "## Errors", ""]
        lines += [
            f"- **{o.series}** ({o.failed_step}): {type(o.error).__name__}: {o.error}"
            for o in errors
        ]
    charted = [o for o in outcomes if o.chart_png is not None]
    if charted:
        lines += ["", "## Charts"]
        for o in charted:
            lines += ["", f"### {o.series}", "", markdown_image(o.chart_png, f"{o.series} chart")]
            if o.chart is not None:
                lines += ["", f"Also saved on the worker as `{o.chart}`."]
    return "\n".join(lines) + "\n"


def forecast_rows(outcomes: list[SeriesOutcome]) -> list[dict[str, Any]]:
    """One row per new forecast, for the table artifact."""
    rows = []
    for o in outcomes:
        if o.forecast is None:
            continue
        for record in o.forecast.forecasts.to_dict("records"):
            rows.append(
                {
                    "series": o.series,
                    "model_version": o.forecast.model_version_id,
                    "as_of": pd.Timestamp(record["as_of"]).isoformat(),
                    "target_time": pd.Timestamp(record["target_time"]).isoformat(),
                    "horizon": int(record["horizon"]),
                    **{
                        name: round(float(record[name]), 6)
                        for name in (
                            "value",
                            "lower_80",
                            "upper_80",
                            "lower_95",
                            "upper_95",
                            "naive",
                        )
                    },
                }
            )
    return rows
