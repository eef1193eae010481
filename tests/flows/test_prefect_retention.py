"""Prefect's retention (flows/prefect_retention.py) against the temporary API: the flow runs
that ended before the cutoff go with their artifacts; newer ones, and running ones, stay."""

from __future__ import annotations

import datetime as dt

import pytest
from prefect import flow, get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.exceptions import ObjectNotFound
from prefect.states import Completed, Failed, Pending, Running

from flows.prefect_retention import delete_older_than, prefect_retention_flow


@flow(name="retention-probe")
def probe() -> None:
    """A flow whose runs the test makes, ended when it says."""


def a_run(client, state):
    """A flow run of ``probe`` put in ``state`` (the API stamps it now), with a markdown
    artifact of its own."""
    run = client.create_flow_run(probe, state=Pending())
    client.set_flow_run_state(run.id, state, force=True)
    client.create_artifact(
        ArtifactCreate(key="retention-probe", type="markdown", data="x", flow_run_id=run.id)
    )
    return client.read_flow_run(run.id)


def artifacts_of(client, run_id) -> int:
    found = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
    )
    return len(found)


def exists(client, run_id) -> bool:
    try:
        client.read_flow_run(run_id)
    except ObjectNotFound:
        return False
    return True


def test_runs_that_ended_before_the_cutoff_go_with_their_artifacts(prefect_harness):
    """The API stamps a state with its own clock, so "older" is: ended before the cutoff taken
    between two runs. (Every run of the session's earlier tests ended before it too and goes:
    they are done with.)"""
    with get_client(sync_client=True) as client:
        old_completed = a_run(client, Completed())
        old_failed = a_run(client, Failed())
        cutoff = old_failed.end_time + dt.timedelta(microseconds=1)
        still_running = a_run(client, Running())
        recent = a_run(client, Completed())
    assert recent.end_time > cutoff

    outcome = delete_older_than(cutoff)

    with get_client(sync_client=True) as client:
        for gone in (old_completed, old_failed):
            assert not exists(client, gone.id) and artifacts_of(client, gone.id) == 0
        for kept in (still_running, recent):
            assert exists(client, kept.id) and artifacts_of(client, kept.id) == 1
    assert outcome.flow_runs >= 2 and outcome.artifacts >= 2


def test_the_flow_deletes_what_ended_more_than_the_setting_ago(prefect_harness, monkeypatch):
    monkeypatch.setenv("CDDF_PREFECT_RETENTION_DAYS", "7")
    with get_client(sync_client=True) as client:
        today = a_run(client, Completed())
    before = dt.datetime.now(dt.UTC)
    outcome = prefect_retention_flow()
    week = dt.timedelta(days=7)
    assert before - week <= outcome.cutoff <= dt.datetime.now(dt.UTC) - week
    with get_client(sync_client=True) as client:
        assert exists(client, today.id) and artifacts_of(client, today.id) == 1


def test_a_retention_under_a_day_is_refused_naming_the_setting(prefect_harness):
    with pytest.raises(ValueError, match="CDDF_PREFECT_RETENTION_DAYS"):
        prefect_retention_flow(days=0)
