"""``cdd-forecast ingest`` shows what the parser skipped, dropped and rejected."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from db.series_key import SeriesKey
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
