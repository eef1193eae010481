"""SIGTERM ends a command within seconds, even one whose thread waits on a silent server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from flows.cli import TERM_EXIT_CODE, TERM_GRACE_S

SERIES = "Bitstamp_BTCUSD_d"


class SilentServer:
    """127.0.0.1: answers HEAD with a 404 (so `run` finds the host there), then takes every
    other request (a GET, PostgreSQL's startup message) and never answers it; ``asked`` is set
    once one arrived."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.asked = threading.Event()
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed: the test is over
                return
            self.held.append(connection)
            request = connection.recv(65536)
            if request.startswith(b"HEAD"):
                connection.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            elif request:  # a GET, or PostgreSQL's startup message
                self.asked.set()

    def close(self) -> None:
        self.listener.close()
        for connection in self.held:
            connection.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def command_env(tmp_path: Path, source: str) -> dict[str, str]:
    """A fresh SQLite file and Prefect home; reads that would wait 10 minutes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CDDF_"))}
    return env | {
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "CDDF_DATABASE_URL": f"sqlite:///{tmp_path / 'cddf.sqlite'}",
        "CDDF_CDD_BASE_URL": source,
        "CDDF_HTTP_READ_TIMEOUT": "600",
        "CDDF_HTTP_DEADLINE": "900",
    }


def sigterm_once_asked(
    tmp_path: Path, server: SilentServer, *args: str, database_url: str | None = None
) -> tuple[float, int, str]:
    """Start ``cdd-forecast *args``, SIGTERM it once its request reached ``server``: (seconds
    it took to end after the signal, its exit status, its stderr)."""
    source = f"http://127.0.0.1:{server.port}/cdd/"
    env = command_env(tmp_path, source)
    if database_url is not None:
        env["CDDF_DATABASE_URL"] = database_url
    with (tmp_path / "err").open("w+") as err:
        command = subprocess.Popen(
            [str(Path(sys.executable).with_name("cdd-forecast")), *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            while not server.asked.wait(0.5):  # Prefect's API may start first (~10-60 s)
                assert command.poll() is None, (tmp_path / "err").read_text()
            os.kill(command.pid, signal.SIGTERM)
            signalled = time.monotonic()
            command.wait(timeout=TERM_GRACE_S + 30)
            took = time.monotonic() - signalled
        finally:
            if command.poll() is None:
                command.kill()
                command.wait()
    return took, command.returncode, (tmp_path / "err").read_text()


def test_sigterm_ends_an_ingest_blocked_in_a_read_and_records_its_run(tmp_path, silent_server):
    """Without a handler SIGTERM killed the ingest on the spot and left its run `running`."""
    took, status, said = sigterm_once_asked(tmp_path, silent_server, "ingest", "-s", SERIES)
    assert took < TERM_GRACE_S + 3 and status == TERM_EXIT_CODE, said
    assert "SIGTERM received: stopping" in said
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'cddf.sqlite'}")
    with engine.connect() as connection:
        (run,) = connection.execute(sa.text("SELECT status, error FROM ingest_runs")).all()
    engine.dispose()
    assert run.status == "failed" and "stopped (SystemExit: SIGTERM or Ctrl-C)" in run.error


def test_sigterm_ends_a_command_waiting_on_a_silent_database(tmp_path, silent_server):
    """A PostgreSQL that accepts the connection and never answers (connect_timeout 300 s)."""
    url = f"postgresql+psycopg://cddf@127.0.0.1:{silent_server.port}/cddf?connect_timeout=300"
    took, status, said = sigterm_once_asked(tmp_path, silent_server, "series", database_url=url)
    assert took < TERM_GRACE_S + 3 and status == TERM_EXIT_CODE, said
    assert "SIGTERM received: stopping" in said


@pytest.mark.slow
def test_sigterm_ends_a_run_blocked_in_a_read_within_the_grace(tmp_path: Path, silent_server):
    """A run whose ingest waits on a server that never answers (as on a PostgreSQL that stopped
    answering) once logged "Crash detected" on SIGTERM and lived on until kill -9: Prefect's
    handler unwound the flow but its task runner waited for the blocked thread."""
    took, status, said = sigterm_once_asked(tmp_path, silent_server, "run", "-s", SERIES)
    assert took < TERM_GRACE_S + 3, said
    assert status == TERM_EXIT_CODE, said
    assert f"SIGTERM received: stopping; this process ends within {TERM_GRACE_S:g} s" in said
