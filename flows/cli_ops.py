"""``cdd-forecast backfill`` and ``cdd-forecast serve``: the operations commands.

``serve`` is the single-machine alternative to a Prefect server with work pools and workers:
one process registers the ``daily``, ``train`` and ``backfill`` deployments (the same names,
schedule and parameters as ``prefect.yaml``) and runs their flow runs itself.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flows.cli_app import app

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

DAILY_CRON = "15 0 * * *"
DAILY_TIMEZONE = "UTC"
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


@app.command("serve")
def serve(
    limit: Annotated[
        int | None, typer.Option(min=1, help="At most this many flow runs at a time.")
    ] = None,
) -> None:
    """Serve the daily (15 0 * * * UTC), train and backfill deployments from this process.

    Needs a Prefect server: set PREFECT_API_URL (e.g. after `prefect server start`). Stop with
    Ctrl-C; the daily schedule is paused while nothing serves it.
    """
    from prefect import serve as prefect_serve
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        typer.echo(
            "error: PREFECT_API_URL is not set: `cdd-forecast serve` registers its deployments "
            "with a Prefect server; start one (`prefect server start`) and export "
            "PREFECT_API_URL=http://127.0.0.1:4200/api",
            err=True,
        )
        raise typer.Exit(1)
    prefect_serve(*served_deployments(), limit=limit)


def served_deployments() -> list[RunnerDeployment]:
    """The deployments of prefect.yaml, as one process serves them (no work pools)."""
    from prefect.schedules import Cron

    from flows.backfill import backfill_flow
    from flows.daily import daily_flow
    from flows.train import train_flow

    return [
        daily_flow.to_deployment(name="daily", schedule=Cron(DAILY_CRON, timezone=DAILY_TIMEZONE)),
        train_flow.to_deployment(name="train"),
        backfill_flow.to_deployment(name="backfill", parameters=dict(BACKFILL_DEFAULTS)),
    ]
