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
_ACCEPT_HELP = (
    "Store revisions of final candles already stored even beyond CDDF_MAX_REVISIONS and "
    "CDDF_REVISION_MAX_AGE_PERIODS (e.g. CryptoDataDownload restated its history). Each "
    "revision is kept in candle_revisions and the forecasts it touches are re-scored."
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
    accept_revisions: Annotated[bool, typer.Option(help=_ACCEPT_HELP)] = False,
) -> None:
    """Download, check and store the candles of each series (exit 1 if any failed).

    Re-running writes only what changed; a file unchanged since the last run (same ETag or
    Last-Modified) is not downloaded again. A file that changes more final candles, or older
    ones, than the limits allow is refused unless --accept-revisions.
    """
    from rich.console import Console

    from db.series_key import SeriesKey
    from flows.cdd.client import shown_url
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
                result = ingest_series(
                    key,
                    source,
                    engine=engine,
                    on_progress=report,
                    accept_revisions=accept_revisions,
                )
            except Exception as error:  # each series fails alone; the summary shows why
                url = shown_url(resolve_source(SeriesKey.parse(key), source))
                result = IngestResult(key, url, "failed", error=f"{error}")
            results.append(result)
            progress.update(task_id, description=f"{key}: {result.status}", total=1, completed=1)
    _stdout().print(_summary(results))
    if any(_row_counts(result) != (0, 0, 0, 0) for result in results):
        _stdout().print(_row_summary(results))
    for result in results:
        if result.rejected_rows:
            console.print(
                f"[yellow]{result.series}:[/yellow] {result.rejected_rows:,} bad rows were not "
                f"stored; their lines and reasons are in ingest_rejects (ingest run "
                f"{result.run_id}, query in docs/sql.md)",
                soft_wrap=True,
            )
    failed = [result for result in results if result.status == "failed"]
    for result in failed:
        console.print(f"[red]{result.series} failed:[/red] {result.error}", soft_wrap=True)
    if failed:
        raise typer.Exit(1)


HOLES_SHOWN = 20  # `cdd-forecast series` lists at most this many holes per series


@app.command("series")
def list_series() -> None:
    """List the stored series: first and last candle, number of candles, missing candles,
    then the holes (missing candle times) of each series that has some."""
    from rich.console import Console
    from rich.table import Table

    from db.candles import series_summary
    from db.holes import series_holes

    engine = _engine(Console(stderr=True, highlight=False))
    summaries = series_summary(engine)
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
    for summary in summaries:
        holes = series_holes(engine, summary.key) if summary.gaps else []
        if holes:
            shown = "".join(f"\n  {hole}" for hole in holes[:HOLES_SHOWN])
            more = f"\n  … and {len(holes) - HOLES_SHOWN} more" if len(holes) > HOLES_SHOWN else ""
            typer.echo(f"{summary.key}: {len(holes)} holes{shown}{more}")


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
            r.series, f"[{style[r.status]}]{r.status}[/]", *shown, _time(r.first), _time(r.last)
        )
    return table


def _row_counts(result: IngestResult) -> tuple[int, int, int, int]:
    return (
        result.zero_rows,
        result.rejected_rows,
        result.superseded_rows,
        result.time_mismatches,
    )


def _row_summary(results: list[IngestResult]):
    """What the parser skipped (all-zero rows), rejected, dropped and noticed per series."""
    from rich.table import Table

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


def _time(value) -> str:
    if value is None:
        return "-"
    import pandas as pd

    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.strftime("%Y-%m-%d %H:%M") if stamp != stamp.normalize() else f"{stamp:%Y-%m-%d}"
