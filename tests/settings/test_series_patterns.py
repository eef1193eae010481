"""CDDF_SERIES with patterns: what settings can check before the catalogue is read."""

from __future__ import annotations

import pytest

from settings import SettingsError, get_settings


def test_patterns_and_keys_side_by_side(monkeypatch) -> None:
    monkeypatch.setenv("CDDF_SERIES", "Binance_*USDT_d, Bitstamp_*_1h ,Bitstamp_BTCUSD_d,Kraken_*")
    monkeypatch.setenv("CDDF_TIMEFRAME_SETTINGS", '{"1h": {"horizon": 12}}')
    monkeypatch.setenv("CDDF_SERIES_SETTINGS", '{"Binance_BTCUSDT_d": {"window": 14}}')
    settings = get_settings()
    assert settings.series == ["Binance_*USDT_d", "Bitstamp_*_1h", "Bitstamp_BTCUSD_d", "Kraken_*"]
    # a series a pattern selects takes its own settings; the pattern, its timeframe's
    assert settings.series_config("Binance_BTCUSDT_d").forecaster.window == 14
    assert settings.series_config("Binance_ETHUSDT_d").forecaster.window == 7
    assert settings.series_config("Bitstamp_*_1h").forecaster.horizon == 12
    with pytest.raises(ValueError, match="Kraken_\\* names no timeframe"):
        settings.series_config("Kraken_*")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CDDF_SERIES", "Binance_*_4h", "Binance_\\*_4h has unknown timeframe '4h'"),
        ("CDDF_SERIES", "Binance_[AB]*_d", "invalid series pattern 'Binance_\\[AB\\]\\*_d'"),
        ("CDDF_SERIES", "Binance_*_d,Binance_*_d", "Binance_\\*_d listed more than once"),
    ],
)
def test_a_bad_pattern_fails_at_start(monkeypatch, name: str, value: str, message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=f"CDDF_SERIES.*{message}"):
        get_settings()


def test_series_settings_must_match_a_listed_key_or_pattern(monkeypatch) -> None:
    monkeypatch.setenv("CDDF_SERIES", "Binance_*USDT_d,Bitstamp_BTCUSD_d")
    monkeypatch.setenv("CDDF_SERIES_SETTINGS", '{"Binance_ETHBTC_d": {"window": 3}}')
    with pytest.raises(SettingsError, match="Binance_ETHBTC_d.*nor selected by a pattern"):
        get_settings()
    monkeypatch.setenv("CDDF_SERIES_SETTINGS", '{"Binance_ETHUSDT_1h": {"window": 3}}')
    with pytest.raises(SettingsError, match="Binance_ETHUSDT_1h"):
        get_settings()


def test_series_settings_are_keyed_by_series_not_patterns(monkeypatch) -> None:
    monkeypatch.setenv("CDDF_SERIES", "Binance_*_d")
    monkeypatch.setenv("CDDF_SERIES_SETTINGS", '{"Binance_*_d": {"window": 3}}')
    with pytest.raises(SettingsError, match="names pattern.*use CDDF_TIMEFRAME_SETTINGS"):
        get_settings()


def test_settings_of_a_series_a_pattern_selects_are_checked(monkeypatch) -> None:
    monkeypatch.setenv("CDDF_SERIES", "Binance_*_d")
    monkeypatch.setenv("CDDF_TIMEFRAME_SETTINGS", '{"d": {"model_scope": "timeframe"}}')
    monkeypatch.setenv("CDDF_SERIES_SETTINGS", '{"Binance_BTCUSDT_d": {"window": 3}}')
    with pytest.raises(SettingsError, match="CDDF_SERIES_SETTINGS.*cannot be set per series"):
        get_settings()


def test_a_pattern_naming_a_timeframe_checks_that_timeframe_s_config(monkeypatch) -> None:
    monkeypatch.setenv("CDDF_SERIES", "Binance_*_1h")
    monkeypatch.setenv("CDDF_FORECASTER", '{"interval_levels": [0.5]}')
    with pytest.raises(SettingsError, match="interval_levels must include"):
        get_settings()
