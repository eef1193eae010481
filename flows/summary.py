"""A run's artifacts, sized for hundreds of series (the daily flow's and the series flow's alike).

    publish(outcomes)   # 'daily-summary', then 'series-bitstamp-btcusd-d', ... one per series

- ``daily-summary``: the counts (ok, failed, skipped; models retrained, fine-tuned, kept), a
  table row per series, the series with a problem first, at most ``SUMMARY_ROWS`` rows, then
  the errors, at most ``ERRORS_SHOWN``, each cut at ``ERROR_CHARS``: under 60 kB at any N.
- ``series-<key>`` (``series_artifact_key``): one per forecast series, its chart (a ``data:``
  PNG, `flows/charts.py`), its forecasts and the served weights (the LSTM's against naive, per
  horizon): about 20 kB whatever N. The key is the same every
  day, so the Prefect UI's artifact page shows each series' newest chart and its history.

No artifact grows with the number of series; Prefect's retention deployment removes them after
``CDDF_PREFECT_RETENTION_DAYS`` (`flows/prefect_retention.py`).
"""

from __future__ import annotations

import re

import pandas as pd
from prefect.artifacts import create_markdown_artifact

from flows.charts import markdown_image
from flows.forecast import weights_table
from flows.pipeline import SeriesOutcome

SUMMARY_ROWS = 200  # series rows in the summary; the others are counted
ERRORS_SHOWN = 50  # errors listed in the summary; the others are counted
ERROR_CHARS = 400  # an error's message in the summary is cut here (the logs have it whole)
ACTIONS = {"keep": "kept", "retrain": "retrained", "finetune": "fine-tuned"}


def publish(outcomes: list[SeriesOutcome]) -> None:
    """The run's artifacts: the summary, then each forecast series' chart and forecasts."""
    create_markdown_artifact(
        key="daily-summary",
        markdown=summary_markdown(outcomes),
        description="Counts and per series: status, rows ingested, model version, skill",
    )
    for outcome in outcomes:
        if outcome.forecast is not None:
            create_markdown_artifact(
                key=series_artifact_key(outcome.series),
                markdown=series_markdown(outcome),
                description=f"{outcome.series}: the chart and the forecasts of this run",
            )


def series_artifact_key(series: str) -> str:
    """The key of a series' artifact: Prefect's keys are lowercase letters, digits and dashes.

    >>> series_artifact_key("Bitstamp_BTCUSD_d")
    'series-bitstamp-btcusd-d'
    """
    return "series-" + re.sub(r"[^a-z0-9-]", "-", series.lower())


def status_of(outcome: SeriesOutcome) -> str:
    """``ok``, ``**failed at STEP**`` or ``skipped: why``, and the dispatched run if any."""
    status = "ok" if outcome.failed_step is None else f"**failed at {outcome.failed_step}**"
    if outcome.skipped:
        status = f"skipped: {outcome.skipped}"
    if outcome.flow_run:  # dispatched: the details are in that run's own summary
        status += f" in flow run {outcome.flow_run}"
    return status


def summary_markdown(outcomes: list[SeriesOutcome]) -> str:
    """The counts, a table of the series (problems first, at most SUMMARY_ROWS), the errors."""
    problems = [o for o in outcomes if o.failed_step is not None or o.skipped]
    shown = (problems + [o for o in outcomes if o not in problems])[:SUMMARY_ROWS]
    lines = ["# Daily forecast run", "", counts_line(outcomes), ""]
    if any(o.forecast is not None for o in outcomes):
        example = next(o.series for o in outcomes if o.forecast is not None)
        lines += [
            "Each forecast series' chart and forecasts: its own artifact, "
            f"`{series_artifact_key(example)}` for {example}.",
            "",
        ]
    lines += [
        "| series | status | rows ingested | model version | as of | recent skill |",
        "|---|---|---|---|---|---|",
    ]
    lines += [table_row(o) for o in shown]
    if len(outcomes) > len(shown):
        lines += ["", f"… and {len(outcomes) - len(shown)} more series, all ok."]
    errors = [o for o in outcomes if o.error is not None]
    if errors:
        lines += ["", "## Errors", ""]
        for o in errors[:ERRORS_SHOWN]:
            message = f"{type(o.error).__name__}: {o.error}"
            if len(message) > ERROR_CHARS:
                message = message[:ERROR_CHARS] + " … (whole in the run's logs)"
            lines.append(f"- **{o.series}** ({o.failed_step}): {message}")
        if len(errors) > ERRORS_SHOWN:
            lines.append(f"- … and {len(errors) - ERRORS_SHOWN} more: the run's logs name each")
    return "\n".join(lines) + "\n"


