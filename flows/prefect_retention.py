"""Prefect's own retention: flow runs and artifacts older than ``CDDF_PREFECT_RETENTION_DAYS``
(default 30) deleted through the Prefect API, by a scheduled deployment (`flows/deployments.py`).

    prefect_retention_flow()           # the setting's age
    prefect_retention_flow(days=7)     # -> RetentionOutcome(flow_runs=..., artifacts=...)

A flow run goes when it ended (``end_time``) more than ``days`` ago, in a final state; a
running or scheduled one stays whatever its age. Its artifacts are deleted first (the API
keeps an artifact whose flow run is gone), then the run: the server deletes its task runs with
it and its logs just after (a background job of the API). Prefect's events are kept by the
server's own setting, ``PREFECT_SERVER_EVENTS_RETENTION_PERIOD`` (7 days by default).
"""

# No `from __future__ import annotations` here: a served deployment may pickle the flow
# function, and its parameters' annotations must travel as objects, not as names.

import datetime as dt
from dataclasses import dataclass

from prefect import flow, get_client, get_run_logger
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterEndTime,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.runtime import flow_run

from settings import get_settings

PAGE = 200  # flow runs read and deleted at a time
FINAL = [StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED]


@dataclass(frozen=True)
class RetentionOutcome:
    cutoff: dt.datetime  # flow runs that ended before this are gone
    flow_runs: int
    artifacts: int


@flow(name="prefect-retention", flow_run_name="prefect retention")
def prefect_retention_flow(days: int | None = None) -> RetentionOutcome:
    """Delete the flow runs that ended more than ``days`` ago (default the setting), with
    their artifacts; their task runs and logs go with them."""
    days = get_settings().prefect_retention_days if days is None else days
    if days < 1:
        raise ValueError(
            f"prefect retention of {days} days would delete today's runs: give 1 or more "
            "(CDDF_PREFECT_RETENTION_DAYS or the days parameter)"
        )
    outcome = delete_older_than(dt.datetime.now(dt.UTC) - dt.timedelta(days=days))
    get_run_logger().info(
        "deleted %d flow runs that ended before %s and %d of their artifacts",
        outcome.flow_runs,
        f"{outcome.cutoff:%Y-%m-%d %H:%M} UTC",
        outcome.artifacts,
    )
    return outcome


def delete_older_than(cutoff: dt.datetime) -> RetentionOutcome:
    """Delete every flow run in a final state that ended before ``cutoff``, artifacts first."""
    runs = artifacts = 0
    this_run = flow_run.get_id()  # never the run that deletes
    old = FlowRunFilter(
        end_time=FlowRunFilterEndTime(before_=cutoff),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=FINAL)),
        id=FlowRunFilterId(not_any_=[this_run]) if this_run else None,
    )
    with get_client(sync_client=True) as client:
        while batch := client.read_flow_runs(
            flow_run_filter=old, sort=FlowRunSort.END_TIME_DESC, limit=PAGE
        ):
            ids = [run.id for run in batch]
            of_batch = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids))
            while found := client.read_artifacts(artifact_filter=of_batch, limit=PAGE):
                for artifact in found:
                    client.delete_artifact(artifact.id)
                artifacts += len(found)
            for run_id in ids:
                client.delete_flow_run(run_id)
                runs += 1
    return RetentionOutcome(cutoff, runs, artifacts)
