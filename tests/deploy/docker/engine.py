"""A Docker engine for the stack test: the running engine, or (as root, dockerd installed) one
started here with no bridge and no iptables, stopped afterwards; elsewhere the test skips with
the reason (``CDDF_REQUIRE_DOCKER=1``, set by .ci/run, turns the skip into a failure). The
images are the operator's: deploy/images/build.sh and ``docker-compose up --build``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.system.stack import wait_for


def unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it where CDDF_REQUIRE_DOCKER=1 says the stack test must run."""
    if os.environ.get("CDDF_REQUIRE_DOCKER") == "1":
        pytest.fail(f"{reason} (CDDF_REQUIRE_DOCKER=1: the Docker stack test must run)")
    pytest.skip(reason)


def run(argv: list[str], log: Path, timeout: float, **options: Any) -> str:
    """Run ``argv``, append its output to ``log``; fail with the output's tail if it fails."""
    started = time.monotonic()
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, **options
        )
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"{' '.join(argv)} ran past {timeout:.0f}s (log {log})") from error
    output = result.stdout + result.stderr
    with log.open("a") as file:
        file.write(f"$ {' '.join(argv)}  # {time.monotonic() - started:.0f}s\n{output}\n")
    if result.returncode != 0:
        tail = "\n".join(output.splitlines()[-40:])
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode} (log {log}):\n{tail}")
    return output


def engine_answers() -> bool:
    probe = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    return probe.returncode == 0


@contextmanager
def docker_engine(logs: Path) -> Iterator[None]:
    """A Docker engine to talk to: the running one, or one started (and stopped) here."""
    if shutil.which("docker") is None:
        unavailable("no docker CLI: apt-get install docker.io")
    if compose_command() is None:
        unavailable("neither `docker compose` nor docker-compose: apt-get install docker-compose")
    if engine_answers():
        yield
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        unavailable("no Docker engine answers and dockerd cannot be started here (needs root)")
    log = logs / "dockerd.log"
    # host networking only: no bridge, no iptables rules, nothing routed off the machine
    argv = [dockerd, "--bridge=none", "--iptables=false", "--ip6tables=false"]
    with log.open("w") as output:
        process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_for(
            "dockerd to answer",
            lambda: True if engine_answers() else _dead(process, log),
            60,
            lambda: f" (log {log})",
        )
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _dead(process: subprocess.Popen, log: Path) -> None:
    if process.poll() is not None:
        raise AssertionError(f"dockerd exited {process.returncode}:\n{log.read_text()[-3000:]}")


def compose_command() -> list[str] | None:
    """``docker compose`` (the plugin) where installed, else Debian's docker-compose 1.29."""
    plugin = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, timeout=30, check=False
    )
    if plugin.returncode == 0:
        return ["docker", "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def image_id(tag: str) -> str | None:
    probe = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", tag],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None
