"""What the ``cdd-forecast`` commands print: consoles, progress bars and rich tables.

>>> cell_time(None), cell_time("2024-06-30"), cell_time("2024-06-30 13:00")
('-', '2024-06-30', '2024-06-30 13:00')
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

if TYPE_CHECKING:
    from db.candles import SeriesSummary
    from flows.ingest import IngestResult, SeriesPlan
    from flows.pipeline import SeriesOutcome
    from flows.served_scores import ServedScores

HOLES_SHOWN = 20  # `cdd-forecast series` lists at most this many holes per series


def stdout() -> Console:
    """The console for tables: the terminal's width, or wide enough when piped to a file."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def stderr() -> Console:
    """The console for errors, notes and progress."""
    return Console(stderr=True, highlight=False)


def error(message: str) -> None:
    """``error: message`` on stderr, the word in red."""
    labelled(stderr(), "red", "error:", message)


def labelled(console: Console, style: str, label: str, message: str) -> None:
    """``label message`` with the label in ``style``; both printed as they are, never read as
    markup: a file's cell or an error may hold ``[/red]``, which rich would take for a tag.

    >>> labelled(Console(width=60, color_system=None), "red", "x failed:", "cell '[/red]'")
    x failed: cell '[/red]'
    """
    console.print(f"[{style}]{escape(label)}[/{style}] {escape(message)}", soft_wrap=True)


class IngestProgress:
    """A line per series on ``console``: its download's bytes, then its status."""

    def __init__(self, console: Console) -> None:
        self._bars = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self._current: TaskID | None = None

    def __enter__(self) -> IngestProgress:
        self._bars.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._bars.stop()

    def track(self, key: str) -> Callable[[int, int | None], None]:
        """Start ``key``'s line; the callback that moves its bar (bytes done, total)."""
        task_id = self._current = self._bars.add_task(f"{key}: downloading", total=None)
        return lambda done, total: self._bars.update(task_id, completed=done, total=total)

    def done(self, result: IngestResult) -> None:
        """End the current line with the series' status."""
        assert self._current is not None, "track() a series before done()"
        self._bars.update(
            self._current, description=f"{result.series}: {result.status}", total=1, completed=1
        )


def ingest_summary(results: list[IngestResult]) -> Table:
    """Per series: status, rows read, the upsert's counts, what the parser noticed, the span."""
    table = Table(title="ingest summary")
    for name in (
        "series",
        "status",
        "read",
        "inserted",
        "updated",
        "unchanged",
        "revised",
        "gaps",
        "swapped vol.",
        "partial",
        "first",
        "last",
    ):
        table.add_column(name, no_wrap=name in ("series", "status"))
    style = {"success": "green", "not_modified": "cyan", "failed": "red"}
    for r in results:
        counts = (
            r.rows_read,
            r.inserted,
            r.updated,
            r.unchanged,
            r.revised,
            r.gaps,
            r.swapped_volume_rows,
            r.partial_rows,
        )
        shown = ["-"] * len(counts) if r.status == "failed" else [f"{n:,}" for n in counts]
        table.add_row(
            escape(r.series),
            f"[{style[r.status]}]{r.status}[/]",
            *shown,
            cell_time(r.first),
            cell_time(r.last),
        )
    return table


def rows_not_stored(results: list[IngestResult]) -> Table | None:
    """What the parser skipped (all-zero rows), rejected, dropped and noticed per series;
    None when every count is 0."""
    if all(_row_counts(result) == (0, 0, 0, 0) for result in results):
        return None
    table = Table(title="rows not stored as read")
    for name in ("series", "all-zero", "rejected", "superseded", "date ≠ unix"):
        table.add_column(name, no_wrap=True)
    for result in results:
        if result.status != "failed":
            table.add_row(result.series, *(f"{n:,}" for n in _row_counts(result)))
    table.caption = (
        "all-zero: not trading yet, skipped; rejected: bad rows, kept in ingest_rejects; "
        "superseded: an older format's copy of a candle; date ≠ unix: the unix time was used"
    )
    return table


