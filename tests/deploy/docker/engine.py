"""A Docker engine and the images of the stack test, with nothing pulled from a registry.

- `docker_engine()`: the running engine, or (as root, dockerd installed) one started here with
  no bridge and no iptables, stopped afterwards; elsewhere the test skips with the reason
  (``CDDF_REQUIRE_DOCKER=1``, set by .ci/run, turns the skip into a failure).
- `build_images()`: a Debian bookworm base from Debian's packages (debootstrap; kept by the
  engine under its tag), the project's ``cpu`` target on it, and PostgreSQL 15 from Debian's
  package (tests/deploy/docker/postgres) in place of the official image.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.deploy.compose import ROOT
from tests.system.stack import wait_for

BASE_IMAGE = "cddf-base:bookworm"
PROJECT_IMAGE = "cddf-stack-test/cdd-forecast:cpu"
POSTGRES_IMAGE = "cddf-stack-test/postgres:15-bookworm"
POSTGRES_CONTEXT = Path(__file__).parent / "postgres"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBOOTSTRAP_INCLUDE = "python3,python3-venv,ca-certificates"
# CA certificates this machine trusts beyond Debian's (a TLS-inspecting proxy's): copied into
# the base image, so that pip in `docker build` trusts them too
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")


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


def base_image_key() -> str:
    """What the base image is built from: the packages asked for and the local CAs."""
    digest = hashlib.sha256(DEBOOTSTRAP_INCLUDE.encode())
    for certificate in sorted(LOCAL_CA_DIR.glob("*.crt")):
        digest.update(certificate.read_bytes())
    return digest.hexdigest()[:16]


def cached_base_key() -> str | None:
    """The key label of the BASE_IMAGE the engine holds (None: no such image)."""
    probe = subprocess.run(
        ["docker", "image", "inspect", "-f", '{{ index .Config.Labels "cddf.base-key" }}']
        + [BASE_IMAGE],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def build_images(log: Path) -> dict[str, float]:
    """The three images; returns the seconds each step took (0 for a cached base)."""
    seconds = {}
    started = time.monotonic()
    if cached_base_key() != base_image_key():
        build_base_image(log)
    seconds["base image"] = time.monotonic() - started
    started = time.monotonic()
    build(
        PROJECT_IMAGE,
        ["--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}", "--target", "cpu", str(ROOT)],
        log,
        timeout=1800,
    )
    seconds["project image"] = time.monotonic() - started
    started = time.monotonic()
    build(POSTGRES_IMAGE, ["--build-arg", f"BASE_IMAGE={BASE_IMAGE}", str(POSTGRES_CONTEXT)], log)
    seconds["postgres image"] = time.monotonic() - started
    return seconds


def build(tag: str, args: list[str], log: Path, timeout: float = 900) -> None:
    """``docker build`` on the host network as ``tag``; the image it replaces is removed (each
    project image holds its own copy of the 2.7 GB virtual environment)."""
    replaced = image_id(tag)
    run(["docker", "build", "--network", "host", "-t", tag, *args], log, timeout=timeout)
    if replaced is not None and replaced != image_id(tag):
        # kept when a container still uses it
        subprocess.run(["docker", "image", "rm", replaced], capture_output=True, check=False)


def image_id(tag: str) -> str | None:
    probe = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", tag],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def build_base_image(log: Path) -> None:
    """Debian bookworm with python3 from deb.debian.org (debootstrap), imported as BASE_IMAGE."""
    debootstrap = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin")
    if debootstrap is None or os.geteuid() != 0:
        unavailable(f"{BASE_IMAGE} is not built and debootstrap cannot run here (needs root)")
    with tempfile.TemporaryDirectory(prefix="cddf-rootfs-", dir="/var/tmp") as rootfs:
        run(
            [debootstrap, "--variant=minbase", f"--include={DEBOOTSTRAP_INCLUDE}"]
            + ["bookworm", rootfs, DEBIAN_MIRROR],
            log,
            timeout=1800,
        )
        local_cas = sorted(LOCAL_CA_DIR.glob("*.crt"))
        for certificate in local_cas:
            shutil.copy(certificate, Path(rootfs, "usr/local/share/ca-certificates"))
        if local_cas:
            run(["chroot", rootfs, "update-ca-certificates"], log, timeout=120)
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        try:
            # pip's own CA list (certifi) knows no local CA: point it at the system bundle
            run(
                ["docker", "import", "--change", "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt"]
                + ["--change", f"LABEL cddf.base-key={base_image_key()}", "-", BASE_IMAGE],
                log,
                timeout=600,
                stdin=tar.stdout,
            )
        finally:
            tar.wait()
