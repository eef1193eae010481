"""One run at a time per piece of work: a lease (``db.locks``) held while a run works on it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_run_logger
from prefect.runtime import flow_run

from db.engine import get_engine
from db.locks import Lease, hold, holder_name
from settings import get_settings


@contextmanager
def one_run_at_a_time(name: str) -> Iterator[Lease]:
    """Hold the lease ``daily-<name>`` (a series key, or ``global-<timeframe>``) while a run
    trains, forecasts and evaluates it.

    A second run of the same series waits (at most ``CDDF_SERIES_LOCK_WAIT``, logging whom for)
    and then finds the work done: the policy keeps the version just trained and the forecast
    of the same as_of and version replaces the run, so one version and one forecast run come
    of both. Past the wait, `LockTimeoutError` names the holder; a holder killed with kill -9
    stops renewing and its lease ends within ``CDDF_LOCK_LEASE_SECONDS``.
    """
    settings = get_settings()
    logger = get_run_logger()

    def waiting(other: Lease) -> None:
        logger.warning(
            "%s: another run is training or forecasting it: waiting for the lease daily-%s, "
            "held by %s (at most %g s, CDDF_SERIES_LOCK_WAIT)",
            name,
            name,
            other.holder,
            settings.series_lock_wait,
        )

    with hold(
        get_engine(),
        f"daily-{name}",
        lease=dt.timedelta(seconds=settings.lock_lease_seconds),
        holder=holder_name(flow_run.id),
        timeout=settings.series_lock_wait,
        on_wait=waiting,
    ) as lease:
        yield lease
