"""docker-compose.yml brought up for real by the operator's commands of docs/deploy.md, for
tests/deploy/test_docker_stack.py.

`compose_stack()` copies the checkout to a scratch directory and runs there, as written, the
bash blocks docs/deploy.md marks for the stack test (the `.env` recipe, the registry-free
images of deploy/images/build.sh, the host network of docker-compose.host.yml, then
``docker-compose up -d --build``); between them it changes only values of `.env`: free ports,
its own project name, its mirror, and a compose file of its own that gives the workers a tiny
model. Its teardown is the doc's ``down -v`` line. `Stack` is how the test looks at it:
containers' health and exit codes, the Prefect API with the stack's basic auth, what is left
behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.deploy.compose import ROOT, env_file, stack_test_blocks, teardown_command
from tests.deploy.docker.engine import compose_command, image_id, run
from tests.system.stack import free_port, wait_for

PROJECT_IMAGE = "cdd-forecast:cpu"


@dataclass(frozen=True)
class Ports:
    """Free ports of 127.0.0.1, chosen when the test starts."""

    postgres: int = field(default_factory=free_port)
    prefect: int = field(default_factory=free_port)
    worker_cpu: int = field(default_factory=free_port)
    worker_gpu: int = field(default_factory=free_port)

    def env(self) -> dict[str, str]:
        """The `.env` values that put the stack on these ports."""
        return {
            "PG_PORT": str(self.postgres),
            "SERVER_PORT": str(self.prefect),
            "WORKER_CPU_PORT": str(self.worker_cpu),
            "WORKER_GPU_PORT": str(self.worker_gpu),
            "UI_API_URL": f"http://127.0.0.1:{self.prefect}/api",
        }


def copy_checkout(target: Path) -> None:
    """The working tree's files git knows or would add (no .env, no .venv) copied to
    ``target``, as a fresh clone with these changes would have them."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    )
    for name in sorted(set(listed.stdout.decode().split("\0")) - {""}):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def set_env(path: Path, values: dict[str, str]) -> None:
    """Each ``KEY=value`` of ``values`` in the env file at ``path``: replacing its line, or
    appended."""
    text = path.read_text()
    for key, value in values.items():
        line = f"{key}={value}"
        text, found = re.subn(rf"^{key}=.*$", line.replace("\\", "\\\\"), text, flags=re.M)
        if not found:
            text += f"{line}\n"
    path.write_text(text)


def operator_path(bin_dir: Path) -> str:
    """PATH for the doc's commands: where this machine lacks them, ``sudo`` (the test runs as
    root) and ``docker-compose`` (the plugin's ``docker compose``) as small shims."""
    bin_dir.mkdir(exist_ok=True)
    shims = {"sudo": 'exec "$@"', "docker-compose": 'exec docker compose "$@"'}
    for name, body in shims.items():
        if shutil.which(name) is None:
            (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
            (bin_dir / name).chmod(0o755)
    return f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}:/usr/sbin:/sbin"


