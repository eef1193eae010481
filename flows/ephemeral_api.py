"""Prefect's temporary local API server, started by the CLI so that it dies with the CLI.

Without ``PREFECT_API_URL`` Prefect starts its API in a child process (uvicorn) and stops it at
exit, but a CLI killed with ``kill -9`` runs no exit handler: the child lived on, holding its
port and its leases. The CLI starts that child itself, from its main thread, with Linux's
``PR_SET_PDEATHSIG``: the kernel sends it SIGTERM as soon as the CLI dies, however it died.
Prefect's later calls find the server already running and reuse it.

    start_ephemeral_api()    # no-op with PREFECT_API_URL set, or off Linux

That server keeps no events (``PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED=false`` in its
environment unless set): it lives for one command and nothing reads its events, which were
about half of what a daily run added to Prefect's database (`events`, `event_resources`:
docs/benchmarks.md, Prefect's footprint). Task runs are still recorded from the events as they
arrive (the task-run recorder is another consumer); a server of your own keeps its events.

At exit the command waits, at most ``SETTLE_S``, until that recorder has caught up with the
task runs of this command (`settle`) before Prefect stops the server: stopped at once, the
server cancelled the recorder mid-write, printing ``ERROR … Error flushing 1 events`` tracebacks
after a successful run and losing the task runs still queued (issue 26: 847–929 of 1,446 kept
at 96 series; 67 of 300 in tests/flows/test_cli_ephemeral.py before this wait).
"""

from __future__ import annotations

import atexit
import ctypes
import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
FLUSH_INTERVAL = "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL"
# the temporary server's own settings, unless the environment sets them
SERVER_DEFAULTS = {
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false",
    # the task-run recorder writes its events 100 to a transaction (Prefect's default: one),
    # at least every second. A whole number: Prefect 3.9 sleeps int(interval) seconds between
    # flushes, so 0.5 slept 0 and the server spun a whole core for as long as it lived (half
    # of this 2-core machine, under every command; docs/benchmarks.md)
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    FLUSH_INTERVAL: "1",
}
SETTLE_S = 60.0  # the longest wait at exit for the task-run recorder to catch up
QUIET_S = 2.0  # nothing changed for this long (twice the flush interval), all final: caught up
UNFINISHED = ["SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING"]
# tries to start the temporary server: one that did not answer within Prefect's startup
# timeout once (under load, right after another command's server stopped) answered when the
# command was run again
STARTS = 2


class EphemeralApiError(RuntimeError):
    """Prefect's temporary local API did not start: what happened and what to do."""


def _die_with_parent(parent: int) -> None:
    """Run in the child before exec: SIGTERM when the parent dies (or already has)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


class _SubprocessDyingWithParent:
    """The ``subprocess`` module as Prefect's server module sees it: every Popen dies with us."""

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:  # noqa: N802 (subprocess's name)
        parent = os.getpid()
        kwargs["env"] = server_environment(kwargs.get("env") or os.environ)
        return subprocess.Popen(*args, preexec_fn=lambda: _die_with_parent(parent), **kwargs)


def server_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The temporary server's environment: ``SERVER_DEFAULTS`` unless ``environ`` sets them,
    and a flush interval under 1 s raised to 1 s, with a warning naming it (Prefect sleeps
    ``int()`` of it: under 1 its recorder's loop never sleeps and spins a core)."""
    merged = {**SERVER_DEFAULTS, **environ}
    value = merged[FLUSH_INTERVAL]
    try:
        too_short = float(value) < 1
    except ValueError:
        return merged  # not a number: Prefect's settings say so when the server starts
    if too_short:
        logging.getLogger(__name__).warning(
            "%s=%s: Prefect waits int(%s) <= 0 s between the task-run recorder's flushes, so "
            "its server would spin a CPU core; the temporary API uses 1 s (set a whole "
            "number of seconds, 1 or more)",
            FLUSH_INTERVAL,
            value,
            value,
        )
        merged[FLUSH_INTERVAL] = "1"
    return merged


def start_ephemeral_api() -> str | None:
    """Start Prefect's temporary API now, tied to this process; its URL, or None if not used.

    Nothing happens when an API is configured (``PREFECT_API_URL``), ephemeral mode is off, the
    platform is not Linux, or this is not the main thread (a parent-death signal follows the
    thread that started the child).
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None
    if not sys.platform.startswith("linux") or threading.current_thread() is not (
        threading.main_thread()
    ):
        return None
    from prefect.server.api import server

    server.subprocess = _SubprocessDyingWithParent()  # type: ignore[assignment]
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    api = _started(server)
    atexit.register(settle, api.api_url, since)
    return api.api_url


def _started(server: Any) -> Any:
    """Prefect's temporary API server, started (Prefect registers its stop at exit; ``settle``,
    registered later, runs before it). One that does not answer within Prefect's startup
    timeout is stopped and started once more, on another port; twice is `EphemeralApiError`."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as TIMEOUT

    said = ""
    for attempt in range(1, STARTS + 1):
        if attempt > 1:
            logging.getLogger(__name__).warning(
                "Prefect's temporary local API did not start (%s); starting it again", said
            )
        api = server.SubprocessASGIServer()  # the instance get_client() uses later
        try:
            api.start()
            return api
        except RuntimeError as error:  # Prefect's "Timed out while attempting to connect …"
            api.stop()  # the server that did not answer, and Prefect's instance of it
            said = (f"{error}".splitlines() or [type(error).__name__])[0].rstrip(".")
            last = error
    raise EphemeralApiError(
        f"Prefect's temporary local API did not start in {STARTS} tries ({said}; each try "
        f"waited {TIMEOUT.name}={TIMEOUT.value()} s). A loaded machine can need longer: "
        f"run the command again, raise {TIMEOUT.name}, or set PREFECT_API_URL to a Prefect "
        "server of your own"
    ) from last


def settle(api_url: str, since: dt.datetime, limit_s: float = SETTLE_S) -> bool:
    """Wait until the server has recorded every task run this command started (since
    ``since``) in its final state: their count and the unfinished ones' unchanged for
    ``QUIET_S`` with none unfinished (or for 3x that, some left unfinished: a task that never
    ran); False, with a warning, past ``limit_s``. Prefect's own client has sent its events by
    then: its services drain in a threading exit hook, which runs before atexit's."""
    started = time.monotonic()
    seen: tuple[int, int] | None = None
    steady_since = started
    with httpx.Client(base_url=api_url, timeout=10) as client:
        while True:
            try:
                now = _counts(client, since)
            except httpx.HTTPError:  # the server is gone already: nothing to wait for
                return True
            moment = time.monotonic()
            if now != seen:
                seen, steady_since = now, moment
            quiet = moment - steady_since
            if quiet >= QUIET_S and (now[1] == 0 or quiet >= 3 * QUIET_S):
                return True
            if moment - started > limit_s:
                logging.getLogger(__name__).warning(
                    "Prefect's temporary API had not recorded every task run of this command "
                    "after %.0f s (%d recorded, %d not final): its history may miss some",
                    limit_s,
                    *now,
                )
                return False
            time.sleep(0.2)


def _counts(client: httpx.Client, since: dt.datetime) -> tuple[int, int]:
    """How many task runs since ``since`` the server holds, and how many are not final."""
    started = {"expected_start_time": {"after_": since.isoformat()}}
    unfinished = {**started, "state": {"type": {"any_": UNFINISHED}}}
    counts = []
    for task_runs in (started, unfinished):
        response = client.post("/task_runs/count", json={"task_runs": task_runs})
        response.raise_for_status()
        counts.append(int(response.json()))
    return counts[0], counts[1]
