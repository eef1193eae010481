"""Where a train run trains: a loud CPU fallback on the gpu pool, CDDF_REQUIRE_GPU, and the
train step's own time limit, which stops a fit in a worker thread.

This machine's TensorFlow sees no GPU (a CUDA build without a driver): the fallback is real.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.exceptions import ObjectNotFound
from prefect.flow_engine import run_flow
from prefect.task_runners import ThreadPoolTaskRunner

from db.registry import versions
from flows.candles import scope_candles
from flows.gpu import FALLBACK_ARTIFACT, GPU_POOL, GpuUnavailableError, expected_gpu
from flows.train import model_scope, train_flow, train_scope
from forecaster.network import device_report
from tests.flows.forecast_service import SERIES, start_service

ROOT = Path(__file__).parents[2]
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture(scope="module")
def no_gpu() -> None:
    report = device_report()
    if report.device == "GPU":
        pytest.skip(f"these tests need a machine without a usable GPU; this one has {report.gpus}")


@pytest.fixture
def service(service_database, monkeypatch, prefect_harness, no_gpu):
    return start_service(monkeypatch)


def test_a_gpu_is_expected_on_the_train_deployments_pool_or_when_required():
    pools = {d["name"]: d["work_pool"]["name"] for d in _prefect_yaml()["deployments"]}
    assert pools["train"] == GPU_POOL
    assert expected_gpu(GPU_POOL, False) == "it runs on work pool 'gpu'"
    assert expected_gpu("cpu", True) == "CDDF_REQUIRE_GPU is set"
    assert expected_gpu("cpu", False) is None and expected_gpu(None, False) is None


@SQLITE_ONLY
def test_a_train_run_of_the_gpu_pool_without_a_gpu_warns_publishes_it_and_trains_on_cpu(
    service, caplog
):
    flow_run = _train_run_on_the_gpu_pool()
    with caplog.at_level("WARNING", logger="prefect.flow_runs"):
        outcome = run_flow(train_flow, flow_run=flow_run, parameters={"series": SERIES})
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    expected = (
        f"the train run of {SERIES} expected a GPU (it runs on work pool 'gpu') but has none, "
        "so training runs on CPU, far slower. Why: no NVIDIA driver is visible here"
    )
    assert any(w.startswith(expected) for w in warnings), warnings
    assert outcome.action == "retrain" and outcome.version.device == "CPU"
    (artifact,) = _artifacts(flow_run.id)
    assert artifact.description == f"{SERIES}: a GPU was expected and none was found"
    assert "**Trained on CPU, not on a GPU.**" in artifact.data and expected in artifact.data


@SQLITE_ONLY
def test_a_train_run_elsewhere_says_nothing_of_a_gpu(service, caplog):
    with caplog.at_level("WARNING", logger="prefect.flow_runs"):
        outcome = train_flow(SERIES)
    assert outcome.version.device == "CPU"
    assert not [r for r in caplog.records if "GPU" in r.getMessage()]


@SQLITE_ONLY
def test_require_gpu_fails_the_train_run_before_any_work(service, monkeypatch):
    monkeypatch.setenv("CDDF_REQUIRE_GPU", "1")
    with pytest.raises(GpuUnavailableError) as raised:
        train_flow(SERIES)
    message = str(raised.value)
    assert message.startswith(f"the train run of {SERIES} expected a GPU (CDDF_REQUIRE_GPU is")
    assert "CDDF_REQUIRE_GPU=1 makes this an error: give this worker a GPU" in message
    assert "unset CDDF_REQUIRE_GPU" in message
    assert versions(service, SERIES) == []


def test_the_gpu_check_of_a_starting_worker_warns_or_fails(no_gpu):
    warned = _gpu_check({})
    assert warned.returncode == 0, warned.stderr
    assert "WARNING: this worker of pool 'gpu' expected a GPU" in warned.stderr
    failed = _gpu_check({"CDDF_REQUIRE_GPU": "1"})
    assert failed.returncode == 1
    assert "error: this worker of pool 'gpu' expected a GPU" in failed.stderr
    assert "CDDF_REQUIRE_GPU=1 makes this an error" in failed.stderr


@SQLITE_ONLY
def test_a_fit_in_a_worker_thread_stops_at_the_train_steps_limit(service, monkeypatch):
    """The daily run trains in a task of a thread pool, where Prefect's timeout cannot
    interrupt: the fit stops itself and the series' step fails naming the series and limit."""
    monkeypatch.setenv(
        "CDDF_FORECASTER",
        '{"units": 8, "window": 7, "horizon": 3, "max_epochs": 100000, "patience": 100000, '
        '"batch_size": 8}',
    )

    @task
    def train_in_a_thread() -> None:
        scope, config = model_scope(SERIES, None)
        train_scope(scope, config, "retrain", scope_candles(scope, None), time_limit=3)

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def a_daily_like_run() -> None:
        train_in_a_thread.submit().result()

    with pytest.raises(TimeoutError) as raised:
        a_daily_like_run()
    message = str(raised.value)
    assert message.startswith(f"{SERIES}: training stopped at fit epoch ")
    assert "over its limit of 3 s (flows.train.TRAIN_TIMEOUT_S); nothing was registered" in message
    assert versions(service, SERIES) == []


def _prefect_yaml() -> dict:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


def _train_run_on_the_gpu_pool():
    """A flow run of a `train` deployment on work pool `gpu`, as a gpu worker would get it."""
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(GPU_POOL)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=GPU_POOL, type="process"))
        flow_id = client.create_flow_from_name("train")
        deployment_id = client.create_deployment(
            flow_id=flow_id,
            name="train",
            work_pool_name=GPU_POOL,
            entrypoint="flows/train.py:train_flow",
        )
        flow_run = client.create_flow_run_from_deployment(
            deployment_id, parameters={"series": SERIES}
        )
    assert flow_run.work_pool_name == GPU_POOL
    return flow_run


def _artifacts(flow_run_id):
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[FALLBACK_ARTIFACT])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        )


def _gpu_check(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    cli = Path(sys.executable).parent / "cdd-forecast"
    return subprocess.run(
        [str(cli), "gpu-check"],
        env=os.environ | environment,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
