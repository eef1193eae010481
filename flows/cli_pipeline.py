"""``cdd-forecast run`` (the daily pipeline, in this process) and ``cdd-forecast forecasts``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from flows.cli_app import app

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from sqlalchemy import Engine

    from flows.daily import SeriesOutcome

_SERIES_HELP = "Series key such as Bitstamp_BTCUSD_d (repeatable; default: CDDF_SERIES)."
_SOURCE_HELP = (
    "Where the candle files come from instead of CryptoDataDownload: a file you downloaded "
    "(one series), or a directory or base URL ending in / holding <series>.csv files."
)


@app.command("run")
def run(
    series: Annotated[list[str] | None, typer.Option("--series", "-s", help=_SERIES_HELP)] = None,
    source: Annotated[str | None, typer.Option(help=_SOURCE_HELP)] = None,
) -> None:
    """Run the daily pipeline now, in this process: ingest, train or fine-tune, forecast, score.

    Uses the settings (CDDF_*) or their defaults: a SQLite file cdd_forecast.sqlite in the
    current directory and Prefect's local ephemeral API. Exits 1 if any series failed.
    """
    import os

    # Prefect's local API starts in a subprocess; give it time on a busy machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from flows.ingest import plan_series

    console = _stderr()
    try:
        keys = plan_series(series, source)
    except ValueError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    _engine(console)
    unreachable = unreachable_source(keys, source)
    if unreachable is not None:
        console.print(f"[red]error:[/red] {unreachable}", soft_wrap=True)
        raise typer.Exit(1)

    from flows.cdd.errors import CDDNetworkError
    from flows.daily import DailyRunFailed, daily_flow

    try:
        outcomes = daily_flow(keys, source)
    except DailyRunFailed as failed:
        outcomes = failed.outcomes
    _stdout().print(outcome_table(outcomes))
    for outcome in outcomes:
        if outcome.error is None:
            _stdout().print(forecasts_table(outcome.series, outcome.forecast.forecasts))
            continue
        console.print(f"[red]{outcome.series} failed at {outcome.failed_step}:[/red] "
                      f"{type(outcome.error).__name__}: {outcome.error}", soft_wrap=True)
        if isinstance(outcome.error, CDDNetworkError):
            console.print(source_hint(outcome.series), soft_wrap=True)
    if any(outcome.error is not None for outcome in outcomes):
        raise typer.Exit(1)


@app.command("forecasts")
def forecasts(
    series: Annotated[list[str] | None, typer.Option("--series", "-s", help=_SERIES_HELP)] = None,
) -> None:
    """Print the latest forecast of each series: every horizon with its 80/95 % intervals."""
    from db.forecasts import latest_forecasts
    from db.series_key import SeriesKey
    from settings import get_settings

    console = _stderr()
    try:
        keys = [SeriesKey.parse(key).key for key in series or get_settings().series]
    except ValueError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    engine = _engine(console)
    missing = []
    for key in keys:
        frame = latest_forecasts(engine, key)
        if frame.empty:
            missing.append(key)
        else:
            _stdout().print(forecasts_table(key, frame))
    for key in missing:
        console.print(f"no forecasts of {key} yet: run `cdd-forecast run --series {key}`")
    if len(missing) == len(keys):
        raise typer.Exit(1)


def unreachable_source(keys: list[str], source: str | None) -> str | None:
    """A message naming the first HTTP host of the sources that cannot be reached, else None."""
    from urllib.parse import urlsplit

    import requests

    from db.series_key import SeriesKey
    from flows.cdd.client import is_http, shown_url
    from flows.ingest import resolve_source
    from settings import get_settings

    settings = get_settings()
    checked: set[str] = set()
    for key in keys:
        url = resolve_source(SeriesKey.parse(key), source)
        host = urlsplit(url).netloc
        if not is_http(url) or host in checked:
            continue
        checked.add(host)
        try:  # any HTTP answer, even an error status, means the host is there
            requests.head(url, timeout=(settings.http_connect_timeout, 30), allow_redirects=True)
        except requests.RequestException as error:
            return (
                f"cannot reach {urlsplit(url).hostname} ({type(error).__name__}: "
                f"{shown_url(str(error))}).\n" + source_hint(key, shown_url(url))
            )
    return None


def source_hint(series: str, url: str | None = None) -> str:
    """How to run with a file downloaded elsewhere."""
    where = f" from {url}" if url else ""
    return (
        f"Download {series}.csv{where} on a machine that can reach it and pass the file with "
        f"--source:\n  cdd-forecast run --series {series} --source ./{series}.csv\n"
        "(several series: --source a directory, or a base URL ending in /, holding "
        "<series>.csv files)"
    )


def outcome_table(outcomes: list[SeriesOutcome]) -> Table:
    """Per series: status, rows ingested, model version, forecast as_of, skill, chart."""
    from rich.table import Table

    table = Table(title="daily run")
    for name in ("series", "status", "ingested", "model version", "as of", "recent skill",
                 "chart"):
        table.add_column(name, no_wrap=name != "chart")
    for o in outcomes:
        status = "[green]ok[/]" if o.error is None else f"[red]failed at {o.failed_step}[/]"
        skill = None if o.evaluate is None else o.evaluate.recent_skill
        table.add_row(
            o.series, status,
            "-" if o.ingest is None else f"{o.ingest.inserted + o.ingest.updated:,}",
            "-" if o.trained is None else
            f"{o.trained.version.id} ({_action(o.trained.action)})",
            "-" if o.forecast is None else f"{o.forecast.as_of:%Y-%m-%d %H:%M}",
            "n/a" if skill is None else f"{skill:+.3f}",
            "-" if o.chart is None else str(o.chart),
        )
    return table


def forecasts_table(series: str, frame) -> Table:
    """The forecasts of one run: target time, horizon, value, intervals and naive."""
    import pandas as pd
    from rich.table import Table

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
            f"{pd.Timestamp(row.target_time):%Y-%m-%d %H:%M}", str(row.horizon),
            f"{row.value:,.2f}", f"{row.lower_80:,.2f} – {row.upper_80:,.2f}",
            f"{row.lower_95:,.2f} – {row.upper_95:,.2f}", f"{row.naive:,.2f}",
        )
    return table


def _action(action: str) -> str:
    return {"keep": "kept", "retrain": "retrained", "finetune": "fine-tuned"}.get(action, action)


def _engine(console: Console) -> Engine:
    from db.engine import get_engine

    try:
        return get_engine()
    except Exception as error:  # unreachable server or schema behind: say so, no traceback
        console.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(1) from None


def _stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _stdout() -> Console:
    import sys

    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)
