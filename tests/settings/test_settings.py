"""One Settings: timeframe defaults, overrides per timeframe and series, bad input at start."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from cdd.series_key import TIMEFRAMES
from db.engine import get_engine
from settings import SettingsError, get_settings
from settings.series import CANDLE_LENGTH, TIMEFRAME_DEFAULTS

BTC, ADA, ETH_MINUTE = "Bitstamp_BTCUSD_d", "Binance_ADAUSDT_1h", "Bitstamp_ETHUSD_minute"


def test_every_timeframe_has_defaults_that_suit_it():
    assert set(TIMEFRAME_DEFAULTS) == set(CANDLE_LENGTH) == set(TIMEFRAMES)
    assert all(CANDLE_LENGTH[name] == TIMEFRAMES[name] for name in TIMEFRAMES)
    settings = get_settings()
    daily, hourly, minute = (settings.series_config(key) for key in (BTC, ADA, ETH_MINUTE))
    # a daily series keeps the package's tuned config and retrains every 28 days on its newest
    # 1,000 candles, fine-tuned one epoch a day between (issue 27: the walk-forward's policy)
    assert (daily.forecaster.window, daily.forecaster.horizon, daily.train_candles) == (7, 7, 1000)
    assert (daily.retrain_after, daily.forecaster.finetune_epochs) == (28, 1)
    assert daily.version_config() == daily.forecaster.to_dict() | {"train_candles": 1000}
    # an hourly one forecasts the next 24 hours and retrains weekly on its newest 2,000
    # candles with a small network (issue 27: a first run in about a minute)
    assert (hourly.forecaster.horizon, hourly.train_candles, hourly.retrain_after) == (
        24,
        2_000,
        24 * 7,
    )
    assert (hourly.forecaster.units, hourly.forecaster.max_epochs) == (32, 30)
    assert hourly.version_config()["train_candles"] == 2_000
    # a minute one trains on a bounded number of candles
    assert minute.train_candles is not None and minute.train_candles <= 20_000
    assert minute.retrain_after == 24 * 60


def test_a_global_model_has_its_own_retrain_days_and_candles(monkeypatch):
    """A timeframe's global model takes group_retrain_after and group_series_candles, not the
    local models' retrain_after and train_candles: a daily one retrains weekly on every
    series' whole history (its figures in docs/benchmarks.md were measured so)."""
    monkeypatch.setenv(
        "CDDF_TIMEFRAME_SETTINGS",
        '{"d": {"model_scope": "timeframe"}, '
        '"1h": {"model_scope": "timeframe", "group_retrain_after": 48}}',
    )
    settings = get_settings()
    daily, hourly = settings.series_config(BTC), settings.series_config(ADA)
    assert (daily.train_candles, daily.retrain_after) == (None, 7)
    assert "train_candles" not in daily.version_config()
    assert (hourly.train_candles, hourly.retrain_after) == (2_000, 48)


def test_overrides_apply_in_order_every_series_timeframe_series(monkeypatch):
    monkeypatch.setenv("CDDF_SERIES", f"{BTC},{ADA},Kraken_ETHUSD_1h")
    monkeypatch.setenv("CDDF_FORECASTER", '{"units": 32, "horizon": 5}')
    monkeypatch.setenv("CDDF_TIMEFRAME_SETTINGS", '{"1h": {"horizon": 12, "retrain_after": 48}}')
    monkeypatch.setenv(
        "CDDF_SERIES_SETTINGS",
        f'{{"{ADA}": {{"horizon": 6, "train_candles": 500}}, "{BTC}": {{"window": 14}}}}',
    )
    settings = get_settings()
    btc, ada, eth = (settings.series_config(k) for k in (BTC, ADA, "Kraken_ETHUSD_1h"))
    assert (btc.forecaster.units, btc.forecaster.window, btc.forecaster.horizon) == (32, 14, 5)
    assert (eth.forecaster.horizon, eth.retrain_after, eth.train_candles) == (12, 48, 2_000)
    assert (ada.forecaster.horizon, ada.train_candles, ada.retrain_after) == (6, 500, 48)
    assert ada.forecaster.units == 32


