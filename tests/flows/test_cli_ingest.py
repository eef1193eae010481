"""``cdd-forecast db upgrade``, ``ingest`` and ``series`` through typer's CliRunner."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cdd.series_key import SeriesKey
from flows.cli import app
from tests.flows.cdd_files import make_candles, write_cdd_file

KEY = SeriesKey.parse("Bitstamp_BTCUSD_d")
runner = CliRunner()


@pytest.fixture
def cli_env(service_database: str, monkeypatch) -> str:
    """The CLI's settings: a fresh database, the one series."""
    monkeypatch.setenv("CDDF_SERIES", KEY.key)
    return service_database


def invoke(*args: str):
    return runner.invoke(app, list(args))


def cells(table: str, series: str) -> list[str]:
    """The cells of ``series``' row in a rich table."""
    row = next(line for line in table.splitlines() if f" {series} " in line)
    return [cell.strip() for cell in row.split("│")[1:-1]]


def head_revisions() -> list[str]:
    from alembic.script import ScriptDirectory

    from db.engine import alembic_config, make_engine

    return ScriptDirectory.from_config(alembic_config(make_engine("sqlite://"))).get_heads()


def test_upgrade_ingest_reingest_and_list(cli_env: str, tmp_path: Path) -> None:
    upgraded = invoke("db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    assert f"is at revision {', '.join(head_revisions())}" in upgraded.stdout

    path = write_cdd_file(tmp_path, KEY, make_candles(KEY, 40, start="2021-03-01"))
    first = invoke("ingest", "--source", str(path))  # the series comes from the file name
    assert first.exit_code == 0, first.output
    # columns: series, status, read, inserted, updated, unchanged, gaps, swapped, partial, ...
    assert cells(first.stdout, KEY.key)[:6] == [KEY.key, "success", "40", "40", "0", "0"]

    again = invoke("ingest", "--series", KEY.key, "--source", str(tmp_path))
    assert again.exit_code == 0, again.output
    assert cells(again.stdout, KEY.key)[:6] == [KEY.key, "success", "40", "0", "0", "40"]

    listed = invoke("series")
    assert listed.exit_code == 0, listed.output
    assert cells(listed.stdout, KEY.key) == [KEY.key, "d", "2021-03-01", "2021-04-09", "40", "0"]


def test_upgrade_never_shows_the_password(postgres_url: str, monkeypatch) -> None:
    with_password = postgres_url.replace("postgres@", "postgres:s3cret-pw@", 1)
    monkeypatch.setenv("CDDF_DATABASE_URL", with_password)  # trust auth ignores the password
    result = invoke("db", "upgrade")
    assert result.exit_code == 0, result.output
    assert "s3cret-pw" not in result.output and "postgres:***@" in result.output


def test_a_failed_series_exits_1_and_shows_why(cli_env: str, tmp_path: Path) -> None:
    invoke("db", "upgrade")
    eth = SeriesKey.parse("Bitstamp_ETHUSD_d")
    write_cdd_file(tmp_path, KEY, make_candles(KEY, 10))
    (tmp_path / eth.file_name).write_text("unix,date,symbol,open,high,low,close\n")
    result = invoke("ingest", "-s", KEY.key, "-s", eth.key, "--source", f"{tmp_path}/")
    assert result.exit_code == 1
    assert f"{eth.key} failed: {tmp_path / eth.file_name} line 1: missing column(s)" in (
        result.stderr.replace("\n", "")
    )
    assert cells(result.stdout, KEY.key)[:4] == [KEY.key, "success", "10", "10"]
    assert cells(result.stdout, eth.key)[:3] == [eth.key, "failed", "-"]


def test_one_file_for_several_series_is_a_usage_error(cli_env: str, tmp_path: Path) -> None:
    result = invoke("ingest", "-s", KEY.key, "-s", "Bitstamp_ETHUSD_d", "--source", "a.csv")
    assert result.exit_code == 2
    assert "names one file but 2 series" in result.stderr.replace("\n", " ")


def test_a_series_named_twice_is_a_usage_error(sqlite_url: str, tmp_path, monkeypatch) -> None:
    """It was downloaded (and by `run` trained and forecast) twice."""
    monkeypatch.setenv("CDDF_DATABASE_URL", sqlite_url)
    for command in ("ingest", "run"):
        result = invoke(command, "-s", KEY.key, "-s", "Bitstamp_ETHUSD_d", "-s", KEY.key)
        assert result.exit_code == 2, result.output
        assert f"--series {KEY.key} given more than once" in " ".join(result.stderr.split())


def test_unreachable_cdd_says_how_to_pass_source(cli_env: str, monkeypatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("CDDF_CDD_BASE_URL", f"http://127.0.0.1:{port}/cdd/")
    monkeypatch.setenv("CDDF_HTTP_RETRIES", "0")
    invoke("db", "upgrade")
    result = invoke("ingest")
    assert result.exit_code == 1
    message = result.stderr.replace("\n", "")
    assert "cannot reach 127.0.0.1" in message
    assert f"--source /path/to/{KEY.file_name}" in message


def test_series_on_an_empty_database(cli_env: str) -> None:
    invoke("db", "upgrade")
    result = invoke("series")
    assert result.exit_code == 0 and "no series stored yet" in result.stdout
