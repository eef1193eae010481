"""docker-compose.yml brought up for real, for tests/deploy/test_docker_stack.py.

`compose_stack()`: docker-compose.yml with every service moved to the host network on free
ports of 127.0.0.1, the images of tests/deploy/docker/engine.py, a throwaway env file and its
own project name; ``down -v`` after. `Stack` is how the test looks at it: containers' health
and exit codes, the Prefect API with the stack's basic auth, what is left behind.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.deploy.compose import ENV_EXAMPLE, ROOT, compose, env_file, environment
from tests.deploy.docker.engine import POSTGRES_IMAGE, PROJECT_IMAGE, compose_command, run
from tests.system.stack import free_port, wait_for

PASSWORDS = ("POSTGRES_PASSWORD", "PG_PREFECT_PASSWORD", "PG_APP_PASSWORD", "PG_READER_PASSWORD")


@dataclass(frozen=True)
class Ports:
    """Free ports of 127.0.0.1, chosen when the test starts."""

    postgres: int = field(default_factory=free_port)
    prefect: int = field(default_factory=free_port)
    worker: int = field(default_factory=free_port)


def on_localhost(text: str, ports: Ports) -> str:
    """A URL or command of docker-compose.yml, with the service names and ports it uses
    replaced by 127.0.0.1 and this test's ports."""
    for old, new in (
        ("@postgres:5432/", f"@127.0.0.1:{ports.postgres}/"),
        ("//prefect-server:4200/", f"//127.0.0.1:{ports.prefect}/"),
        ("//127.0.0.1:4200", f"//127.0.0.1:{ports.prefect}"),
        ("//127.0.0.1:8080/", f"//127.0.0.1:{ports.worker}/"),
    ):
        text = text.replace(old, new)
    return text


def host_network_override(ports: Ports, worker_env: dict[str, str]) -> dict[str, Any]:
    """Every service on the host network, listening on 127.0.0.1 only, on ``ports``; the test
    images; ``worker_env`` added to the workers'."""
    services: dict[str, Any] = {}
    for name, service in compose()["services"].items():
        override: dict[str, Any] = {"network_mode": "host"}
        env = {key: on_localhost(value, ports) for key, value in environment(service).items()}
        changed = {key: value for key, value in env.items() if value != environment(service)[key]}
        if service.get("image") == "cdd-forecast:cpu":
            override["image"] = PROJECT_IMAGE
        if "--pool" in (service.get("command") or []):
            changed |= {
                "PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1",
                "PREFECT_WORKER_WEBSERVER_PORT": str(ports.worker),
                **worker_env,
            }
        if "healthcheck" in service:
            test = service["healthcheck"]["test"]
            override["healthcheck"] = {"test": [on_localhost(word, ports) for word in test]}
        if changed:
            override["environment"] = changed
        services[name] = override
    services["postgres"] |= {
        "image": POSTGRES_IMAGE,
        "environment": {"PGPORT": str(ports.postgres)},
        "command": ["postgres", "-c", "listen_addresses=127.0.0.1"],
    }
    server = compose()["services"]["prefect-server"]["command"]
    services["prefect-server"]["command"] = [
        {"0.0.0.0": "127.0.0.1", "4200": str(ports.prefect)}.get(word, word) for word in server
    ]
    return services


def host_network_compose(ports: Ports, worker_env: dict[str, str]) -> dict[str, Any]:
    """docker-compose.yml with `host_network_override` applied and no published ports (host
    networking publishes nothing, and Compose 1.29 refuses both; an override file cannot
    remove them, so the test writes the whole file, as JSON, which Compose reads as YAML)."""
    document = copy.deepcopy(compose())
    for name, override in host_network_override(ports, worker_env).items():
        service = document["services"][name]
        service.pop("ports", None)
        service["environment"] = environment(service) | override.pop("environment", {})
        if "healthcheck" in override:
            service["healthcheck"] = service["healthcheck"] | override.pop("healthcheck")
        service.update(override)
    return document


def throwaway_env(path: Path, ports: Ports, extra: dict[str, str]) -> dict[str, str]:
    """.env.example filled in with random passwords, this test's ports and ``extra``, written
    to ``path``."""
    values = env_file(ENV_EXAMPLE)
    values |= {name: secrets.token_hex(16) for name in PASSWORDS}
    values |= {
        "SERVER_AUTH": f"operator:{secrets.token_hex(16)}",
        "PG_PUBLISH": f"127.0.0.1:{ports.postgres}",
        "UI_PUBLISH": f"127.0.0.1:{ports.prefect}",
        "UI_API_URL": f"http://127.0.0.1:{ports.prefect}/api",
    }
    values |= extra
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    path.chmod(0o600)
    return values


@dataclass
class Stack:
    """A running compose project and the ways the test looks at it."""

    project: str
    files: list[Path]
    env: dict[str, str]
    ports: Ports
    log: Path

    def compose(self, *args: str, timeout: float = 600) -> str:
        argv = [*compose_command(), "--project-directory", str(ROOT), "-p", self.project]
        argv += ["--env-file", str(self.files[0])]
        for file in self.files[1:]:
            argv += ["-f", str(file)]
        # a bare environment: nothing of the caller's shell overrides the env file
        bare = {
            key: os.environ[key] for key in ("PATH", "HOME", "DOCKER_HOST") if key in os.environ
        }
        return run(argv + list(args), self.log, timeout=timeout, env=bare, cwd=ROOT)

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
    base: Path, worker_env: dict[str, str], log: Path, env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """``up -d`` of docker-compose.yml on the host network, ``env`` added to its .env;
    ``down -v`` however it ends."""
    ports = Ports()
    env_path, compose_file = base / "stack.env", base / "docker-compose.host-network.yml"
    env = throwaway_env(env_path, ports, env or {})
    compose_file.write_text(json.dumps(host_network_compose(ports, worker_env), indent=1))
    stack = Stack(f"cddfstack{uuid.uuid4().hex[:8]}", [env_path, compose_file], env, ports, log)
    try:
        stack.compose("up", "-d", "--no-build", timeout=900)
        yield stack
    finally:
        stack.compose("down", "-v", "--remove-orphans", "--timeout", "20", timeout=300)
