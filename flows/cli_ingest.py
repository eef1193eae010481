"""``cdd-forecast ingest`` and ``cdd-forecast series``: fill and list the candles tables."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from flows.cli_app import app

if TYPE_CHECKING:
    from rich.console import Console
    from sqlalchemy import Engine

    from flows.ingest import IngestResult

_SOURCE_HELP = (
    "Where the files come from instead of CryptoDataDownload: a local path, a file:// URL or any "
    "http(s) URL. A single file serves one series (its key defaults to the file name, e.g. "
    "Bitstamp_BTCUSD_d.csv); with several --series give a directory, or a base URL ending in /, "
    "holding <series>.csv files."
)


def _engine(console: Console) -> Engine:
    from db.engine import get_engine

    try:
        return get_engine()
    except Exception as error:  # unreachable server or schema behind: say so, no traceback
        console.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(1) from None


@app.command("ingest")
def ingest(
    series: Annotated[
        list[str] | None,
        typer.Option(
            "--series",
            "-s",
            help="Series key such as Bitstamp_BTCUSD_d (repeatable; default: CDDF_SERIES).",
        ),
    ] = None,
    source: Annotated[str | None, typer.Option(help=_SOURCE_HELP)] = None,
) -> None:
    """Download, check and store the candles of each series (exit 1 if any failed).

    Re-running writes only what changed; a file unchanged since the last run (same ETag or
    Last-Modified) is not downloaded again.
    """
    from rich.console import Console

    from db.series_key import SeriesKey
    from flows.ingest import IngestResult, ingest_series, plan_series, resolve_source

    console = Console(stderr=True, highlight=False)
    try:
        keys = plan_series(series, source)
    except ValueError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    engine = _engine(console)
    results: list[IngestResult] = []
    with _progress(console) as progress:
        for key in keys:
            task_id = progress.add_task(f"{key}: downloading", total=None)

            def report(done: int, total: int | None, task_id=task_id) -> None:
                progress.update(task_id, completed=done, total=total)

            try:
                result = ingest_series(key, source, engine=engine, on_progress=report)
            except Exception as error:  # each series fails alone; the summary shows why
                url = resolve_source(SeriesKey.parse(key), source)
                result = IngestResult(key, url, "failed", error=f"{error}")
            results.append(result)
            progress.update(task_id, description=f"{key}: {result.status}", total=1, completed=1)
    _stdout().print(_summary(results))
    failed = [result for result in results if result.status == "failed"]
    for result in failed:
        console.print(f"[red]{result.series} failed:[/red] {result.error}", soft_wrap=True)
    if failed:
        raise typer.Exit(1)


@app.command("series")
def list_series() -> None:
    """List the stored series: first and last candle, number of candles, missing candles."""
    from rich.console import Console
    from rich.table import Table

    from db.candles import series_summary

    summaries = series_summary(_engine(Console(stderr=True, highlight=False)))
    if not summaries:
        typer.echo("no series stored yet: run `cdd-forecast ingest --series <key>`")
        return
    table = Table("series", "timeframe", "first", "last", "candles", "gaps")
    for summary in summaries:
        table.add_row(
            summary.key,
            summary.timeframe,
            _time(summary.first),
            _time(summary.last),
            f"{summary.count:,}",
            f"{summary.gaps:,}",
        )
    _stdout().print(table)


def _stdout() -> Console:
    """The console for tables: the terminal's width, or wide enough when piped to a file."""
    import sys

    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _progress(console: Console):
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _summary(results: list[IngestResult]):
    from rich.table import Table

    table = Table(title="ingest summary")
    for name in (
        "series",
        "status",
        "read",
        "inserted",
        "updated",
        "unchanged",
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
            r.gaps,
            r.swapped_volume_rows,
            r.partial_rows,
        )
        shown = ["-"] * len(counts) if r.status == "failed" else [f"{n:,}" for n in counts]
        table.add_row(
            r.series, f"[{style[r.status]}]{r.status}[/]", *shown, _time(r.first), _time(r.last)
        )
    return table


def _time(value) -> str:
    if value is None:
        return "-"
    import pandas as pd

    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.strftime("%Y-%m-%d %H:%M") if stamp != stamp.normalize() else f"{stamp:%Y-%m-%d}"
