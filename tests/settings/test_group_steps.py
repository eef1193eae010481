"""A global model's batches per fit epoch (issue 26.4): ``group_steps_per_epoch``."""

from __future__ import annotations

import pytest

from settings import SettingsError, get_settings

BTC, HOURLY = "Bitstamp_BTCUSD_d", "Bitstamp_BTCUSD_1h"


def steps(series: str = BTC) -> int | None:
    return get_settings().series_config(series).forecaster.steps_per_epoch


def test_a_daily_global_model_draws_50_batches_an_epoch_from_every_series_whole_history(
    monkeypatch,
):
    monkeypatch.setenv("CDDF_SERIES", f"{BTC},{HOURLY}")
    assert steps() is None  # a local model: every window each epoch
    monkeypatch.setenv("CDDF_TIMEFRAME_SETTINGS", '{"d": {"model_scope": "timeframe"}}')
    config = get_settings().series_config(BTC)
    assert config.forecaster.steps_per_epoch == 50
    assert config.group_train_candles is None and config.train_candles is None
    assert config.version_config()["steps_per_epoch"] == 50
    assert "group_train_candles" not in config.version_config()
    assert steps(HOURLY) is None  # hourly keeps its capped fit


def test_group_steps_per_epoch_is_set_per_timeframe_only(monkeypatch):
    monkeypatch.setenv("CDDF_SERIES", BTC)
    monkeypatch.setenv(
        "CDDF_TIMEFRAME_SETTINGS", '{"d": {"model_scope": "timeframe", "group_steps_per_epoch": 8}}'
    )
    assert steps() == 8


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CDDF_TIMEFRAME_SETTINGS", '{"d": {"group_steps_per_epoch": 0}}', "group_steps_per_epoch"),
        (
            "CDDF_SERIES_SETTINGS",
            f'{{"{BTC}": {{"group_steps_per_epoch": 8}}}}',
            "group_steps_per_epoch cannot be set per series",
        ),
    ],
)
def test_a_bad_group_steps_per_epoch_is_refused_at_start(monkeypatch, variable, value, message):
    monkeypatch.setenv("CDDF_SERIES", BTC)
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=message):
        get_settings()
