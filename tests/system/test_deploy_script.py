"""deploy/deploy.sh on a real Prefect server with basic auth and its UI: one command creates the
pools (the gpu pool limited to GPU_COUNT), the deployments and the automations, and a second
run changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from tests.system.stack import REPO, prefect_server

pytestmark = [pytest.mark.system, pytest.mark.slow]

AUTH = "operator:s3cret"
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    base = tmp_path_factory.mktemp("deploy-script")
    ui = base / "ui"
    ui.mkdir()
    with prefect_server(
        base,
        PREFECT_UI_ENABLED="true",
        PREFECT_SERVER_UI_STATIC_DIRECTORY=str(ui),
        PREFECT_SERVER_API_AUTH_STRING=AUTH,
        PREFECT_API_AUTH_STRING=AUTH,
    ) as running:
        yield running


def deploy(stack, gpu_count: str = "2") -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", "deploy/deploy.sh"],
        cwd=REPO,
        # the venv's prefect and python3 first on PATH, as in an activated venv or the image
        env={**stack.env, "GPU_COUNT": gpu_count, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_ui_is_served_and_the_api_asks_for_the_password(stack):
    root = stack.api_url.removesuffix("/api")
    assert requests.get(f"{root}/", timeout=10).status_code == 200
    assert requests.get(f"{stack.api_url}/health", timeout=10).json() is True
    anonymous = requests.post(f"{stack.api_url}/flows/filter", json={}, timeout=10)
    assert anonymous.status_code == 401
    user, password = AUTH.split(":")
    signed = requests.post(f"{stack.api_url}/flows/filter", json={}, auth=(user, password))
    assert signed.status_code == 200


def test_one_command_registers_pools_deployments_and_automations_and_is_repeatable(stack):
    first = deploy(stack)
    assert first.returncode == 0, first.stdout + first.stderr
    with stack.client() as client:
        assert client.read_work_pool("gpu").concurrency_limit == 2
        assert client.read_work_pool("cpu").concurrency_limit is None
        daily = client.read_deployment_by_name("daily/daily")
        assert daily.global_concurrency_limit.limit == 1
        assert str(daily.concurrency_options.collision_strategy.value) == "CANCEL_NEW"
        for name in ("train/train", "backfill/backfill"):
            assert client.read_deployment_by_name(name).work_pool_name in {"cpu", "gpu"}
        expected = yaml.safe_load((REPO / "deploy/automations/daily-stale.yaml").read_text())
        found = client.read_automations_by_name(expected["name"])
        assert len(found) == 1 and found[0].trigger.within.total_seconds() == 26 * 3600

    again = deploy(stack, gpu_count="1")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "exists; kept" in again.stdout
    with stack.client() as client:
        assert len(client.read_automations_by_name(expected["name"])) == 1
        assert client.read_work_pool("gpu").concurrency_limit == 1


def test_a_gpu_count_that_is_not_a_number_stops_before_any_change(stack):
    result = deploy(stack, gpu_count="two")
    assert result.returncode == 2
    assert "GPU_COUNT=two must be a whole number" in result.stderr
