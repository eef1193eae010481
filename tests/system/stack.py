"""A real Prefect topology for the system test: a server, work pools, deployments, workers.

Every process is started in its own session (process group) so that stopping it also stops
the flow-run subprocesses it spawned; each writes its output to a log file whose tail goes
into the failure message when something does not come up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    deadline_s: float,
    on_timeout: Callable[[], str] = lambda: "",
) -> T:
    """Poll ``probe`` every 0.25 s until it returns something other than None, or fail."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {deadline_s:.0f}s waiting for {what}" + on_timeout()
            )
        time.sleep(0.25)


@dataclass
class Process:
    """A started command, its log file, and how to stop it with everything it spawned."""

    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"\n--- last lines of {self.name} ({self.log}) ---\n" + "\n".join(
            text.splitlines()[-lines:]
        )

    def check_running(self) -> None:
        if self.popen.poll() is not None:
            raise AssertionError(
                f"{self.name} exited with status {self.popen.returncode}" + self.tail()
            )

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGINT to the process group (workers shut down on it), then SIGKILL after grace."""
        if self.popen.poll() is None:
            _signal_group(self.popen.pid, signal.SIGINT)
            try:
                self.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(self.popen.pid, signal.SIGKILL)  # leftovers: flow-run subprocesses
        if self.popen.poll() is None:
            self.popen.wait(timeout=10)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def interrupt_by_default() -> None:
    """A child's SIGINT as Ctrl-C has it, however this test run was started: a run launched in
    the background of a shell without job control inherits SIGINT ignored, and so would every
    process it starts (a test that stops one with SIGINT would then wait for nothing)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(name: str, argv: list[str], env: dict[str, str], logs: Path) -> Process:
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=interrupt_by_default,
        )
    return Process(name, popen, log)


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any PREFECT_ or CDDF_ setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CDDF_"))}
    env.update(extra)
    return env


@dataclass
class PrefectStack:
    """A running ``prefect server start`` and the processes started against it."""

    home: Path
    api_url: str
    env: dict[str, str]
    processes: list[Process] = field(default_factory=list)

    def start(self, name: str, argv: list[str], **extra_env: str) -> Process:
        process = start(name, argv, {**self.env, **extra_env}, self.home)
        self.processes.append(process)
        return process

    def logs(self) -> str:
        return "".join(process.tail() for process in self.processes)

    def client(self):
        """A synchronous Prefect client of this server (no global settings touched)."""
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(self.api_url, auth_string=self.env.get("PREFECT_API_AUTH_STRING"))

    def create_process_pools(self, *names: str) -> None:
        from prefect.client.schemas.actions import WorkPoolCreate
        from prefect.workers.process import ProcessWorker

        template = ProcessWorker.get_default_base_job_template()
        with self.client() as client:
            for name in names:
                client.create_work_pool(
                    WorkPoolCreate(name=name, type="process", base_job_template=template)
                )

    def start_worker(
        self, pool: str, *, name: str | None = None, limit: int | None = None, **extra_env: str
    ) -> Process:
        """A process worker on ``pool`` named ``name`` (default system-test-<pool>)."""
        name = name or f"system-test-{pool}"
        argv = [PREFECT, "worker", "start", "--pool", pool, "--type", "process", "--name", name]
        if limit is not None:
            argv += ["--limit", str(limit)]
        return self.start(f"worker-{name}", argv, **extra_env)

    def wait_for_worker(self, pool: str, process: Process, deadline_s: float = 60.0) -> None:
        """Until the worker of ``pool`` has sent its first heartbeat to the server."""

        def online() -> bool | None:
            process.check_running()
            with self.client() as client:
                return True if client.read_workers_for_work_pool(pool) else None

        wait_for(f"a worker on pool {pool!r}", online, deadline_s, self.logs)

    def deploy_all(self, deadline_s: float = 120.0) -> str:
        """``prefect --no-prompt deploy --all`` from the repository root; returns its output."""
        result = subprocess.run(
            [PREFECT, "--no-prompt", "deploy", "--all"],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=deadline_s,
        )
        output = result.stdout + result.stderr
        if result.returncode != 0:
            raise AssertionError(f"prefect deploy --all failed ({result.returncode}):\n{output}")
        return output

    def create_run(self, deployment: str, parameters: dict[str, Any] | None = None):
        """Create a flow run of ``flow/deployment`` through the API; returns its id."""
        with self.client() as client:
            deployment_id = client.read_deployment_by_name(deployment).id
            return client.create_flow_run_from_deployment(
                deployment_id, parameters=parameters or {}
            ).id

    def run_and_wait(
        self, deployment: str, parameters: dict[str, Any] | None = None, deadline_s: float = 120.0
    ):
        """Create a flow run of ``flow/deployment`` and wait for its end."""
        run_id = self.create_run(deployment, parameters)
        return self.wait_for_flow_run(run_id, deployment, deadline_s)

    def wait_for_flow_run(self, flow_run_id, what: str, deadline_s: float):
        def final():
            for process in self.processes:
                process.check_running()
            with self.client() as client:
                run = client.read_flow_run(flow_run_id)
            return run if run.state is not None and run.state.is_final() else None

        return wait_for(f"the flow run of {what} to end", final, deadline_s, self.logs)


@contextmanager
def prefect_server(
    base: Path, deadline_s: float = 90.0, **extra_env: str
) -> Iterator[PrefectStack]:
    """``prefect server start`` on a free port of 127.0.0.1 with its own home and SQLite."""
    home = base / "prefect-home"
    home.mkdir()
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = clean_environment(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api_url,
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_LOGGING_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env)  # a test's settings win over these defaults
    stack = PrefectStack(home, api_url, env)
    server = stack.start(
        "server", [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    )
    try:

        def healthy() -> bool | None:
            server.check_running()
            try:
                response = requests.get(f"{api_url}/health", timeout=2)
            except requests.ConnectionError:
                return None
            return True if response.ok else None

        wait_for("the Prefect server's /api/health", healthy, deadline_s, stack.logs)
        yield stack
    finally:
        for process in reversed(stack.processes):  # workers first, the server last
            process.stop()
