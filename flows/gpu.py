"""A train run meant for a GPU that finds none says so loudly, or fails.

A train run expects a GPU when it runs on work pool ``gpu`` (the pool of the ``train``
deployment in prefect.yaml; the flow run knows its pool) or when ``CDDF_REQUIRE_GPU`` is set.
Finding none, it logs a WARNING saying why (`forecaster.network.device_report`) and what to
check, publishes it as the run's artifact ``train-gpu-fallback`` and trains on CPU (the
version's ``device`` says CPU); with ``CDDF_REQUIRE_GPU=1`` it fails instead, before any work.
``cdd-forecast gpu-check`` runs the same check when the GPU worker starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext

from forecaster.network import DeviceReport, device_report
from settings import get_settings

GPU_POOL = "gpu"
FALLBACK_ARTIFACT = "train-gpu-fallback"


class GpuUnavailableError(RuntimeError):
    """A run that requires a GPU (CDDF_REQUIRE_GPU=1) found none."""


@dataclass(frozen=True)
class GpuCheck:
    """Whether a GPU is expected here (``expected``: why, or None) and what TensorFlow found."""

    expected: str | None
    report: DeviceReport

    @property
    def fallback(self) -> bool:
        """A GPU was expected and training runs on CPU."""
        return self.expected is not None and self.report.device != "GPU"

    def message(self, what: str) -> str:
        """One line for a log, an artifact or an error: what runs where, and why."""
        if not self.fallback:
            return f"{what}: {self.report.describe()}"
        return (
            f"{what} expected a GPU ({self.expected}) but has none, so training runs on "
            f"CPU, far slower. Why: {self.report.reason}"
        )


def expected_gpu(work_pool: str | None, require_gpu: bool) -> str | None:
    """Why a GPU is expected, or None: a run of work pool ``gpu``, or CDDF_REQUIRE_GPU set."""
    if work_pool == GPU_POOL:
        return f"it runs on work pool '{GPU_POOL}'"
    if require_gpu:
        return "CDDF_REQUIRE_GPU is set"
    return None


def this_runs_work_pool() -> str | None:
    """The work pool of the flow run in progress (None outside one, or with no pool)."""
    context = FlowRunContext.get()
    flow_run = context.flow_run if context else None
    return flow_run.work_pool_name if flow_run else None


def check_gpu(work_pool: str | None) -> GpuCheck:
    """The check for a process about to train, from its work pool and CDDF_REQUIRE_GPU."""
    return GpuCheck(expected_gpu(work_pool, get_settings().require_gpu), device_report())


def require_gpu_error(check: GpuCheck, what: str) -> GpuUnavailableError:
    """The error of a run that requires a GPU and found none: the setting and what to do."""
    return GpuUnavailableError(
        f"{check.message(what)}. CDDF_REQUIRE_GPU=1 makes this an error: give this worker a "
        "GPU (docs/deploy.md, 'Train on a GPU'), or unset CDDF_REQUIRE_GPU to let it train on "
        "CPU with a warning"
    )


def gpu_for_this_train_run(label: str) -> GpuCheck:
    """In a train run: a WARNING and the run's artifact when a GPU was expected and is
    missing, or (CDDF_REQUIRE_GPU=1) a `GpuUnavailableError`; silent otherwise."""
    check = check_gpu(this_runs_work_pool())
    if not check.fallback:
        return check
    what = f"the train run of {label}"
    if get_settings().require_gpu:
        raise require_gpu_error(check, what)
    message = check.message(what)
    get_run_logger().warning("%s", message)
    create_markdown_artifact(
        key=FALLBACK_ARTIFACT,
        markdown=f"**Trained on CPU, not on a GPU.** {message}\n\n"
        "Set `CDDF_REQUIRE_GPU=1` on the GPU worker to make such a run fail instead.",
        description=f"{label}: a GPU was expected and none was found",
    )
    return check
