"""``cdd-forecast backfill``: point-in-time forecasts over a range of dates, in this process."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import typer

from flows.cli_app import app

BACKFILL_DEFAULTS: dict[str, Any] = {"retrain_every": 7, "force": False}

_DATE = ["%Y-%m-%d"]


@app.command("backfill")
def backfill(
    series: Annotated[str, typer.Option(help="Series key, e.g. Bitstamp_BTCUSD_d.")],
    start: Annotated[dt.datetime, typer.Option(formats=_DATE, help="First as_of date (UTC).")],
    end: Annotated[dt.datetime, typer.Option(formats=_DATE, help="Last as_of date (UTC).")],
    retrain_every: Annotated[
        int, typer.Option(min=1, help="Retrain from scratch every N steps; fine-tune between.")
    ] = BACKFILL_DEFAULTS["retrain_every"],
    force: Annotated[
        bool, typer.Option("--force", help="Redo as_of dates that already have forecasts.")
    ] = BACKFILL_DEFAULTS["force"],
    parallel: Annotated[
        int, typer.Option(min=1, help="Retrain blocks trained at once (GPU, many cores).")
    ] = 1,
) -> None:
    """Point-in-time forecasts for every as_of from START to END, then their scores.

    Resumable: dates already forecast are skipped unless --force. Runs in this process;
    on a Prefect server use `prefect deployment run 'backfill/backfill' --param ...` instead.
    """
    from flows.backfill import BackfillError, backfill_flow

    try:
        summary = backfill_flow(
            series=series,
            start=start.date(),
            end=end.date(),
            retrain_every=retrain_every,
            force=force,
            parallel=parallel,
        )
    except (BackfillError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    for line in summary.lines():
        typer.echo(line)
