"""What a task retries: the database unreachable or its connection dropped, never bad input."""

from __future__ import annotations

from typing import Any

from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from sqlalchemy.exc import DisconnectionError, OperationalError

# What a later attempt of a task can fix: the database unreachable or the connection dropped.
# A download is not retried here: the CDD client retries it itself (CDDF_HTTP_RETRIES, one
# layer, so its error counts every request); a bad file or a constraint violation never is.
OUTAGES = (OperationalError, DisconnectionError)


def outage(task: Any, task_run: TaskRun, state: State) -> bool:
    """Retry a task only when it failed on an outage (OUTAGES), never on bad input."""
    return isinstance(state.result(raise_on_failure=False), OUTAGES)


# For tasks that read or write the database: three retries with backoff, only on an outage.
DB_RETRY: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": [2, 8, 30],
    "retry_jitter_factor": 0.2,
    "retry_condition_fn": outage,
}
