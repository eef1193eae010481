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
