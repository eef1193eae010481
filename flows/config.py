"""What the flows share: the forecaster config of the service and the database retry policy.

The forecaster config is the package's defaults, overridden by ``CDDF_FORECASTER`` (JSON, in
the environment or ``.env``), e.g. ``CDDF_FORECASTER='{"units": 64, "max_epochs": 50}'``.

>>> forecaster_config().horizon
7
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.exc import DisconnectionError, OperationalError

from forecaster import ForecasterConfig

# the forecasts table has columns for these interval levels
REQUIRED_LEVELS = (0.8, 0.95)
# "recent skill" pools the newest scored runs, this many
RECENT_RUNS = 14


class _ForecasterOverrides(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CDDF_", env_file=".env", extra="ignore")

    forecaster: dict[str, Any] = {}


def forecaster_config() -> ForecasterConfig:
    """The package's default config with the ``CDDF_FORECASTER`` overrides applied."""
    try:
        overrides = _ForecasterOverrides().forecaster
    except ValidationError as error:
        raise ValueError(
            f"CDDF_FORECASTER must be a JSON object of ForecasterConfig fields, e.g. "
            f'{{"units": 64}}: {error.errors()[0]["msg"]}'
        ) from error
    try:
        config = ForecasterConfig.from_dict(ForecasterConfig().to_dict() | overrides)
    except (TypeError, ValueError) as error:
        raise ValueError(f"CDDF_FORECASTER={json.dumps(overrides)}: {error}") from error
    missing = [level for level in REQUIRED_LEVELS if level not in config.interval_levels]
    if missing:
        raise ValueError(
            f"CDDF_FORECASTER={json.dumps(overrides)}: interval_levels must include "
            f"{list(REQUIRED_LEVELS)} (the forecasts table stores those bands)"
        )
    return config


def database_unreachable(task: Any, task_run: TaskRun, state: State) -> bool:
    """Retry a task only when the database could not be reached or dropped the connection."""
    try:
        state.result()
    except (OperationalError, DisconnectionError):
        return True
    except BaseException:
        return False
    return False


# For tasks that read or write the database: three retries with backoff, only when the
# database is unreachable (a constraint violation or a bad input is never retried).
DB_RETRY: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": [2, 8, 30],
    "retry_jitter_factor": 0.2,
    "retry_condition_fn": database_unreachable,
}


@contextmanager
def training_progress() -> Iterator[None]:
    """Let the model's per-epoch lines (``forecaster`` logger, INFO) through while it trains.

    They reach the flow run logs where PREFECT_LOGGING_EXTRA_LOGGERS=forecaster (the CLI and
    prefect.yaml set it); the logger's level is restored afterwards.
    """
    log = logging.getLogger("forecaster")
    previous = log.level
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.setLevel(previous)
