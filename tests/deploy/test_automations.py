"""deploy/automations/*.yaml are automations Prefect accepts, and the dead-run ones agree with
the workers' heartbeat frequency (docker-compose.yml) and the resume flow (flows/resume.py)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
import yaml
from prefect.events.schemas.automations import AutomationCore, Posture

from flows.resume import RESUMABLE
from tests.deploy.compose import ROOT, environment, services

AUTOMATIONS = sorted((ROOT / "deploy" / "automations").glob("*.yaml"))
PLACEHOLDER = re.compile(r"<id of deployment ([\w-]+/[\w-]+)>")  # deploy/deploy.sh resolves it


def automation(path: Path) -> AutomationCore:
    """The file as Prefect's model reads it, a made-up id where deploy.sh writes a real one."""
    text = PLACEHOLDER.sub(lambda _: str(uuid.uuid4()), path.read_text())
    return AutomationCore.model_validate(yaml.safe_load(text))


@pytest.mark.parametrize("path", AUTOMATIONS, ids=lambda path: path.name)
def test_every_automation_file_is_valid_for_prefect(path):
    parsed = automation(path)
    assert parsed.enabled and parsed.actions
    # deploy.sh finds the name with sed: one `name:` line, the model's name
    (line,) = [line for line in path.read_text().splitlines() if line.startswith("name:")]
    assert line.removeprefix("name:").strip() == parsed.name


def test_the_automation_names_are_distinct():
    names = [automation(path).name for path in AUTOMATIONS]
    assert len(names) == len(set(names)) >= 3


def test_a_run_without_heartbeats_is_crashed_after_three_missed_beats_of_every_worker():
    crash = automation(ROOT / "deploy" / "automations" / "crash-silent-runs.yaml")
    trigger = crash.trigger
    assert trigger.posture == Posture.Proactive
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert trigger.expect == {
        "prefect.flow-run.heartbeat",
        "prefect.flow-run.Completed",
        "prefect.flow-run.Failed",
        "prefect.flow-run.Cancelled",
        "prefect.flow-run.Crashed",
    }
    assert trigger.for_each == {"prefect.resource.id"}
    (action,) = crash.actions
    assert (action.type, action.state.value, action.force) == (
        "change-flow-run-state",
        "CRASHED",
        False,
    )
    workers = [name for name, service in services().items() if name.startswith("worker-")]
    assert workers == ["worker-cpu", "worker-gpu"]
    for name in workers:
        frequency = int(environment(services()[name])["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"])
        assert 30 <= frequency and trigger.within.total_seconds() == 3 * frequency, name


def test_crashed_daily_and_backfill_runs_run_the_resume_deployment_with_their_id():
    resume = automation(ROOT / "deploy" / "automations" / "resume-crashed-runs.yaml")
    trigger = resume.trigger
    assert trigger.posture == Posture.Reactive and trigger.expect == {"prefect.flow-run.Crashed"}
    related = trigger.match_related
    assert related["prefect.resource.role"] == ["deployment"]
    assert tuple(related["prefect.resource.name"]) == RESUMABLE
    (action,) = resume.actions
    assert action.type == "run-deployment" and action.source == "selected"
    assert set(action.parameters) == {"flow_run_id"}  # rendered: the test below
    text = (ROOT / "deploy" / "automations" / "resume-crashed-runs.yaml").read_text()
    (raw_action,) = yaml.safe_load(text)["actions"]
    assert PLACEHOLDER.fullmatch(raw_action["deployment_id"])[1] == "resume/resume"
    prefect_yaml = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (deployment,) = [d for d in prefect_yaml["deployments"] if d["name"] == "resume"]
    assert deployment["entrypoint"] == "flows/resume.py:resume_flow"
    assert PLACEHOLDER.pattern in (ROOT / "deploy" / "deploy.sh").read_text().replace("\\\\", "\\")


@pytest.mark.parametrize("template", ["{{ flow_run.id }}", "{{ flow_run.id | string }}"])
def test_how_the_server_renders_the_crashed_run_s_id(template):
    """The server's own rendering of a run-deployment parameter: a one-expression template is
    rendered through ``| tojson``, which a UUID does not pass; its text does."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.server.events.actions import RunDeployment
    from prefect.utilities.schema_tools.hydration import HydrationContext, InvalidJinja, hydrate

    flow_run = FlowRun(flow_id=uuid.uuid4())
    parameters = {"flow_run_id": template}
    RunDeployment._upgrade_v1_templates(parameters)  # what the action does before rendering
    context = HydrationContext(render_jinja=True, jinja_context={"flow_run": flow_run})
    rendered = hydrate(parameters, context)
    if template == "{{ flow_run.id }}":
        assert isinstance(rendered["flow_run_id"], InvalidJinja)  # the action fails
    else:
        assert rendered == {"flow_run_id": str(flow_run.id)}
        resume = automation(ROOT / "deploy" / "automations" / "resume-crashed-runs.yaml")
        assert resume.actions[0].parameters == {"flow_run_id": template}
