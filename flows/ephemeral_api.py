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
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from typing import Any

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# the temporary server's own settings, unless the environment sets them
SERVER_DEFAULTS = {"PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false"}


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
        kwargs["env"] = {**SERVER_DEFAULTS, **(kwargs.get("env") or os.environ)}
        return subprocess.Popen(*args, preexec_fn=lambda: _die_with_parent(parent), **kwargs)


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
    api = server.SubprocessASGIServer()  # the instance get_client() uses later
    api.start()
    return api.api_url
