"""Hand work to a deployment's flow run and wait for it, never forever.

    child = dispatch(  # inside a flow run
        "train/train", {"series": "Bitstamp_BTCUSD_d", "mode": "auto"},
        key="train Bitstamp_BTCUSD_d", timeout=3600, via="CDDF_TRAIN_DEPLOYMENT",
        timeout_setting="CDDF_TRAIN_DISPATCH_TIMEOUT",
    )

The child run is a subflow of the calling flow run and carries the idempotency key
``<calling flow run id>/<key>``: a retried caller gets back the child it started before (and
waits for it again) instead of starting a second one. A child that has not ended within
``timeout`` seconds (queue time included) is cancelled, and `DispatchTimeout` names its work
pool and how to start a worker for it; a child that ended in any state but Completed is
`DispatchFailed`, with the child's own message.
"""

from __future__ import annotations

from typing import Any

from prefect import get_client
from prefect.client.schemas.objects import FlowRun, WorkerStatus
from prefect.deployments import run_deployment
from prefect.runtime import flow_run
from prefect.states import Cancelling

# states of a child no worker has started yet
NOT_STARTED = {"SCHEDULED", "PENDING", "PAUSED"}


class DispatchError(RuntimeError):
    """A dispatched flow run did not complete."""


class DispatchTimeout(DispatchError):
    """A dispatched flow run did not end in time; it was cancelled."""


class DispatchFailed(DispatchError):
    """A dispatched flow run ended Failed, Crashed or Cancelled."""


def dispatch(
    deployment: str,
    parameters: dict[str, Any],
    *,
    key: str,
    timeout: float,
    via: str,
    timeout_setting: str,
) -> FlowRun:
    """Run ``deployment`` with ``parameters`` and wait up to ``timeout`` s for its Completed end.

    ``via`` and ``timeout_setting`` name the settings that chose the deployment and the timeout
    (for the messages).
    """
    parent = flow_run.get_id()
    child = run_deployment(
        deployment,
        parameters=parameters,
        timeout=timeout,
        poll_interval=min(5.0, max(0.5, timeout / 10)),
        idempotency_key=f"{parent}/{key}" if parent else None,
    )
    if child.state is None or not child.state.is_final():
        why = timed_out(deployment, child, timeout, via, timeout_setting)
        child = _cancel(child)
        if child.state is None or not child.state.is_completed():
            raise DispatchTimeout(why)
    if not child.state.is_completed():
        raise DispatchFailed(
            f"the {deployment} flow run '{child.name}' ({child.id}) ended {child.state.name}: "
            f"{child.state.message or 'no message'} (its logs are on the run's page in the UI)"
        )
    return child


def _cancel(child: FlowRun) -> FlowRun:
    """Cancel ``child`` (a run not started yet goes straight to Cancelled); its state after."""
    with get_client(sync_client=True) as client:
        # rejected when the child has just ended: then its final state stands
        client.set_flow_run_state(
            child.id, Cancelling(message="its dispatcher stopped waiting for it")
        )
        return client.read_flow_run(child.id)


def timed_out(deployment: str, child: FlowRun, timeout: float, via: str, setting: str) -> str:
    """Why ``child`` did not end in time, and what to do, naming its work pool."""
    pool = child.work_pool_name
    start = f"`prefect worker start --pool {pool}`"
    waited = (
        f"the {deployment} flow run '{child.name}' ({child.id}) did not end within {timeout:g} s "
        f"({setting}) and was cancelled"
    )
    started = child.start_time is not None or (
        child.state is not None and child.state.type.value not in NOT_STARTED
    )
    if pool is None:  # a served deployment (`cdd-forecast serve`)
        doing = "was running" if started else "was not started: no process serves it"
        return f"{waited}: it {doing}; raise {setting} if it needs longer"
    if started:
        return (
            f"{waited}: it was running on work pool '{pool}'; if it needs longer, raise "
            f"{setting}, or add workers ({start})"
        )
    online = _workers_online(pool)
    if online:
        return (
            f"{waited}: no worker of work pool '{pool}' started it ({online} online, all busy "
            f"or limited): add a worker ({start}) or raise the pool's concurrency limit"
        )
    return (
        f"{waited}: no worker polls work pool '{pool}' — start one ({start}), or leave "
        f"{via} unset to run this in the dispatching flow run"
    )


def _workers_online(pool: str) -> int:
    with get_client(sync_client=True) as client:
        workers = client.read_workers_for_work_pool(pool)
    return sum(worker.status == WorkerStatus.ONLINE for worker in workers)
