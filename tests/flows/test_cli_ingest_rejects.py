"""``cdd-forecast ingest`` shows what the parser skipped, dropped and rejected."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from typer.testing import CliRunner

from cdd.series_key import SeriesKey
from db.candles import load_candles
from db.engine import make_engine
from db.ingest_rejects import load_rejects
from db.models import IngestRun
from flows.cli import app

KEY = SeriesKey.parse("Bitstamp_ETHUSD_d")
HEADER = "unix,date,symbol,open,high,low,close,Volume ETH,Volume USD"
ROWS = [
    "1510358400,2017-11-11 00:00:00,ETH/USD,298.0,320.0,296.0,314.0,5000.0,1550000.0",
    "1510272000,2017-11-10 00:00:00,ETH/USD,320.0,324.77,294.5,298.0,4530.01,1398520.24",
    "1510185600,2017-11-09 00:00:00,ETH/USD,308.0,329.0,337.05,320.0,8237.34,2613140.4",
    "1510099200,2017-11-08 00:00:00,ETH/USD,0.0,0.0,0.0,0.0,0.0,0.0",
]  # line 4: low above high, a bad row; line 5: all zeros, the pair was not trading yet


def test_ingest_output_counts_zero_and_rejected_rows(service_database: str, tmp_path: Path):
    path = tmp_path / KEY.file_name
    path.write_text("\n".join([HEADER, *ROWS]) + "\n")
    assert CliRunner().invoke(app, ["db", "upgrade"]).exit_code == 0
    result = CliRunner().invoke(app, ["ingest", "--source", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    summary = next(line for line in lines if f" {KEY.key} " in line)
    # columns: series, status, read, inserted, ...
    assert [cell.strip() for cell in summary.split("│")[1:5]] == [KEY.key, "success", "4", "2"]
    rows_table = lines[lines.index(next(line for line in lines if "rows not stored" in line)) :]
    row = next(line for line in rows_table if f" {KEY.key} " in line)
    # columns: series, all-zero, rejected, superseded, date ≠ unix
    assert [cell.strip() for cell in row.split("│")[1:-1]] == [KEY.key, "1", "1", "0", "0"]
    assert "1 bad rows were not stored" in " ".join(result.output.split())


def test_cells_that_look_like_markup_are_printed_as_they_are(sqlite_url, monkeypatch, tmp_path):
    """A cell ``[/red]`` in the error of a failed file once crashed rich (MarkupError), and
    ``[bold]`` vanished from the line: every text from a file or an error is escaped."""
    monkeypatch.setenv("CDDF_DATABASE_URL", sqlite_url)
    bad = [
        f"{1510358400 - day * 86400},2017-11-{11 - day:02d} 00:00:00,ETH/USD,{cell},1,1,1,1,1"
        for day, cell in enumerate(["[/red]", "[bold]", "[/red]", "[/]", "[red]"])
    ]
    path = tmp_path / KEY.file_name
    path.write_text("\n".join([HEADER, *bad]) + "\n")
    assert CliRunner().invoke(app, ["db", "upgrade"]).exit_code == 0
    result = CliRunner().invoke(app, ["ingest", "--source", str(path)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    said = " ".join(result.stderr.split())
    assert f"{KEY.key} failed:" in said
    assert "open is '[/red]', not a number" in said
    assert "open is '[bold]', not a number" in said


def test_a_row_with_a_nul_byte_is_rejected_alone_on_both_databases(
    service_database: str, tmp_path: Path
):
    """Issue 24.9: PostgreSQL failed the whole file (DataError) on one NUL byte in a row;
    the rejected line is stored with the NUL written visibly as ``\\x00``."""
    garbage = (
        "1510185600,2017-11-09 00:00:00,ETH/USD,308.0,3\x0029.0,307.05,320.0,8237.34,2613140.4"
    )
    path = tmp_path / KEY.file_name
    path.write_text("\n".join([HEADER, *ROWS[:2], garbage]) + "\n")
    assert CliRunner().invoke(app, ["db", "upgrade"]).exit_code == 0
    result = CliRunner().invoke(app, ["ingest", "--source", str(path)])
    assert result.exit_code == 0, result.output
    engine = make_engine(service_database)
    (reject,) = load_rejects(engine, series=KEY)
    assert reject.line == 4 and "\x00" not in reject.raw + reject.reason
    assert reject.raw == garbage.replace("\x00", "\\x00")
    assert len(load_candles(engine, KEY.key)) == 2
    engine.dispose()


def test_a_nul_byte_in_a_file_level_error_is_recorded_as_failed(
    service_database: str, tmp_path: Path
):
    """A NUL quoted in a file-level error left the run ``running`` on PostgreSQL."""
    path = tmp_path / KEY.file_name
    path.write_text("\n".join([HEADER.replace("Volume USD", "Vol\x00ume USD"), *ROWS]) + "\n")
    assert CliRunner().invoke(app, ["db", "upgrade"]).exit_code == 0
    result = CliRunner().invoke(app, ["ingest", "--source", str(path)])
    assert result.exit_code == 1, result.output
    engine = make_engine(service_database)
    with engine.connect() as connection:
        (run,) = connection.execute(select(IngestRun.status, IngestRun.error)).all()
    engine.dispose()
    assert run.status == "failed" and "header has: " in run.error
    assert "Vol\\x00ume USD" in run.error