@dataclass
class Stack:
    """A running compose project and the ways the test looks at it."""

    directory: Path  # the copy of the checkout, with its .env
    path: str  # PATH of the operator's commands
    ports: Ports
    log: Path
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return env_file(self.directory / ".env")

    @property
    def project(self) -> str:
        return self.env["COMPOSE_PROJECT_NAME"]

    def shell(self, script: str, what: str, timeout: float = 600) -> str:
        """``script`` run by bash in the checkout, as the operator types it; its seconds are
        kept under ``what``."""
        started = time.monotonic()
        output = run(
            ["bash", "-euo", "pipefail", "-c", script],
            self.log,
            timeout=timeout,
            env=self.bare_env(),
            cwd=self.directory,
        )
        self.seconds[what] = self.seconds.get(what, 0) + time.monotonic() - started
        return output

    def compose(self, *args: str, timeout: float = 600) -> str:
        """``docker-compose <args>`` in the checkout (files and project name from its .env)."""
        argv = [*compose_command(), *args]
        return run(argv, self.log, timeout=timeout, env=self.bare_env(), cwd=self.directory)

    def bare_env(self) -> dict[str, str]:
        """Nothing of the caller's shell but PATH, HOME and DOCKER_HOST: .env decides."""
        keep = {key: os.environ[key] for key in ("HOME", "DOCKER_HOST") if key in os.environ}
        return keep | {"PATH": self.path}

    def container(self, service: str) -> dict[str, Any]:
        """``docker inspect`` of the service's (only) container, running or exited."""
        ids = docker_ids(
            "ps",
            "-a",
            *self.label_filter(),
            "--filter",
            f"label=com.docker.compose.service={service}",
        )
        assert len(ids) == 1, f"{service}: containers {ids}" + self.logs()
        inspect = subprocess.run(
            ["docker", "inspect", ids[0]], capture_output=True, text=True, timeout=60, check=True
        )
        return json.loads(inspect.stdout)[0]

    def label_filter(self) -> list[str]:
        return ["--filter", f"label=com.docker.compose.project={self.project}"]

    def health(self, service: str) -> str:
        return self.container(service)["State"]["Health"]["Status"]

    def wait_healthy(self, service: str, deadline_s: float) -> None:
        def healthy() -> bool | None:
            state = self.container(service)["State"]
            if state["Status"] != "running":
                raise AssertionError(f"{service} is {state['Status']}" + self.logs())
            return True if state["Health"]["Status"] == "healthy" else None

        wait_for(f"{service} to be healthy", healthy, deadline_s, self.logs)

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, volumes and networks that still carry this project's label."""
        return {
            "containers": docker_ids("ps", "-a", *self.label_filter()),
            "volumes": docker_ids("volume", "ls", *self.label_filter()),
            "networks": docker_ids("network", "ls", *self.label_filter()),
        }

    def logs(self) -> str:
        try:
            output = self.compose("logs", "--no-color", "--tail", "60", timeout=120)
        except AssertionError as error:
            output = str(error)
        return f"\n--- docker-compose logs (full log {self.log}) ---\n{output[-12000:]}"

    def api(self, method: str, path: str, **options: Any) -> requests.Response:
        """A request to the Prefect API as an operator, with the stack's basic auth."""
        user, password = self.env["SERVER_AUTH"].split(":", 1)
        url = f"http://127.0.0.1:{self.ports.prefect}/api{path}"
        response = requests.request(method, url, auth=(user, password), timeout=30, **options)
        response.raise_for_status()
        return response

    def stop_schedules(self, name: str) -> list[dict[str, Any]]:
        """Switch off deployment ``flow/deployment``'s schedules and delete the runs they already
        scheduled, so that none joins the test (a 00:15 UTC daily run would cancel the test's
        under the deployment's concurrency limit); returns the schedules as they were."""
        deployment = self.api("GET", f"/deployments/name/{name}").json()
        for schedule in deployment["schedules"]:
            self.api(
                "PATCH",
                f"/deployments/{deployment['id']}/schedules/{schedule['id']}",
                json={"active": False},
            )
        body = {
            "deployments": {"id": {"any_": [deployment["id"]]}},
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
        }
        for flow_run in self.api("POST", "/flow_runs/filter", json=body).json():
            self.api("DELETE", f"/flow_runs/{flow_run['id']}")
        return deployment["schedules"]

    def start_deployment(self, name: str, parameters: dict[str, Any]) -> dict[str, Any]:
        """Create a run of deployment ``flow/deployment``; its JSON (a worker picks it up)."""
        deployment = self.api("GET", f"/deployments/name/{name}").json()
        return self.api(
            "POST",
            f"/deployments/{deployment['id']}/create_flow_run",
            json={"parameters": parameters},
        ).json()

    def run_deployment(self, name: str, parameters: dict[str, Any], deadline_s: float):
        """Create a run of deployment ``flow/deployment``, wait for its end; its final JSON."""
        flow_run = self.start_deployment(name, parameters)
        return self.wait_for_end(flow_run["id"], f"the {name} run", deadline_s)

    def flow_run(self, flow_run_id: str) -> dict[str, Any]:
        return self.api("GET", f"/flow_runs/{flow_run_id}").json()

    def wait_for_end(self, flow_run_id: str, what: str, deadline_s: float) -> dict[str, Any]:
        """The flow run's JSON once its state is final (Completed, Failed, Crashed, Cancelled)."""

        def final() -> dict[str, Any] | None:
            run = self.flow_run(flow_run_id)
            final_types = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
            return run if run["state"] and run["state"]["type"] in final_types else None

        return wait_for(f"{what} to end", final, deadline_s, self.logs)

    def flow_runs(self, **flow_runs_filter: Any) -> list[dict[str, Any]]:
        """The flow runs that match a filter of the API, e.g. ``tags={"all_": ["x"]}``."""
        return self.api("POST", "/flow_runs/filter", json={"flow_runs": flow_runs_filter}).json()

    def deployment_runs(self, name: str) -> list[dict[str, Any]]:
        """Every flow run of deployment ``flow/deployment``."""
        deployment = self.api("GET", f"/deployments/name/{name}").json()
        body = {"deployments": {"id": {"any_": [deployment["id"]]}}}
        return self.api("POST", "/flow_runs/filter", json=body).json()

    def run_logs(self, flow_run_id: str) -> str:
        """The flow run's log lines as the UI shows them."""
        body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200}
        lines = self.api("POST", "/logs/filter", json=body).json()
        return "\n".join(f"{line['level']:>2} {line['message']}" for line in lines)


def docker_ids(*args: str) -> list[str]:
    result = subprocess.run(
        ["docker", *args, "-q"], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout.split()


@contextmanager
def compose_stack(
    base: Path, worker_env: dict[str, str], log: Path, env: dict[str, str]
) -> Iterator[Stack]:
    """The stack brought up by the doc's marked blocks in a copy of the checkout, with the
    test's ``env`` and ports in its .env and ``worker_env`` added to worker-cpu's; the doc's
    ``down -v`` however it ends."""
    directory = base / "checkout"
    copy_checkout(directory)
    stack = Stack(directory, operator_path(base / "bin"), Ports(), log)
    workers_file = base / "docker-compose.test-workers.yml"
    workers_file.write_text(json.dumps({"services": {"worker-cpu": {"environment": worker_env}}}))
    *set_up, start = stack_test_blocks()
    for block in set_up:
        stack.shell(block, "images" if "deploy/images/build.sh" in block else "set-up", 1800)
    files = stack.env["COMPOSE_FILE"]
    assert files == "docker-compose.yml:docker-compose.host.yml", files
    values = {
        "COMPOSE_PROJECT_NAME": f"cddfstack{uuid.uuid4().hex[:8]}",
        "COMPOSE_FILE": f"{files}:{workers_file}",
    }
    set_env(directory / ".env", stack.ports.env() | values | env)
    replaced = image_id(PROJECT_IMAGE)
    try:
        stack.shell(start, "up -d --build", timeout=2400)
        if replaced is not None and replaced != image_id(PROJECT_IMAGE):
            # each project image holds its own 2.7 GB virtual environment
            subprocess.run(["docker", "image", "rm", replaced], capture_output=True, check=False)
        yield stack
    finally:
        stack.shell(teardown_command(), "down -v", timeout=300)
