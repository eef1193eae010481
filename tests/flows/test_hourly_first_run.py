"""The first run of a new hourly series trains with the hourly defaults and stores a forecast.

The file is shaped like the shared Binance hourly files (2020 generation: unix in
milliseconds, newest row first, a tradecount column, ADA-sized prices, hours the exchange
skipped) and longer than the defaults' ``train_candles``, so the retrain shows which
candles it took. Issue 27 chose those defaults so that this run takes about a minute
(docs/benchmarks.md); the test checks what the run does, not its time.
"""

from __future__ import annotations

import pandas as pd
import pytest

from cdd.series_key import SeriesKey
from db.engine import make_engine, migrate
from db.forecasts import run_forecasts
from flows.daily import daily_flow
from settings import get_settings
from settings.series import TIMEFRAME_DEFAULTS
from tests.flows.cdd_files import make_candles, write_cdd_file

SERIES = "Binance_ADAUSDT_1h"
KEY = SeriesKey.parse(SERIES)
HOURLY = TIMEFRAME_DEFAULTS["1h"]
# hours the exchange skipped, as in the real file (a 3-hour maintenance and single hours)
SKIPPED = (300, 301, 302, 1200, 1900)


def hourly_candles(n: int) -> pd.DataFrame:
    """``n`` hours of an ADA-priced random walk (about 1.6 USDT) with the skipped hours out."""
    walk = make_candles(KEY, n, start="2021-01-01", seed=27)
    prices = ["open", "high", "low", "close"]
    walk[prices] = (walk[prices] * 1.6e-4).round(5)
    walk["volume_quote"] = (walk["volume_base"] * walk["close"]).round(8)
    return walk.drop(walk.index[list(SKIPPED)])


@pytest.fixture
def service(sqlite_url, monkeypatch, prefect_harness, tmp_path):
    """A fresh migrated SQLite service database with the service's own hourly settings."""
    monkeypatch.setenv("CDDF_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("CDDF_CHART_DIR", str(tmp_path / "charts"))
    for name in ("CDDF_FORECASTER", "CDDF_TIMEFRAME_SETTINGS", "CDDF_SERIES_SETTINGS"):
        monkeypatch.delenv(name, raising=False)
    engine = make_engine(sqlite_url)
    migrate(engine)
    yield engine
    engine.dispose()


def test_the_hourly_defaults_bound_the_first_training():
    # the first run's cost is set by these: none of them is left to ForecasterConfig's
    # daily-sized defaults (256 units, 200 epochs, patience 10)
    for name in ("units", "max_epochs", "patience", "batch_size", "train_candles", "window"):
        assert HOURLY.get(name) is not None, name
    config = get_settings().series_config(SERIES)
    assert config.forecaster.units == HOURLY["units"]
    assert config.forecaster.max_epochs == HOURLY["max_epochs"]
    assert config.train_candles == HOURLY["train_candles"]


def test_first_run_of_an_hourly_series_uses_the_hourly_defaults(service, tmp_path):
    candles = hourly_candles(HOURLY["train_candles"] + 300)
    source = write_cdd_file(tmp_path, KEY, candles, generation="2020")

    [outcome] = daily_flow([SERIES], source=str(source))

    assert outcome.failed_step is None, outcome.error
    assert outcome.ingest.inserted == len(candles)
    assert outcome.trained.action == "retrain"
    version = outcome.trained.version
    expected = get_settings().series_config(SERIES)
    assert version.config == expected.version_config()
    for name in ("units", "window", "horizon", "max_epochs", "patience", "batch_size"):
        assert version.config[name] == HOURLY[name], name
    # the retrain took the newest train_candles candles, not the whole file
    newest = candles.index[-HOURLY["train_candles"] :]
    assert pd.Timestamp(version.train_first) == newest[0]
    assert pd.Timestamp(version.train_last) == candles.index[-1]
    assert version.validation_metrics["best_epoch"] <= HOURLY["max_epochs"]

    forecast = run_forecasts(service, [outcome.forecast.run_id])
    hour = pd.Timedelta(hours=1)
    assert list(forecast["target_time"]) == [
        candles.index[-1] + h * hour for h in range(1, HOURLY["horizon"] + 1)
    ]
    assert forecast["value"].notna().all()
    assert (forecast["lower_80"] < forecast["upper_80"]).all()
