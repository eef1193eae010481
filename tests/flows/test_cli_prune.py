"""``cdd-forecast db prune`` and the daily run's prune step (flows/retention.py)."""

from __future__ import annotations

import logging

import pytest
from prefect import flow
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from cdd.series_key import SeriesKey
from db.candles import upsert_candles
from db.engine import get_engine, make_engine, migrate
from db.registry import get_version
from flows.cli import app
from flows.retention import prune_after_run
from tests.db.test_retention import SERIES, lineage
from tests.flows.cdd_files import make_candles

KEY = SeriesKey.parse(SERIES)

runner = CliRunner()


@pytest.fixture
def versions(service_database: str, monkeypatch) -> list[int]:
    """Six versions of one series' model (a retrain and five fine-tunes), two kept recent."""
    monkeypatch.setenv("CDDF_KEEP_VERSIONS", "2")
    engine = make_engine(service_database)
    migrate(engine)
    with Session(engine) as session, session.begin():
        upsert_candles(session, KEY, make_candles(KEY, 5))
    ids = lineage(engine, 6, size=1000)
    engine.dispose()
    return ids


def kept(ids: list[int]) -> list[bool]:
    return [get_version(get_engine(), version).artifact_kept for version in ids]


def test_dry_run_prints_what_would_go_then_prune_drops_it_once(versions):
    planned = runner.invoke(app, ["db", "prune", "--dry-run"])
    assert planned.exit_code == 0, planned.output
    assert (
        f"{SERIES}: would drop versions {versions[1]}, {versions[2]} (0.0 MB); kept "
        f"{versions[0]}, {versions[3]}, {versions[4]}, {versions[5]} (serving {versions[5]})"
    ) in planned.stdout
    assert "would drop the weights of 2 model versions" in planned.stdout
    assert all(kept(versions))

    done = runner.invoke(app, ["db", "prune"])
    assert done.exit_code == 0, done.output
    assert f"{SERIES}: dropped versions {versions[1]}, {versions[2]}" in done.stdout
    assert kept(versions) == [True, False, False, True, True, True]

    again = runner.invoke(app, ["db", "prune"])
    assert again.exit_code == 0, again.output
    assert "dropped the weights of 0 model versions" in again.stdout


@flow
def a_run_that_prunes():
    return prune_after_run()


def test_the_daily_runs_prune_drops_old_weights(versions, prefect_harness):
    report = a_run_that_prunes()
    assert report is not None and report.versions_dropped == 2
    assert kept(versions) == [True, False, False, True, True, True]


def test_a_failed_prune_is_a_warning_naming_what_to_run(
    postgres_url, monkeypatch, prefect_harness, caplog
):
    monkeypatch.setenv("CDDF_DATABASE_URL", postgres_url)  # an empty schema: never upgraded
    with caplog.at_level(logging.WARNING):
        assert a_run_that_prunes() is None  # and the run itself completes
    warning = next(r.getMessage() for r in caplog.records if "retention:" in r.getMessage())
    assert "cdd-forecast db upgrade" in warning and "cdd-forecast db prune" in warning
