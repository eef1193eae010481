"""Ingest and the CLI on both databases: revisions of final candles reported, limited, accepted."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy import Engine
from typer.testing import CliRunner

from cdd.series_key import SeriesKey
from db.candles import load_candles
from db.models import CandleRevision, IngestRun
from db.revisions import RevisionsRefusedError
from flows.cli import app
from flows.ingest import ingest_series
from tests.flows.cdd_files import make_candles, write_cdd_file

KEY = SeriesKey.parse("Bitstamp_BTCUSD_d")
CURRENT = make_candles(KEY, 60, start="2020-10-01")  # to 2020-11-29
TODAY = CURRENT.index[-1] + pd.Timedelta(days=1, hours=2)


@pytest.fixture
def engine(service_database: str, monkeypatch) -> Engine:
    from db.engine import get_engine, make_engine, migrate

    monkeypatch.setenv("CDDF_SERIES", KEY.key)
    setup = make_engine(service_database)
    migrate(setup)
    setup.dispose()
    return get_engine()


def runs(engine: Engine) -> list[IngestRun]:
    with engine.connect() as connection:
        return list(connection.execute(sa.select(IngestRun).order_by(IngestRun.id)).all())


def revision_rows(engine: Engine) -> list[tuple]:
    query = sa.select(CandleRevision.time, CandleRevision.ingest_run_id, CandleRevision.new_close)
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(query.order_by(CandleRevision.time))]


def old_download(folder: Path) -> Path:
    """A download of 2020-11-20: that day still open, two older days corrected since."""
    old = CURRENT.loc[:"2020-11-20"].copy()
    old.loc["2020-11-20", ["close", "low"]] = [old["close"].iat[-1] - 50, old["low"].iat[-1] - 60]
    old.loc[["2020-10-12", "2020-10-15"], "close"] += 25.0
    return write_cdd_file(folder, KEY, old)


def test_a_restated_close_is_stored_reported_and_recorded(engine, tmp_path):
    path = write_cdd_file(tmp_path, KEY, CURRENT)
    ingest_series(KEY.key, str(path), now=TODAY)
    restated = CURRENT.copy()
    low, high = restated.loc["2020-11-27", ["low", "high"]]
    restated.loc["2020-11-27", "close"] = round((low + high) / 2, 2)  # CDD restated it later
    write_cdd_file(tmp_path, KEY, restated)

    result = ingest_series(KEY.key, str(path), now=TODAY)

    assert (result.status, result.updated, result.revised) == ("success", 1, 1)
    assert runs(engine)[-1].revised == 1 and runs(engine)[0].revised == 0
    day = pd.Timestamp("2020-11-27", tz="UTC")
    assert revision_rows(engine) == [(day, result.run_id, restated.loc[day, "close"])]
    assert load_candles(engine, KEY.key).loc[day, "close"] == restated.loc[day, "close"]


def test_an_old_download_fails_clearly_and_writes_nothing(engine, tmp_path):
    ingest_series(KEY.key, str(write_cdd_file(tmp_path, KEY, CURRENT)), now=TODAY)
    (tmp_path / "old").mkdir()
    old = old_download(tmp_path / "old")

    with pytest.raises(RevisionsRefusedError) as refused:
        ingest_series(KEY.key, str(old), now=TODAY)

    message = str(refused.value)
    assert "Bitstamp_BTCUSD_d: the file revises 2 final candles already stored" in message
    assert "the oldest 2020-10-12 is 48 periods before the newest stored candle 2020-11-29" in (
        message
    )
    assert "--accept-revisions" in message
    failed = runs(engine)[-1]
    assert failed.status == "failed" and "RevisionsRefusedError" in failed.error
    assert revision_rows(engine) == []
    pd.testing.assert_frame_equal(
        load_candles(engine, KEY.key, final_only=False), CURRENT, check_freq=False
    )


def test_the_cli_accepts_revisions_and_keeps_newer_knowledge(engine, tmp_path):
    runner = CliRunner()
    ingest_series(KEY.key, str(write_cdd_file(tmp_path, KEY, CURRENT)), now=TODAY)
    (tmp_path / "old").mkdir()
    old = old_download(tmp_path / "old")

    refused = runner.invoke(app, ["ingest", "--source", str(old)])
    assert refused.exit_code == 1
    assert "revises 2 final candles" in refused.output

    accepted = runner.invoke(app, ["ingest", "--source", str(old), "--accept-revisions"])

    assert accepted.exit_code == 0, accepted.output
    row = next(line for line in accepted.stdout.splitlines() if f" {KEY.key} " in line)
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells[:7] == [KEY.key, "success", "51", "0", "2", "49", "2"]  # ... unchanged, revised
    run = runs(engine)[-1]
    assert (run.status, run.revised) == ("success", 2)
    days = pd.to_datetime(["2020-10-12", "2020-10-15"], utc=True)
    assert [(time, run_id) for time, run_id, _ in revision_rows(engine)] == [
        (days[0], run.id),
        (days[1], run.id),
    ]
    expected = CURRENT.copy()
    expected.loc[days, "close"] += 25.0  # accepted; 2020-11-20 keeps its final values
    pd.testing.assert_frame_equal(
        load_candles(engine, KEY.key, final_only=False), expected, check_freq=False
    )
