"""Every query of docs/sql.md runs on SQLite and PostgreSQL and finds the rows it is about."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from cdd.series_key import SeriesKey
from db.candles import upsert_candles
from db.engine import make_engine, migrate
from db.forecasts import runs, write_forecast_run, write_run_metrics, write_version_metrics
from db.ingest_rejects import store_rejects
from db.ingest_runs import finish_run, start_run
from db.registry import NewVersion, register_version
from tests.flows.cdd_files import make_candles

DOC = Path(__file__).parents[2] / "docs" / "sql.md"
QUERIES = re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.S)
KEY = SeriesKey.parse("Bitstamp_BTCUSD_d")
CANDLES = make_candles(KEY, 50, start="2025-08-10")  # up to 2025-09-28
METRICS = (
    "rmse",
    "mae",
    "mape",
    "smape",
    "mase",
    "direction",
    "coverage_80",
    "width_80",
    "coverage_95",
    "width_95",
    "naive_rmse",
    "skill",
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def analyst_database(request, tmp_path_factory):
    """A database with candles, two model versions, daily runs for a month and their scores."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sql-docs') / 'docs.sqlite'}"
        yield from _filled(url)
    else:
        from tests.conftest import POSTGRES_URL, require_postgres

        require_postgres()
        schema = f"sql_docs_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(POSTGRES_URL)
        with admin.begin() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        separator = "&" if "?" in POSTGRES_URL else "?"
        yield from _filled(f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}")
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _filled(url: str):
    engine = make_engine(url)
    migrate(engine)
    with Session(engine) as session, session.begin():
        upsert_candles(session, KEY, CANDLES)
    restated = CANDLES.copy()  # CryptoDataDownload restated a volume: one candle_revisions row
    restated.loc[CANDLES.index[-2], "volume_base"] += 1.0
    with Session(engine) as session, session.begin():
        assert upsert_candles(session, KEY, restated).revised == 1
    rejecting = start_run(engine, KEY, "Bitstamp_BTCUSD_d.csv")  # a file with one bad row
    with Session(engine) as session, session.begin():
        bad_row = SimpleNamespace(line=7, time=None, reason="high is empty", raw="1,x,BTC/USD")
        store_rejects(session, rejecting, KEY, [bad_row])
    finish_run(engine, rejecting, status="success", rejected_rows=1)
    closes = CANDLES["close"]
    for first_day, last_day in ((20, 34), (35, 46)):
        version = register_version(
            engine,
            NewVersion(
                series=KEY.key,
                kind="retrain",
                parent_id=None,
                config={"horizon": 3},
                train_first=CANDLES.index[0].to_pydatetime(),
                train_last=CANDLES.index[first_day].to_pydatetime(),
                n_windows=10,
                validation_metrics={"rmse": 1.0},
                artifact=b"model",
                device="CPU",
                train_seconds=1.0,
            ),
        )
        for day in range(first_day, last_day + 1):
            as_of = CANDLES.index[day]
            h = np.arange(1, 4)
            value = closes.iloc[day] * (1 + 0.01 * h)
            frame = pd.DataFrame(
                {
                    "as_of": as_of,
                    "target_time": as_of + pd.to_timedelta(h, unit="D"),
                    "horizon": h,
                    "value": value,
                    "lower_80": value * 0.97,
                    "upper_80": value * 1.03,
                    "lower_95": value * 0.95,
                    "upper_95": value * 1.05,
                    "naive": closes.iloc[day],
                }
            )
            weights = pd.DataFrame(
                {  # the served forecast's weights (schema 0005)
                    "horizon": np.repeat(h, 3),
                    "expert": ["lstm", "naive", "drift"] * 3,
                    "weight": [0.2, 0.7, 0.1] * 3,
                    "rounds": day - first_day,
                    "from_prior": False,
                }
            )
            run = write_forecast_run(engine, KEY.key, version.id, frame, weights=weights).run
            scores = pd.DataFrame(
                {name: [0.5] for name in METRICS}
                | {
                    "n": [3],
                    "first_target": [frame["target_time"].min()],
                    "last_target": [frame["target_time"].max()],
                },
                index=pd.Index([0], name="horizon"),
            )
            write_run_metrics(engine, run, scores)
        write_version_metrics(engine, KEY.key, version.id, scores, n_runs=last_day - first_day)
    assert len(runs(engine, KEY.key)) == 27
    yield engine
    engine.dispose()


def test_the_doc_has_its_queries():
    assert len(QUERIES) >= 8


@pytest.mark.parametrize("number", range(len(QUERIES)))
def test_each_documented_query_runs_and_finds_rows(analyst_database, number):
    with analyst_database.connect() as connection:
        rows = connection.execute(sa.text(QUERIES[number])).all()
    assert rows, f"query {number + 1} of docs/sql.md found nothing:\n{QUERIES[number]}"


def test_the_current_forecast_is_the_newest_runs(analyst_database):
    with analyst_database.connect() as connection:
        rows = connection.execute(sa.text(QUERIES[0])).all()
    assert [row.horizon for row in rows] == [1, 2, 3]
    newest = max(runs(analyst_database, KEY.key), key=lambda run: run.as_of)
    assert {row.model_version_id for row in rows} == {newest.model_version_id}