def counts_line(outcomes: list[SeriesOutcome]) -> str:
    """``N series: a ok, b failed, c skipped; models: ...`` of a run.

    >>> counts_line([SeriesOutcome("Bitstamp_BTCUSD_d"), SeriesOutcome("Kraken_XRPUSD_d",
    ...     failed_step="ingest")])
    '2 series: 1 ok, 1 failed, 0 skipped.'
    """
    failed = sum(o.failed_step is not None for o in outcomes)
    skipped = sum(bool(o.skipped) and o.failed_step is None for o in outcomes)
    line = (
        f"{len(outcomes)} series: {len(outcomes) - failed - skipped} ok, {failed} failed, "
        f"{skipped} skipped"
    )
    versions = {}  # a global model's version is counted once, not once per member
    for o in outcomes:
        if o.trained is not None:
            versions[o.trained.version.id] = ACTIONS.get(o.trained.action, o.trained.action)
    if versions:
        actions = pd.Series(list(versions.values())).value_counts()
        line += "; models: " + ", ".join(f"{n} {action}" for action, n in actions.items())
    warmed = [o.warmup for o in outcomes if o.warmup is not None]
    if warmed:
        as_ofs = sum(w.forecast + w.done for w in warmed)
        line += f"; warmed up (first runs): {len(warmed)} series, {as_ofs} as_ofs"
    return line + "."


def table_row(o: SeriesOutcome) -> str:
    """One series' row of the summary table."""
    ingested = "" if o.ingest is None else str(o.ingest.inserted + o.ingest.updated)
    model = ""
    if o.trained is not None:
        action = "kept" if o.trained.action == "keep" else o.trained.action
        model = f"{o.trained.version.id} ({action})"
    as_of = "" if o.forecast is None else f"{pd.Timestamp(o.forecast.as_of):%Y-%m-%d %H:%M}"
    skill = o.evaluate.recent_skill if o.evaluate else None
    shown = "n/a" if skill is None else f"{skill:+.3f}"
    return f"| {o.series} | {status_of(o)} | {ingested} | {model} | {as_of} | {shown} |"


def series_markdown(o: SeriesOutcome) -> str:
    """A forecast series' artifact: its summary row, its chart, its forecasts."""
    lines = [
        f"# {o.series}",
        "",
        "| series | status | rows ingested | model version | as of | recent skill |",
        "|---|---|---|---|---|---|",
        table_row(o),
    ]
    if o.warmup is not None:
        lines += ["", f"First run: {o.warmup} before its first forecast (`flows/warmup.py`)."]
    if o.chart_png is not None:
        lines += ["", markdown_image(o.chart_png, f"{o.series} chart")]
        if o.chart is not None:
            lines += ["", f"Also saved on the worker as `{o.chart}`."]
    if o.forecast is not None:
        lines += ["", "| target time | h | forecast | 80 % interval | 95 % interval | naive |"]
        lines.append("|---|---|---|---|---|---|")
        for row in o.forecast.forecasts.sort_values("horizon").itertuples():
            lines.append(
                f"| {pd.Timestamp(row.target_time):%Y-%m-%d %H:%M} | {row.horizon} "
                f"| {row.value:.6g} | {row.lower_80:.6g} – {row.upper_80:.6g} "
                f"| {row.lower_95:.6g} – {row.upper_95:.6g} | {row.naive:.6g} |"
            )
        lines += [
            "",
            f"Model version {o.forecast.model_version_id}, forecast run {o.forecast.run_id}.",
        ]
        if not o.forecast.weights.empty:
            lines += ["", o.forecast.summary, "", weights_table(o.forecast.weights)]
    return "\n".join(lines) + "\n"
