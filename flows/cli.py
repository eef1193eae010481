"""The ``cdd-forecast`` command line. Each command lives in a ``flows/cli_*.py`` module."""

from __future__ import annotations

import os

# Prefect's local ephemeral API (the default, no server to start) gives up after 20 s; a busy
# 2-core machine that also imports TensorFlow can need longer. An explicit setting wins.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# training progress (the ``forecaster`` logger) in the flow run logs
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "forecaster")

from flows import (  # noqa: E402, F401  (register their commands)
    cli_db,
    cli_ingest,
    cli_ops,
    cli_pipeline,
    cli_roles,
    cli_serve,
)
from flows.cli_app import app  # noqa: E402

__all__ = ["app"]

if __name__ == "__main__":
    app()
