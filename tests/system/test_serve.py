"""`cdd-forecast serve` beside the deployments `prefect deploy` made, on a real Prefect server.

It never replaces them (they carry pull steps and a work pool, which serving would drop), it
serves under its own names with ``--name-prefix``, and on stop it pauses only what it served.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import served_names
from tests.system.stack import REPO, clean_environment, free_port, prefect_server, wait_for

pytestmark = [pytest.mark.system, pytest.mark.slow]

CLI = str(Path(sys.executable).with_name("cdd-forecast"))
DEPLOYED = ("daily/daily", "train/train", "backfill/backfill")
# SIGINT to SIGKILL: serve pauses what it served before it exits (six deployments, an API call
# each); 15 s was not enough late in a full suite on 2 busy cores, where both stops were killed
# before any pause (alone the whole test takes ~30 s)
STOP_GRACE_S = 60.0


def snapshot(stack, names) -> dict[str, tuple]:
    """What serving must not change: id, pool, pull steps, paused, schedules' active flags."""
    with stack.client() as client:
        found = {}
        for name in names:
            d = client.read_deployment_by_name(name)
            found[name] = (
                d.id,
                d.work_pool_name,
                d.pull_steps,
                d.paused,
                [(s.schedule.cron, s.active) for s in d.schedules],
            )
        return found


def deployment_or_none(stack, name):
    from prefect.exceptions import ObjectNotFound

    with stack.client() as client:
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            return None


def serve_env(tmp_path) -> dict[str, str]:
    return {
        "CDDF_DATABASE_URL": f"sqlite:///{tmp_path / 'cddf.sqlite'}",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def start_serving(stack, tmp_path, name: str, *args: str):
    """``cdd-forecast serve ARGS`` in the background, once its three deployments are there."""
    process = stack.start(name, [CLI, "serve", *args], **serve_env(tmp_path))
    prefix = args[args.index("--name-prefix") + 1] if "--name-prefix" in args else ""

    def registered():
        process.check_running()
        found = [deployment_or_none(stack, served) for served in served_names(prefix)]
        return True if all(d is not None and not d.paused for d in found) else None

    wait_for(f"{name} to serve {served_names(prefix)}", registered, 180, stack.logs)
    return process


def test_serve_refuses_deployed_deployments_and_serves_beside_them(tmp_path):
    with prefect_server(tmp_path, deadline_s=240) as stack:  # a busy machine
        stack.create_process_pools("cpu", "gpu")
        stack.deploy_all()
        before = snapshot(stack, DEPLOYED)

        refused = subprocess.run(
            [CLI, "serve"],
            cwd=REPO,
            env={**stack.env, **serve_env(tmp_path)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert refused.returncode == 1, refused.stdout + refused.stderr
        message = " ".join(refused.stderr.split())
        for name, pool in zip(DEPLOYED, ("cpu", "gpu", "cpu"), strict=True):
            assert f"{name} (work pool {pool})" in message, message
        assert "prefect worker start --pool cpu" in message
        assert "cdd-forecast serve --name-prefix local-" in message
        assert "prefect deployment delete daily/daily" in message
        assert snapshot(stack, DEPLOYED) == before

        serving = start_serving(stack, tmp_path, "serve-local", "--name-prefix", "local-")
        local = deployment_or_none(stack, "daily/local-daily")
        assert local.work_pool_name is None
        assert [(s.schedule.cron, s.schedule.timezone) for s in local.schedules] == [
            ("15 0 * * *", "UTC")
        ]
        # the served backfill runs in the serving process: bad parameters fail it at once
        run = stack.run_and_wait(
            "backfill/local-backfill",
            {"series": "bitstamp-btc", "start": "2020-02-10", "end": "2020-02-11"},
            deadline_s=180,
        )
        assert run.state.is_failed() and "invalid series key" in run.state.message, run.state
        assert snapshot(stack, DEPLOYED) == before

        serving.stop(grace_s=STOP_GRACE_S)
        for name in served_names("local-"):
            assert deployment_or_none(stack, name).paused, f"{name} still unpaused after stop"
        assert snapshot(stack, DEPLOYED) == before  # the deployed daily keeps its schedule
        assert "paused daily/local-daily" in serving.log.read_text()


def test_serve_again_takes_over_its_own_deployments(tmp_path):
    with prefect_server(tmp_path, deadline_s=240) as stack:  # a busy machine
        first = start_serving(stack, tmp_path, "serve-first")
        first.stop(grace_s=STOP_GRACE_S)
        assert deployment_or_none(stack, "daily/daily").paused

        second = start_serving(stack, tmp_path, "serve-second")  # not refused: it served them
        daily = deployment_or_none(stack, "daily/daily")
        assert daily.work_pool_name is None and not daily.pull_steps
        assert [s.active for s in daily.schedules] == [True]
        # systemd stops it with SIGTERM: it pauses what it served too
        os.kill(second.popen.pid, signal.SIGTERM)
        assert second.popen.wait(timeout=120) == 0, second.tail()
        for name in served_names():
            assert deployment_or_none(stack, name).paused, f"{name} unpaused after SIGTERM"


def test_serve_without_a_running_server_says_how_to_start_one(tmp_path):
    nothing = f"http://127.0.0.1:{free_port()}/api"
    result = subprocess.run(
        [CLI, "serve"],
        cwd=REPO,
        env=clean_environment(
            PREFECT_HOME=str(tmp_path / "prefect-home"),
            PREFECT_API_URL=nothing,
            **serve_env(tmp_path),
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    message = " ".join(result.stderr.split())
    assert f"the Prefect server at {nothing} does not answer" in message
    assert "prefect server start" in message
