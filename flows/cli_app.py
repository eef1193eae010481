"""The Typer apps that every command module registers on; ``flows.cli`` assembles them."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="cdd-forecast",
    help="Download CryptoDataDownload candles, train the LSTM, forecast and score, into SQL.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
db_app = typer.Typer(help="Database schema and roles.", no_args_is_help=True)
app.add_typer(db_app, name="db")

# commands that run flows; they start Prefect's temporary API tied to the CLI's life (not
# `serve`: it registers deployments, which only a running Prefect server keeps and schedules)
FLOW_COMMANDS = frozenset({"run", "backfill"})


@app.callback()
def _start(context: typer.Context) -> None:
    """Download CryptoDataDownload candles, train the LSTM, forecast and score, into SQL."""
    if context.invoked_subcommand in FLOW_COMMANDS:
        from flows.ephemeral_api import start_ephemeral_api

        start_ephemeral_api()  # dies with this process, even after kill -9
