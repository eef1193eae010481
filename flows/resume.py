"""Resume a crashed daily or backfill run: a new run of its deployment with its parameters.

A run whose worker or process died stops sending heartbeats and is marked Crashed by the
automation of deploy/automations/crash-silent-runs.yaml; the automation of
deploy/automations/resume-crashed-runs.yaml then runs deployment ``resume/resume`` with the
crashed run's id. Both flows are resumable and idempotent (a backfill skips the as_ofs it
stored, a daily run what is already done), so the new run finishes the work without
duplicates.

Each resumed run carries the tags ``resume-of:<id of the original run>`` and ``resume:<n>``.
A run that crashes after CDDF_MAX_RESUMES resumes is not resumed again: the resume run fails
with `ResumeLimitReached`, naming the run and what to do (that failure is the alert).

    with get_client(sync_client=True) as client:
        resume_run(client, crashed_id, max_resumes=2)   # the new run, None when not crashed
"""

from __future__ import annotations

import json
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import FlowRun, StateType

from settings import get_settings

RESUMABLE = ("daily", "backfill")  # deployments whose runs are resumed
ORIGINAL_TAG = "resume-of:"
COUNT_TAG = "resume:"


class ResumeLimitReached(RuntimeError):
    """A crashed run was resumed CDDF_MAX_RESUMES times already."""


def resumes_of(run: FlowRun) -> tuple[UUID, int]:
    """The id of the run ``run`` resumes (itself when it is an original) and its resume number.

    >>> from uuid import uuid4
    >>> original = uuid4()
    >>> run = FlowRun(flow_id=uuid4(), tags=[f"resume-of:{original}", "resume:2"])
    >>> resumes_of(run) == (original, 2)
    True
    """
    original = [UUID(t.removeprefix(ORIGINAL_TAG)) for t in run.tags if t.startswith(ORIGINAL_TAG)]
    count = [int(t.removeprefix(COUNT_TAG)) for t in run.tags if t.startswith(COUNT_TAG)]
    return (original[0] if original else run.id), (count[0] if count else 0)


def rerun_command(deployment: str, parameters: dict[str, object]) -> str:
    """The command that runs ``deployment`` again with ``parameters``, by hand (a None one is
    left out: its default, None, applies).

    >>> rerun_command("backfill", {"series": "BTCUSD", "force": False, "parallel": None})
    "prefect deployment run 'backfill/backfill' --param series=BTCUSD --param force=false"
    """
    params = " ".join(
        f"--param {name}={value if isinstance(value, str) else json.dumps(value)}"
        for name, value in parameters.items()
        if value is not None
    )
    return f"prefect deployment run '{deployment}/{deployment}' {params}".rstrip()


def resume_run(client: SyncPrefectClient, flow_run_id: UUID, max_resumes: int) -> FlowRun | None:
    """A new run of crashed run ``flow_run_id``'s deployment with its parameters, or None when
    that run is not Crashed (nothing to resume).

    The same crashed run resumed twice (a duplicated event) gives the same new run (one
    idempotency key per crashed run). Raises `ResumeLimitReached` when the run was already
    resumed ``max_resumes`` times, ValueError when it is no run of daily or backfill.
    """
    crashed = client.read_flow_run(flow_run_id)
    if crashed.state is None or crashed.state.type != StateType.CRASHED:
        return None
    deployment = client.read_deployment(crashed.deployment_id) if crashed.deployment_id else None
    if deployment is None or deployment.name not in RESUMABLE:
        name = deployment.name if deployment else "none"
        raise ValueError(
            f"flow run {crashed.name} ({crashed.id}) crashed, but its deployment ({name}) is "
            f"not one of {', '.join(RESUMABLE)}: only those are resumed; rerun it by hand if "
            "it should finish, and keep the automation's match on daily and backfill"
        )
    original, resumes = resumes_of(crashed)
    if resumes >= max_resumes:
        raise ResumeLimitReached(
            f"flow run {crashed.name} ({crashed.id}) of deployment {deployment.name} crashed "
            f"again after {resumes} resume(s) of run {original}; CDDF_MAX_RESUMES={max_resumes}, "
            "so it is not resumed. Find why it crashes (its logs in the UI, the worker's: "
            "docker compose logs worker-cpu — killed for memory? restarted?), then run it "
            f"again, finished work is skipped: {rerun_command(deployment.name, crashed.parameters)}"
        )
    tags = [t for t in crashed.tags if not t.startswith((ORIGINAL_TAG, COUNT_TAG))]
    return client.create_flow_run_from_deployment(
        deployment.id,
        parameters=crashed.parameters,
        tags=[*tags, f"{ORIGINAL_TAG}{original}", f"{COUNT_TAG}{resumes + 1}"],
        idempotency_key=f"resume-{crashed.id}",
        job_variables=crashed.job_variables or None,
    )


@flow(name="resume", flow_run_name="resume {flow_run_id}")
def resume_flow(flow_run_id: UUID) -> UUID | None:
    """Resume crashed daily or backfill run ``flow_run_id``: the new run's id (None: not crashed)"""
    logger = get_run_logger()
    with get_client(sync_client=True) as client:
        resumed = resume_run(client, flow_run_id, get_settings().max_resumes)
    if resumed is None:
        logger.info("flow run %s is not Crashed: nothing to resume", flow_run_id)
        return None
    logger.info(
        "flow run %s resumed as %s (%s)",
        flow_run_id,
        resumed.name,
        ", ".join(t for t in resumed.tags if t.startswith((ORIGINAL_TAG, COUNT_TAG))),
    )
    return resumed.id
