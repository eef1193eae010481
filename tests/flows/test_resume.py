"""Crashed daily and backfill runs are resumed, a bounded number of times (flows/resume.py),
against Prefect's temporary API: runs of real deployments, crashed as a dead worker's are."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.states import Completed, Crashed, Running

from flows.deployments import BACKFILL_DEFAULTS
from flows.resume import ResumeLimitReached, resume_flow, resume_run

ROOT = Path(__file__).resolve().parents[2]
BACKFILL = {"series": "Bitstamp_BTCUSD_d", "start": "2025-06-01", "end": "2025-06-14"}


@pytest.fixture
def client(prefect_harness):
    with get_client(sync_client=True) as client:
        yield client


def deployment_id(client: SyncPrefectClient, name: str) -> UUID:
    """Deployment ``name/name`` on the temporary server (created, or the one already there)."""
    flow_id = client.create_flow_from_name(name)
    return client.create_deployment(
        flow_id=flow_id,
        name=name,
        entrypoint=f"flows/{name}.py:{name}_flow",
        parameters=BACKFILL_DEFAULTS if name == "backfill" else {},
    )


def crashed_run(client: SyncPrefectClient, name: str, parameters: dict, tags=()) -> FlowRun:
    """A run of deployment ``name`` that started, then crashed (as the heartbeat automation
    leaves a run whose worker died)."""
    run = client.create_flow_run_from_deployment(
        deployment_id(client, name), parameters=parameters, tags=list(tags)
    )
    client.set_flow_run_state(run.id, Running(), force=True)
    client.set_flow_run_state(run.id, Crashed(message="missed heartbeats"), force=True)
    return client.read_flow_run(run.id)


def resumes(client: SyncPrefectClient, original: UUID) -> list[FlowRun]:
    """The runs that resume run ``original``."""
    tags = FlowRunFilterTags(all_=[f"resume-of:{original}"])
    return client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=tags))


def test_a_crashed_backfill_run_is_resumed_with_its_parameters(client):
    crashed = crashed_run(client, "backfill", BACKFILL, tags=["nightly"])

    resumed = resume_run(client, crashed.id, max_resumes=2)

    assert resumed is not None and resumed.id != crashed.id
    assert resumed.deployment_id == crashed.deployment_id
    assert resumed.parameters == BACKFILL | BACKFILL_DEFAULTS == crashed.parameters
    assert set(resumed.tags) == {"nightly", f"resume-of:{crashed.id}", "resume:1"}
    assert resumed.state.type == StateType.SCHEDULED  # a worker of pool cpu picks it up


def test_a_resumed_run_counts_and_past_the_maximum_the_resume_fails_naming_it(client):
    original = crashed_run(client, "backfill", BACKFILL)
    first = resume_run(client, original.id, max_resumes=2)
    client.set_flow_run_state(first.id, Running(), force=True)
    client.set_flow_run_state(first.id, Crashed(), force=True)

    second = resume_run(client, first.id, max_resumes=2)
    assert set(second.tags) == {f"resume-of:{original.id}", "resume:2"}  # counts from the first
    client.set_flow_run_state(second.id, Running(), force=True)
    client.set_flow_run_state(second.id, Crashed(), force=True)

    with pytest.raises(ResumeLimitReached) as raised:
        resume_run(client, second.id, max_resumes=2)
    message = str(raised.value)
    assert str(second.id) in message and str(original.id) in message
    assert "CDDF_MAX_RESUMES=2" in message
    assert (
        "prefect deployment run 'backfill/backfill' --param force=false "
        "--param series=Bitstamp_BTCUSD_d --param start=2025-06-01 --param end=2025-06-14"
    ) in message
    assert {r.id for r in resumes(client, original.id)} == {first.id, second.id}


def test_a_run_that_is_not_crashed_is_not_resumed(client):
    run = client.create_flow_run_from_deployment(
        deployment_id(client, "backfill"), parameters=BACKFILL
    )
    client.set_flow_run_state(run.id, Running(), force=True)
    assert resume_run(client, run.id, max_resumes=2) is None
    client.set_flow_run_state(run.id, Completed(), force=True)
    assert resume_run(client, run.id, max_resumes=2) is None
    assert resumes(client, run.id) == []


def test_the_same_crashed_run_resumed_twice_makes_one_new_run(client):
    crashed = crashed_run(client, "daily", {})

    first = resume_run(client, crashed.id, max_resumes=2)
    again = resume_run(client, crashed.id, max_resumes=2)  # a duplicated Crashed event

    assert first.id == again.id
    assert [r.id for r in resumes(client, crashed.id)] == [first.id]


def test_a_crashed_run_of_another_deployment_is_refused_naming_it(client):
    crashed = crashed_run(client, "series", {"series": "Bitstamp_BTCUSD_d"})
    with pytest.raises(ValueError, match=rf"{crashed.id}\).*deployment \(series\)"):
        resume_run(client, crashed.id, max_resumes=2)


def test_the_resume_flow_reads_cddf_max_resumes(client, monkeypatch):
    crashed = crashed_run(client, "backfill", BACKFILL)
    monkeypatch.setenv("CDDF_MAX_RESUMES", "0")
    with pytest.raises(ResumeLimitReached, match="CDDF_MAX_RESUMES=0"):
        resume_flow(flow_run_id=crashed.id)

    monkeypatch.setenv("CDDF_MAX_RESUMES", "1")
    resumed_id = resume_flow(flow_run_id=crashed.id)
    assert set(client.read_flow_run(resumed_id).tags) == {f"resume-of:{crashed.id}", "resume:1"}


def test_deploy_sh_creates_the_resume_automation_with_the_resume_deployments_id(client):
    """deploy/deploy.sh's step that writes the id of deployment resume/resume into the file,
    run as deploy.sh runs it; the server accepts the automation it gives."""
    from prefect.automations import Automation
    from prefect.settings import PREFECT_API_URL

    script = (ROOT / "deploy" / "deploy.sh").read_text()
    (snippet,) = re.findall(r"automation=\$\(python3 -c '(.*?)' \"\$file\"\)", script, re.S)
    resume_id = deployment_id(client, "resume")
    done = subprocess.run(
        [sys.executable, "-c", snippet, str(ROOT / "deploy/automations/resume-crashed-runs.yaml")],
        env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    automation = Automation.model_validate(json.loads(done.stdout))
    assert automation.actions[0].deployment_id == resume_id
    created = automation.create()
    try:
        assert Automation.read(id=created.id).actions[0].deployment_id == resume_id
    finally:
        created.delete()