def _row_counts(result: IngestResult) -> tuple[int, int, int, int]:
    return (
        result.zero_rows,
        result.rejected_rows,
        result.superseded_rows,
        result.time_mismatches,
    )


def series_table(summaries: list[SeriesSummary]) -> Table:
    """Per stored series: timeframe, first and last candle, candles, missing candles."""
    table = Table("series", "timeframe", "first", "last", "candles", "gaps")
    for summary in summaries:
        table.add_row(
            summary.key,
            summary.timeframe,
            cell_time(summary.first),
            cell_time(summary.last),
            f"{summary.count:,}",
            f"{summary.gaps:,}",
        )
    return table


def holes_text(key: str, holes: list) -> str:
    """``key``'s holes, one a line, the first HOLES_SHOWN of them."""
    shown = "".join(f"\n  {hole}" for hole in holes[:HOLES_SHOWN])
    more = f"\n  … and {len(holes) - HOLES_SHOWN} more" if len(holes) > HOLES_SHOWN else ""
    return f"{key}: {len(holes)} holes{shown}{more}"


CONSOLE_SERIES = 12  # a run of more series prints its counts and its problems, not every series


def outcome_table(outcomes: list[SeriesOutcome]) -> Table:
    """Per series: status, rows ingested, model version, forecast as_of, skill, chart; above
    CONSOLE_SERIES series only the failed and skipped ones, under the run's counts (every
    series is in the run's artifacts: ``daily-summary`` and each ``series-<key>``)."""
    from flows.summary import counts_line

    many = len(outcomes) > CONSOLE_SERIES
    shown = [o for o in outcomes if o.error is not None or o.skipped] if many else outcomes
    table = Table(title="daily run", caption=counts_line(outcomes))
    if many:
        table.caption += (
            f" Only the {len(shown)} failed or skipped are listed; every series is in the "
            "run's artifacts (daily-summary and series-<key>)."
        )
    for name in ("series", "status", "ingested", "model version", "as of", "recent skill", "chart"):
        table.add_column(name, no_wrap=name != "chart")
    for o in shown:
        status = "[green]ok[/]" if o.error is None else f"[red]failed at {o.failed_step}[/]"
        if o.skipped:
            status = f"[yellow]skipped: {escape(o.skipped)}[/]"
        skill = None if o.evaluate is None else o.evaluate.recent_skill
        table.add_row(
            o.series,
            status,
            "-" if o.ingest is None else f"{o.ingest.inserted + o.ingest.updated:,}",
            "-" if o.trained is None else f"{o.trained.version.id} ({_action(o.trained.action)})",
            "-" if o.forecast is None else f"{o.forecast.as_of:%Y-%m-%d %H:%M}",
            "n/a" if skill is None else f"{skill:+.3f}",
            "-" if o.chart is None else escape(str(o.chart)),
        )
    return table


def forecasts_shown(outcomes: list[SeriesOutcome]) -> list[SeriesOutcome]:
    """The series whose forecasts the console prints as a table: each forecast one of a run of
    at most CONSOLE_SERIES series, none of a larger run (their artifacts have them)."""
    if len(outcomes) > CONSOLE_SERIES:
        return []
    return [o for o in outcomes if o.forecast is not None]


def forecasts_table(series: str, frame) -> Table:
    """The forecasts of one run: target time, horizon, value, intervals and naive."""
    import pandas as pd

    as_of = pd.Timestamp(frame["as_of"].iloc[0])
    version = frame["model_version_id"].iloc[0] if "model_version_id" in frame else None
    title = f"{series} forecast as of {as_of:%Y-%m-%d %H:%M} UTC" + (
        f" (model version {version})" if version is not None else ""
    )
    table = Table(title=title)
    for name in ("target time", "h", "forecast", "80 % interval", "95 % interval", "naive"):
        table.add_column(name, justify="left" if name == "target time" else "right")
    for row in frame.sort_values("horizon").itertuples():
        table.add_row(
            f"{pd.Timestamp(row.target_time):%Y-%m-%d %H:%M}",
            str(row.horizon),
            f"{row.value:,.2f}",
            f"{row.lower_80:,.2f} – {row.upper_80:,.2f}",
            f"{row.lower_95:,.2f} – {row.upper_95:,.2f}",
            f"{row.naive:,.2f}",
        )
    return table


