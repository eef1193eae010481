"""Leases on named work (``backfill-<series>``) that die with their holder.

A lease is a row of ``series_locks``: who holds it and until when. Its holder renews it from a
background thread while it works and deletes it when done; a holder killed with ``kill -9``
stops renewing, so the row expires after at most one lease and the next caller takes it over.

    with hold(engine, "backfill-Bitstamp_BTCUSD_d", lease=dt.timedelta(seconds=60)):
        ...   # nobody else holds backfill-Bitstamp_BTCUSD_d in here

Taking a lease is one statement on SQLite and PostgreSQL alike: ``INSERT … ON CONFLICT (name)
DO UPDATE … WHERE expires_at < now``, so of two callers racing for an expired row one wins.
Times are the callers' clocks in UTC: hosts sharing a database must keep their clocks in sync
(NTP), well within a lease.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DisconnectionError, OperationalError, SQLAlchemyError

from db.models import SeriesLock

log = logging.getLogger(__name__)


class LockTimeoutError(TimeoutError):
    """The lease stayed held by someone else for longer than the caller would wait."""


@dataclass(frozen=True)
class Lease:
    """A held lease: ``name``, its ``holder`` and until when it runs unless renewed."""

    name: str
    holder: str
    acquired_at: dt.datetime
    expires_at: dt.datetime


def holder_name(flow_run_id: object | None = None) -> str:
    """Who takes a lease: host, process id, flow run and a token unique to this call.

    holder_name("4f0c…")  # -> 'host build-1 pid 4242 flow run 4f0c… [9a1b2c3d]'
    """
    run = f" flow run {flow_run_id}" if flow_run_id else ""
    return f"host {socket.gethostname()} pid {os.getpid()}{run} [{uuid.uuid4().hex[:8]}]"


def try_acquire(
    engine: Engine, name: str, holder: str, lease: dt.timedelta, *, now: dt.datetime | None = None
) -> Lease | None:
    """Take ``name`` when it is free or expired; None while another holder's lease runs."""
    now = now or dt.datetime.now(dt.UTC)
    values = {"name": name, "holder": holder, "acquired_at": now, "expires_at": now + lease}
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(SeriesLock)
        .values(**values)
        .on_conflict_do_update(
            index_elements=[SeriesLock.name],
            set_={key: value for key, value in values.items() if key != "name"},
            where=SeriesLock.expires_at < now,
        )
        .returning(SeriesLock.holder)
    )
    with engine.begin() as connection:
        taken = connection.execute(statement).scalar_one_or_none()
    if taken != holder:
        return None
    return Lease(name, holder, now, now + lease)


def current(engine: Engine, name: str) -> Lease | None:
    """The lease on ``name`` as stored (possibly expired), or None."""
    with engine.connect() as connection:
        row = connection.execute(select(SeriesLock).where(SeriesLock.name == name)).one_or_none()
    return None if row is None else Lease(row.name, row.holder, row.acquired_at, row.expires_at)


def renew(engine: Engine, lease: Lease, duration: dt.timedelta) -> bool:
    """Extend ``lease`` by ``duration`` from now; False when it was lost (expired and taken)."""
    statement = (
        update(SeriesLock)
        .where(SeriesLock.name == lease.name, SeriesLock.holder == lease.holder)
        .values(expires_at=dt.datetime.now(dt.UTC) + duration)
    )
    with engine.begin() as connection:
        return connection.execute(statement).rowcount == 1


def release(engine: Engine, lease: Lease) -> None:
    """Give ``lease`` up (a no-op when it was already taken over)."""
    statement = delete(SeriesLock).where(
        SeriesLock.name == lease.name, SeriesLock.holder == lease.holder
    )
    with engine.begin() as connection:
        connection.execute(statement)


def acquire(
    engine: Engine,
    name: str,
    holder: str,
    lease: dt.timedelta,
    *,
    timeout: float | None = None,
    on_wait: Callable[[Lease], None] | None = None,
) -> Lease:
    """Take ``name``, waiting while another holder's lease runs (at most that lease after a kill).

    ``on_wait`` is called with the other lease each time a new holder is found in the way;
    ``timeout`` (seconds, None = no limit) raises :class:`LockTimeoutError` naming the holder.
    """
    started = time.monotonic()
    poll = min(max(lease.total_seconds() / 10, 0.05), 2.0)
    seen: str | None = None
    while True:
        taken = try_acquire(engine, name, holder, lease)
        if taken is not None:
            return taken
        other = current(engine, name)
        if other is None:  # released between the two statements
            continue
        if other.holder != seen and on_wait is not None:
            on_wait(other)
        seen = other.holder
        if timeout is not None and time.monotonic() - started >= timeout:
            raise LockTimeoutError(
                f"{name} is still held by {other.holder} (lease until "
                f"{other.expires_at:%Y-%m-%d %H:%M:%S} UTC) after {timeout:g} s of waiting; "
                "wait for that run to finish, or stop it: its lease then expires by itself"
            )
        time.sleep(poll)


class Heartbeat(threading.Thread):
    """Renews a lease every third of its duration until ``stop()``; ``lost`` if taken over."""

    def __init__(self, engine: Engine, lease: Lease, duration: dt.timedelta) -> None:
        super().__init__(name=f"lease {lease.name}", daemon=True)
        self.engine, self.lease, self.duration = engine, lease, duration
        self.stopped = threading.Event()
        self.lost = False

    def run(self) -> None:
        while not self.stopped.wait(self.duration.total_seconds() / 3):
            try:
                if not renew(self.engine, self.lease, self.duration):
                    self.lost = True
                    log.error("lost the lease %s: another holder took it over", self.lease.name)
                    return
            except (OperationalError, DisconnectionError) as error:  # an outage: next beat
                log.warning("could not renew the lease %s: %s", self.lease.name, error)
            except SQLAlchemyError as error:  # the table or database is gone: nothing to renew
                log.error("stopped renewing the lease %s: %s", self.lease.name, error)
                return

    def stop(self, *, release_lease: bool = True) -> None:
        """Stop renewing and (unless it was lost) give the lease up."""
        self.stopped.set()
        if self is not threading.current_thread():
            self.join()
        if release_lease and not self.lost:
            release(self.engine, self.lease)


@contextmanager
def hold(
    engine: Engine,
    name: str,
    *,
    lease: dt.timedelta,
    holder: str | None = None,
    timeout: float | None = None,
    on_wait: Callable[[Lease], None] | None = None,
) -> Iterator[Lease]:
    """Hold ``name`` for the block: acquire (waiting), renew in the background, release."""
    taken = acquire(engine, name, holder or holder_name(), lease, timeout=timeout, on_wait=on_wait)
    heartbeat = Heartbeat(engine, taken, lease)
    heartbeat.start()
    try:
        yield taken
    finally:
        heartbeat.stop()
