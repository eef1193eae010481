"""Shared pieces of the train / forecast / evaluate / daily tests: a tiny model, a service
database holding synthetic daily candles, and a way to add candles later."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from cdd.series_key import SeriesKey
from db.candles import upsert_candles
from db.engine import get_engine, make_engine, migrate
from settings import get_settings
from tests.flows.cdd_files import make_candles

SERIES = "Bitstamp_BTCUSD_d"
KEY = SeriesKey.parse(SERIES)
HORIZON = 3
TINY = (
    '{"units": 8, "max_epochs": 3, "patience": 1, "window": 7, "horizon": 3, '
    '"batch_size": 32, "finetune_windows": 16}'
)
N_CANDLES = 100
WEEKLY = '{"d": {"retrain_after": 7}}'
ALL_CANDLES = make_candles(KEY, N_CANDLES + 40, start="2020-01-01")


def candles_until(n: int) -> pd.DataFrame:
    """The first ``n`` synthetic candles (the same random walk in every test)."""
    return ALL_CANDLES.iloc[:n]


def store(engine: Engine, candles: pd.DataFrame) -> None:
    with Session(engine) as session, session.begin():
        upsert_candles(session, KEY, candles)


def start_service(monkeypatch: pytest.MonkeyPatch) -> Engine:
    """Migrate the service database of ``service_database`` and store 100 daily candles.

    The test modules wrap it in their ``service`` fixture, with ``service_database`` (SQLite
    and PostgreSQL) and ``prefect_harness``.
    """
    monkeypatch.setenv("CDDF_FORECASTER", TINY)
    # a retrain a week, as these tests were written (the daily default is 28 days since
    # issue 27: a 100-candle history would see few retrain days)
    monkeypatch.setenv("CDDF_TIMEFRAME_SETTINGS", WEEKLY)
    fresh = make_engine(get_settings().database_url.get_secret_value())
    migrate(fresh)
    fresh.dispose()
    engine = get_engine()
    store(engine, candles_until(N_CANDLES))
    return engine


def count_rebuilt_models(monkeypatch) -> list[int]:
    """The ids of the versions whose artifact is rebuilt into a model from now on (in order),
    starting with no model loaded by an earlier test."""
    import flows.versions

    rebuilt: list[int] = []
    real = flows.versions._from_bytes

    def counted(blob: bytes, version):
        rebuilt.append(version.id)
        return real(blob, version)

    monkeypatch.setattr(flows.versions, "_from_bytes", counted)
    monkeypatch.setattr(flows.versions, "_served", type(flows.versions._served)())
    return rebuilt