def served_scores_table(scored: ServedScores) -> Table:
    """One row per series: its stretch, RMSE ÷ naive's, interval scores beside the naive's
    empirical ones, coverage, Diebold–Mariano against naive and its p adjusted by Holm."""
    table = Table(title=f"Served forecasts against naive, the last {scored.days} days of each")
    names = ["series", "as_of", "as_ofs", "RMSE ÷ naive", "LSTM alone", "IS 80 % (naive)"]
    names += ["IS 95 % (naive)", "cover 80 / 95", "DM", "p", "p Holm"]
    for name in names:
        table.add_column(name, justify="left" if name in ("series", "as_of") else "right")
    for one in scored.series:
        s = one.scores
        table.add_row(
            escape(one.series),
            f"{cell_time(one.first_as_of)} → {cell_time(one.last_as_of)}",
            f"{one.as_ofs:,}",
            _figure(one.rmse_ratio, ".4f"),
            _figure(s["lstm_rmse"] / s["naive_rmse"], ".4f"),
            f"{_figure(s['interval_score_80'], '.4f')} "
            f"({_figure(s['naive_interval_score_80'], '.4f')})",
            f"{_figure(s['interval_score_95'], '.4f')} "
            f"({_figure(s['naive_interval_score_95'], '.4f')})",
            f"{_figure(s['coverage_80'], '.3f')} / {_figure(s['coverage_95'], '.3f')}",
            _figure(one.dm_statistic, "+.2f"),
            _figure(one.dm_p_value, ".3f"),
            _figure(one.dm_p_holm, ".3f"),
        )
    return table


def _figure(value: float, spec: str) -> str:
    """A score as the tables print it; ``-`` where there is none (too few as_ofs for a test,
    forecasts stored before the LSTM's own were)."""
    return format(value, spec) if math.isfinite(value) else "-"


def _action(action: str) -> str:
    return {"keep": "kept", "retrain": "retrained", "finetune": "fine-tuned"}.get(action, action)


def cell_time(value) -> str:
    """A candle time in UTC as a table shows it: the date alone at midnight; ``-`` for none."""
    if value is None:
        return "-"
    import pandas as pd

    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.strftime("%Y-%m-%d %H:%M") if stamp != stamp.normalize() else f"{stamp:%Y-%m-%d}"


def plan_lines(planned: SeriesPlan, joining: list[str], *, every: bool) -> list[str]:
    """What a run takes: with ``every`` (``--dry-run``) each entry and the keys it selects,
    the new ones marked; else one line, the new keys cut to 10.

    >>> from flows.ingest import SeriesPlan
    >>> planned = SeriesPlan(["A_XXXX_d", "B_YYYY_d"], "CDDF_SERIES",
    ...     {"A_*_d": ["A_XXXX_d"], "B_YYYY_d": ["B_YYYY_d"]}, [])
    >>> print("\\n".join(plan_lines(planned, ["B_YYYY_d"], every=True)))
    CDDF_SERIES selects 2 series (1 joins this run: not in the series table yet):
      A_*_d selects 1: A_XXXX_d
      B_YYYY_d (joins this run)
    >>> plan_lines(planned, ["B_YYYY_d"], every=False)
    ['2 series from CDDF_SERIES; 1 joins this run: B_YYYY_d']
    """
    if not every:
        return [planned.summary(joining)]
    new = set(joining)

    def shown(key: str) -> str:
        return f"{key} (joins this run)" if key in new else key

    verb = "joins" if len(new) == 1 else "join"
    lines = [
        f"{planned.origin} selects {len(planned.keys)} series ({len(new)} {verb} this run: "
        "not in the series table yet):"
    ]
    for entry, keys in planned.selected.items():
        if entry in planned.patterns():
            lines.append(f"  {entry} selects {len(keys)}: {', '.join(map(shown, keys))}")
        else:
            lines.append(f"  {shown(entry)}")
    return lines
