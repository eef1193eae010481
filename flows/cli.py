"""The ``cdd-forecast`` command line. Each command lives in a ``flows/cli_*.py`` module."""

from __future__ import annotations

from flows import cli_db, cli_ingest, cli_ops, cli_pipeline, cli_roles  # noqa: F401  (register their commands)
from flows.cli_app import app

__all__ = ["app"]

if __name__ == "__main__":
    app()
