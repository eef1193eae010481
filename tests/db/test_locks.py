"""Leases of series_locks: exclusive, renewed while held, and gone after their holder's kill -9."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import Engine

from db import locks
from db.locks import Lease, LockTimeoutError, acquire, current, hold, holder_name, try_acquire

ROOT = Path(__file__).resolve().parents[2]
NAME = "backfill-Bitstamp_BTCUSD_d"
LEASE = dt.timedelta(seconds=1.5)

# a holder in its own process: takes the lease, renews it, says so, then works "forever"
HOLDER = textwrap.dedent(
    """
    import datetime as dt, sys, time
    from db.engine import make_engine
    from db.locks import hold
    engine = make_engine(sys.argv[1])
    with hold(engine, sys.argv[2], lease=dt.timedelta(seconds=float(sys.argv[3]))) as lease:
        print(lease.holder, flush=True)
        time.sleep(600)
    """
)


def _start_holder(database_url: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, database_url, NAME, str(LEASE.total_seconds())],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    holder = process.stdout.readline().strip()  # blocks until the lease is held
    assert holder, f"the holder process exited with {process.wait()}"
    return process, holder


def test_a_lease_is_exclusive_until_released(engine: Engine):
    first = try_acquire(engine, NAME, "a", LEASE)
    assert first is not None and first.holder == "a"
    assert try_acquire(engine, NAME, "b", LEASE) is None
    assert current(engine, NAME).holder == "a"
    assert try_acquire(engine, "backfill-Bitstamp_ETHUSD_d", "b", LEASE) is not None


def test_an_expired_lease_is_taken_over(engine: Engine):
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    assert try_acquire(engine, NAME, "dead", LEASE, now=past) is not None
    taken = try_acquire(engine, NAME, "next", LEASE)
    assert taken is not None and current(engine, NAME).holder == "next"


def test_two_callers_racing_for_a_free_lease_get_it_once(engine: Engine):
    start = threading.Barrier(8)
    won: list[Lease] = []

    def race(slot: int) -> None:
        start.wait()
        lease = try_acquire(engine, NAME, f"caller {slot}", dt.timedelta(minutes=1))
        if lease is not None:
            won.append(lease)

    threads = [threading.Thread(target=race, args=(slot,)) for slot in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(won) == 1
    assert current(engine, NAME).holder == won[0].holder


def test_hold_releases_on_exit_even_after_an_error(engine: Engine):
    with pytest.raises(RuntimeError), hold(engine, NAME, lease=LEASE):
        assert current(engine, NAME) is not None
        raise RuntimeError("the backfill failed")
    assert current(engine, NAME) is None


def test_a_live_holder_keeps_its_lease_by_renewing_it(engine: Engine, database_url: str):
    process, holder = _start_holder(database_url)
    try:
        seen: list[Lease] = []
        # waiting twice the lease: the holder's heartbeat keeps renewing, so it stays taken
        wait = 2 * LEASE.total_seconds()
        with pytest.raises(LockTimeoutError, match=f"held by {holder}".replace("[", r"\[")):
            acquire(engine, NAME, "rerun", LEASE, timeout=wait, on_wait=seen.append)
        assert [lease.holder for lease in seen] == [holder]
        assert f"pid {process.pid}" in holder
    finally:
        process.kill()
        process.wait()


def test_a_rerun_after_kill_9_waits_at_most_the_lease_then_holds_it(
    engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch
):
    process, holder = _start_holder(database_url)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    dead = current(engine, NAME)
    # count the rerun's own waiting, which a busy machine cannot lengthen (it only makes each
    # round slower, so fewer naps are needed), rather than the wall time, which it can
    naps: list[float] = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        time.sleep(seconds)

    clock = SimpleNamespace(monotonic=time.monotonic, sleep=nap)
    monkeypatch.setattr(locks, "time", clock)
    seen: list[Lease] = []
    with hold(engine, NAME, lease=LEASE, holder=holder_name("rerun"), on_wait=seen.append) as lease:
        assert current(engine, NAME).holder == lease.holder
    assert [other.holder for other in seen] == [holder]  # it said for whom it waited
    assert lease.acquired_at >= dead.expires_at  # it did not take the lease before it expired
    # at most the lease, plus the last nap (a tenth of it) that began just before the expiry
    assert sum(naps) <= LEASE.total_seconds() * 1.1 + 1e-6
    assert current(engine, NAME) is None
