"""The daily run's last step: the retention prune (`db.retention`), which never fails the run.

prune_after_run()     # after the forecasts are stored and published
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from db.engine import get_engine
from db.retention import PruneReport, prune
from flows.retry import DB_RETRY
from settings import get_settings


@task(cache_policy=NO_CACHE, **DB_RETRY)
def prune_weights() -> PruneReport:
    """Drop the weights no model scope can serve or roll back to (CDDF_KEEP_VERSIONS)."""
    return prune(get_engine(), keep_versions=get_settings().keep_versions)


def prune_after_run() -> PruneReport | None:
    """Prune after the run's work; a failure is a warning naming what to run, not a failed
    run (its forecasts are stored, and the next run prunes again)."""
    logger = get_run_logger()
    try:
        report = prune_weights()
    except Exception as error:
        logger.warning(
            "retention: the prune failed: %s: %s; the forecasts are stored; the next run "
            "prunes again, or run `cdd-forecast db prune`",
            type(error).__name__,
            error,
        )
        return None
    logger.info("retention: %s", report.summary())
    return report
