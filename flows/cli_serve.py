"""``cdd-forecast serve``: the deployments of ``prefect.yaml`` served by one process.

The single-machine alternative to work pools and workers: one process registers the ``daily``,
``train``, ``series`` and ``backfill`` deployments (the names, schedule and parameters of
``prefect.yaml``) with a running Prefect server and runs their flow runs itself. Deployments
of the same names that ``prefect deploy`` made for work pools (they have a work pool and pull
steps) are never replaced: ``serve`` refuses and says what to do, or serves under other names with
``--name-prefix``. Deployments a previous ``serve`` made are its own and served again. On stop
it pauses only the deployments it still serves (not one deployed for workers meanwhile).

>>> served_names("local-")
['daily/local-daily', 'train/local-train', 'series/local-series', 'backfill/local-backfill']
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from flows.cli_app import app
from flows.cli_ops import BACKFILL_DEFAULTS

if TYPE_CHECKING:
    from prefect.client.schemas.responses import DeploymentResponse
    from prefect.deployments.runner import RunnerDeployment

DAILY_CRON = "15 0 * * *"
DAILY_TIMEZONE = "UTC"
FLOWS = ("daily", "train", "series", "backfill")  # each flow's deployment has the flow's name


@app.command("serve")
def serve(
    limit: Annotated[
        int | None, typer.Option(min=1, help="At most this many flow runs at a time.")
    ] = None,
    name_prefix: Annotated[
        str,
        typer.Option(help="Serve daily/<prefix>daily, …: beside deployments of prefect deploy."),
    ] = "",
) -> None:
    """Serve the daily (15 0 * * * UTC), train and backfill deployments from this process.

    Needs a running Prefect server: `prefect server start`, and PREFECT_API_URL=
    http://127.0.0.1:4200/api here. Never replaces deployments of the same names that
    `prefect deploy` made for work pools (use --name-prefix). Stop with Ctrl-C: the
    deployments it served are paused (their schedule too) while nothing serves them.
    """
    from prefect import serve as prefect_serve
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    if not api_url:
        typer.echo(
            "error: PREFECT_API_URL is not set: `cdd-forecast serve` registers its deployments "
            "with a Prefect server and needs it running; start one (`prefect server start`) and "
            "export PREFECT_API_URL=http://127.0.0.1:4200/api",
            err=True,
        )
        raise typer.Exit(1)
    names = served_names(name_prefix)
    try:
        in_the_way = {n: d for n, d in existing(names).items() if made_for_workers(d)}
    except ServerUnreachable as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    if in_the_way:
        typer.echo(f"error: {refusal(in_the_way, api_url)}", err=True)
        raise typer.Exit(1)
    # SIGTERM stops it like Ctrl-C, also before Prefect's runner takes the signal over
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        prefect_serve(*served_deployments(name_prefix), limit=limit, pause_on_shutdown=False)
    except KeyboardInterrupt:
        pass  # stopped while it registered the deployments
    finally:
        for name in pause_served(names):
            typer.echo(f"paused {name} (nothing serves it now)")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class ServerUnreachable(RuntimeError):
    """The Prefect server of PREFECT_API_URL did not answer."""


def served_names(name_prefix: str = "") -> list[str]:
    """The ``flow/deployment`` names ``serve`` registers."""
    return [f"{flow}/{name_prefix}{flow}" for flow in FLOWS]


def existing(names: Sequence[str]) -> dict[str, DeploymentResponse]:
    """Those of the deployments ``names`` that the server has, by name."""
    import httpx
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    found = {}
    try:
        with get_client(sync_client=True) as client:
            for name in names:
                try:
                    found[name] = client.read_deployment_by_name(name)
                except ObjectNotFound:
                    pass
    except httpx.TransportError as error:
        raise ServerUnreachable(
            f"the Prefect server at {PREFECT_API_URL.value()} does not answer ({error}); "
            "start it (`prefect server start`) or fix PREFECT_API_URL"
        ) from None
    return found


def made_for_workers(deployment: DeploymentResponse) -> bool:
    """Made by `prefect deploy` (a work pool, pull steps), not by a serving process."""
    return bool(deployment.work_pool_name or deployment.pull_steps)


def refusal(in_the_way: dict[str, DeploymentResponse], api_url: str) -> str:
    """Why ``serve`` will not start, naming the deployments in the way, and what to do."""
    names = ", ".join(
        f"{name} (work pool {d.work_pool_name or 'none'})" for name, d in in_the_way.items()
    )
    return (
        f"the Prefect server at {api_url} already has {names}, made by `prefect deploy` for "
        "workers; serving would replace them (pull steps and work pools lost) and pause them "
        "on stop, so `cdd-forecast serve` leaves them alone. Either run workers for them "
        "(`prefect worker start --pool cpu`, and `--pool gpu` on the GPU machine), or serve "
        "under other names (`cdd-forecast serve --name-prefix local-` serves daily/local-daily, "
        "… — its daily schedule then runs beside theirs: pause one), or delete them first "
        "(`prefect deployment delete daily/daily`, …)."
    )


def pause_served(names: Sequence[str]) -> list[str]:
    """Pause those of the deployments ``names`` that a process serves (not one deployed for
    workers meanwhile); their names."""
    from prefect import get_client

    try:
        served = {n: d for n, d in existing(names).items() if not made_for_workers(d)}
    except ServerUnreachable:
        return []  # the server stopped first: nothing to pause
    with get_client(sync_client=True) as client:
        for deployment in served.values():
            client.pause_deployment(deployment.id)
    return list(served)


def served_deployments(name_prefix: str = "") -> list[RunnerDeployment]:
    """The deployments of prefect.yaml, as one process serves them (no work pools)."""
    from prefect.schedules import Cron

    from flows.backfill import backfill_flow
    from flows.daily import daily_flow
    from flows.series import series_flow
    from flows.train import train_flow

    return [
        daily_flow.to_deployment(
            name=f"{name_prefix}daily", schedule=Cron(DAILY_CRON, timezone=DAILY_TIMEZONE)
        ),
        train_flow.to_deployment(name=f"{name_prefix}train"),
        series_flow.to_deployment(name=f"{name_prefix}series"),
        backfill_flow.to_deployment(
            name=f"{name_prefix}backfill", parameters=dict(BACKFILL_DEFAULTS)
        ),
    ]
