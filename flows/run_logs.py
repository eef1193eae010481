"""What a run's logs keep: every line an operator reads, not one per completed task run.

    quiet_completed_task_runs()   # once per process; again is a no-op

Prefect logs ``Finished in state Completed()`` at INFO for every task run, on the console and
as a row of the run's logs in Prefect's database: at N = 96 series 1,446 of a daily run's
console lines and most of its log rows (docs/benchmarks.md, Prefect footprint). The filter drops
that one message; a task run's completed state is still recorded (its state, in the UI), and a
failed or crashed task run's ``Finished in state Failed(...)`` (ERROR) still shows.
"""

from __future__ import annotations

import logging

TASK_RUN_LOGGER = "prefect.task_runs"  # the logger of Prefect's task engine and of tasks' logs
COMPLETED = "Finished in state Completed()"


class DropCompletedTaskRuns(logging.Filter):
    """Drops ``Finished in state Completed()``; lets every other record through.

    >>> keep = DropCompletedTaskRuns().filter
    >>> keep(logging.makeLogRecord({"msg": COMPLETED})), keep(logging.makeLogRecord({"msg": "x"}))
    (False, True)
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != COMPLETED


def quiet_completed_task_runs() -> None:
    """Drop the completed task runs' line from this process's task run logs (console and API)."""
    logger = logging.getLogger(TASK_RUN_LOGGER)
    if not any(isinstance(f, DropCompletedTaskRuns) for f in logger.filters):
        logger.addFilter(DropCompletedTaskRuns())