def test_the_old_retrain_after_days_still_applies_in_each_timeframe(monkeypatch):
    monkeypatch.setenv("CDDF_RETRAIN_AFTER_DAYS", "3")
    settings = get_settings()
    assert settings.series_config(BTC).retrain_after == 3
    assert settings.series_config(ADA).retrain_after == 72
    monkeypatch.setenv("CDDF_TIMEFRAME_SETTINGS", '{"1h": {"retrain_after": 10}}')
    assert get_settings().series_config(ADA).retrain_after == 10  # the new setting wins


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("CDDF_MAX_PARALLEL_SERIES", "0", "CDDF_MAX_PARALLEL_SERIES: Input should be greater"),
        ("CDDF_TIMEFRAME_SETTINGS", '{"5m": {"horizon": 3}}', "unknown timeframe(s) ['5m']"),
        ("CDDF_SERIES", f"{BTC},Bitstamp_BTCUSD_4h", "Bitstamp_BTCUSD_4h has unknown timeframe"),
        ("CDDF_SERIES_SETTINGS", '{"Kraken_ETHUSD_d": {"window": 3}}', "not in CDDF_SERIES"),
        ("CDDF_SERIES_SETTINGS", f'{{"{BTC}": {{"window": 0}}}}', "window must be a positive"),
        ("CDDF_SERIES_SETTINGS", f'{{"{BTC}": {{"windw": 3}}}}', "unknown setting(s) ['windw']"),
        ("CDDF_TIMEFRAME_SETTINGS", '{"1h": {"train_candles": 0}}', "1h.train_candles"),
        ("CDDF_TIMEFRAME_SETTINGS", '{"d": {"train_candles": 10}}', "leaves no training window"),
        ("CDDF_FORECASTER", '{"units": -1}', "CDDF_FORECASTER: ForecasterConfig.units"),
        ("CDDF_FORECASTER", '{"interval_levels": [0.5]}', "interval_levels must include"),
        ("CDDF_FORECASTER", "[1, 2]", "CDDF_FORECASTER: Input should be a valid dictionary"),
        ("CDDF_FORECASTER", '{"units": ', "JSON objects"),
        ("CDDF_RETRAIN_AFTER_DAYS", "-1", "CDDF_RETRAIN_AFTER_DAYS"),
        ("CDDF_HTTP_RETRIES", "-1", "greater than or equal to 0"),
        ("CDDF_HTTP_CONNECT_TIMEOUT", "-1", "greater than 0"),
        ("CDDF_HTTP_READ_TIMEOUT", "0", "greater than 0"),
        ("CDDF_HTTP_MAX_BYTES", "-1", "greater than 0"),
        ("CDDF_HTTP_DEADLINE", "inf", "finite number"),
        ("CDDF_HTTP_READ_TIMEOUT", "nan", "finite number"),
        ("CDDF_LOCK_LEASE_SECONDS", "-5", "greater than 0"),
        ("CDDF_MAX_REJECTED_SHARE", "nan", "finite number"),
        ("CDDF_RETRAIN_BELOW_SKILL", "nan", "finite number"),
        ("CDDF_SERIES", f"{BTC},Kraken_ETHUSD_d,{BTC}", f"{BTC} listed more than once"),
    ],
)
def test_bad_settings_are_rejected_naming_the_variable(monkeypatch, variable, value, says):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        get_settings()
    assert says in str(raised.value)
    assert variable in str(raised.value)


def test_get_engine_checks_the_schema_once_per_url(sqlite_url, monkeypatch):
    monkeypatch.setenv("CDDF_DATABASE_URL", sqlite_url)
    engine = get_engine()  # migrates the empty file
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    for _ in range(15):
        assert get_engine() is engine
    assert statements == []
