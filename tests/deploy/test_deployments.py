"""prefect.yaml and `cdd-forecast serve` declare the same deployments, pools and schedule."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app, served_deployments
from flows.deployments import BACKFILL_DEFAULTS, DEPLOYMENTS

REPO = Path(__file__).resolve().parents[2]
EXPECTED = {  # deployment: (entrypoint, pool, schedules)
    "daily": ("flows/daily.py:daily_flow", "cpu", [{"cron": "15 0 * * *", "timezone": "UTC"}]),
    "train": ("flows/train.py:train_flow", "gpu", []),
    "series": ("flows/series.py:series_flow", "cpu", []),
    "backfill": ("flows/backfill.py:backfill_flow", "cpu", []),
    "prefect-retention": (
        "flows/prefect_retention.py:prefect_retention_flow",
        "cpu",
        [{"cron": "30 5 * * *", "timezone": "UTC"}],
    ),
    "resume": ("flows/resume.py:resume_flow", "cpu", []),
}


@pytest.fixture(scope="module")
def prefect_yaml() -> dict:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())


def test_prefect_yaml_declares_the_deployments(prefect_yaml):
    found = {
        d["name"]: (d["entrypoint"], d["work_pool"]["name"], d["schedules"])
        for d in prefect_yaml["deployments"]
    }
    assert found == EXPECTED
    pools = prefect_yaml["definitions"]["work_pools"]
    assert {name: pool["name"] for name, pool in pools.items()} == {"cpu": "cpu", "gpu": "gpu"}
    backfill = next(d for d in prefect_yaml["deployments"] if d["name"] == "backfill")
    assert backfill["parameters"] == BACKFILL_DEFAULTS


def test_flow_names_match_the_deployment_names(prefect_yaml):
    """So that `prefect deployment run 'backfill/backfill'` and CDDF_TRAIN_DEPLOYMENT work."""
    from prefect.flows import load_flow_from_entrypoint

    for deployment in prefect_yaml["deployments"]:
        flow = load_flow_from_entrypoint(str(REPO / deployment["entrypoint"]))
        assert flow.name == deployment["name"]
        signature = inspect.signature(flow.fn)
        for name, value in (deployment.get("parameters") or {}).items():
            assert signature.parameters[name].default == value


def test_workers_run_the_code_of_the_directory_deployed_from(prefect_yaml):
    (build,) = prefect_yaml["build"]
    (pull,) = prefect_yaml["pull"]
    shell = build["prefect.deployments.steps.run_shell_script"]
    assert shell["script"] == "pwd"
    directory = pull["prefect.deployments.steps.set_working_directory"]["directory"]
    assert directory == "{{ " + shell["id"] + ".stdout }}"


def test_serve_offers_the_deployments_of_prefect_yaml(prefect_yaml):
    served = {deployment.name: deployment for deployment in served_deployments()}
    assert set(served) == set(EXPECTED)
    for name, deployment in served.items():
        assert deployment.flow_name == name
        schedules = [
            {"cron": s.schedule.cron, "timezone": s.schedule.timezone}
            for s in deployment.schedules or []
        ]
        assert schedules == EXPECTED[name][2]
    assert served["backfill"].parameters == BACKFILL_DEFAULTS


def test_prefect_yaml_agrees_with_the_table_serve_reads(prefect_yaml):
    """One table (flows/deployments.py) for serve; prefect.yaml must say the same."""
    declared = [
        (d["name"], d["entrypoint"], d["schedules"], d.get("parameters") or {})
        for d in prefect_yaml["deployments"]
    ]
    table = [(d.name, d.entrypoint, list(d.schedules), d.parameters) for d in DEPLOYMENTS]
    assert declared == table


def test_serve_without_a_prefect_server_says_how_to_start_one():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 1
    assert "PREFECT_API_URL is not set" in result.output
    assert "prefect server start" in result.output
