"""One global model for several series: windows per series, calibration per series, storage."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from forecaster import ForecasterConfig
from forecaster.pooled import MIN_SERIES_CALIBRATION
from tests.forecaster.synthetic import TINY, sine_candles

GLOBAL = dataclasses.replace(TINY, max_epochs=2, patience=2)
LENGTH = GLOBAL.window + GLOBAL.horizon


def scaled(candles: pd.DataFrame, factor: float) -> pd.DataFrame:
    """The same shape of candles at another price level (BTC vs ADA)."""
    out = candles.copy()
    out[["open", "high", "low", "close"]] *= factor
    return out


@pytest.fixture(scope="module")
def group() -> dict[str, pd.DataFrame]:
    return {
        "Bitstamp_BTCUSD_d": scaled(sine_candles(240, seed=1), 600.0),
        "Binance_ADAUSDT_d": scaled(sine_candles(240, seed=2), 0.004),
        "Binance_SOLUSDT_d": sine_candles(150, seed=3),  # too few validation windows of its own
        "Kraken_NEWUSD_d": sine_candles(LENGTH + 2, seed=4),  # 3 windows: kept out
    }


@pytest.fixture(scope="module")
def fitted(group):
    from forecaster import LSTMForecaster

    return LSTMForecaster(GLOBAL).fit(group)


def test_a_global_fit_uses_every_series_windows_never_across_two(fitted, group):
    windows = {key: len(frame) - LENGTH + 1 for key, frame in group.items()}
    trained = ("Bitstamp_BTCUSD_d", "Binance_ADAUSDT_d", "Binance_SOLUSDT_d")
    assert fitted.series_ == trained
    # windows are counted per series: joining the frames would add windows across series
    assert fitted.n_windows_ == sum(windows[key] for key in trained)
    assert list(fitted.skipped_series_) == ["Kraken_NEWUSD_d"]
    assert "3 window(s)" in fitted.skipped_series_["Kraken_NEWUSD_d"]
    assert fitted.training_range_ == (
        min(frame.index[0] for frame in group.values()),
        max(group[key].index[-1] for key in trained),
    )


def test_series_with_enough_validation_windows_get_their_own_calibration(fitted):
    assert fitted.calibration_ == {
        # their own shrinkage; intervals shared (fewer than series_interval_windows windows)
        "Bitstamp_BTCUSD_d": "pooled intervals",
        "Binance_ADAUSDT_d": "pooled intervals",
        "Binance_SOLUSDT_d": "pooled",  # round(141 * 0.2) = 28 < MIN_SERIES_CALIBRATION
    }
    assert set(fitted.series_calibration_) == {"Bitstamp_BTCUSD_d", "Binance_ADAUSDT_d"}
    assert MIN_SERIES_CALIBRATION > 28
    for key in fitted.series_:
        assert fitted.series_metrics_[key]["n_windows"] >= 1
    assert fitted.validation_metrics_["naive_rmse"] < 1  # relative prices: scale-free


def test_predict_takes_one_series_and_its_key(fitted, group):
    btc = group["Bitstamp_BTCUSD_d"]
    own = fitted.predict(btc, series="Bitstamp_BTCUSD_d")
    pooled = fitted.predict(btc)
    unknown = fitted.predict(btc, series="Nowhere_XYZUSD_d")
    pd.testing.assert_frame_equal(pooled, unknown)
    assert (own["value"] > 100 * 600 * 0.5).all()  # BTC's price level, not ADA's
    width = own["upper_95"] - own["lower_95"]
    assert not np.allclose(width, pooled["upper_95"] - pooled["lower_95"])
    ada = fitted.predict(group["Binance_ADAUSDT_d"], series="Binance_ADAUSDT_d")
    assert (ada["value"] < 1).all()


def test_a_series_kept_out_of_training_is_forecast_when_it_has_a_window(fitted, group):
    new = group["Kraken_NEWUSD_d"]
    forecast = fitted.predict(new, series="Kraken_NEWUSD_d")  # pooled calibration
    assert len(forecast) == GLOBAL.horizon
    with pytest.raises(ValueError, match="too short"):
        fitted.predict(new.iloc[:1], series="Kraken_NEWUSD_d")


def test_a_group_of_different_timeframes_is_refused_naming_them(group):
    from forecaster import LSTMForecaster

    hourly = sine_candles(300, seed=5)
    hourly.index = pd.date_range("2021-01-01", periods=300, freq="h", tz="UTC", name="time")
    mixed = {"Bitstamp_BTCUSD_d": group["Bitstamp_BTCUSD_d"], "Binance_BTCUSDT_1h": hourly}
    with pytest.raises(ValueError, match="one timeframe") as caught:
        LSTMForecaster(GLOBAL).fit(mixed)
    assert "Bitstamp_BTCUSD_d: 1 days" in str(caught.value)
    assert "Binance_BTCUSDT_1h: 0 days 01:00:00" in str(caught.value)


def test_bad_candles_of_one_series_name_it(group):
    from forecaster import LSTMForecaster

    broken = group["Binance_ADAUSDT_d"].copy()
    broken.iloc[5, broken.columns.get_loc("close")] = np.nan
    with pytest.raises(ValueError, match="^Binance_ADAUSDT_d: candles column 'close'"):
        LSTMForecaster(GLOBAL).fit(
            {"Bitstamp_BTCUSD_d": group["Bitstamp_BTCUSD_d"], "Binance_ADAUSDT_d": broken}
        )


def test_no_series_with_enough_history_is_an_error_naming_each(group):
    from forecaster import LSTMForecaster

    with pytest.raises(ValueError, match="no series has enough history") as caught:
        LSTMForecaster(GLOBAL).fit({"Kraken_NEWUSD_d": group["Kraken_NEWUSD_d"]})
    assert "Kraken_NEWUSD_d: 3 window(s)" in str(caught.value)


def test_a_group_of_one_series_is_the_local_model(group):
    from forecaster import LSTMForecaster

    btc = group["Bitstamp_BTCUSD_d"]
    local = LSTMForecaster(GLOBAL).fit(btc)
    alone = LSTMForecaster(GLOBAL).fit({"Bitstamp_BTCUSD_d": btc})
    assert alone.series_ == ("Bitstamp_BTCUSD_d",)
    assert alone.calibration_ == {"Bitstamp_BTCUSD_d": "series"}
    pd.testing.assert_frame_equal(local.predict(btc), alone.predict(btc))
    pd.testing.assert_frame_equal(
        local.predict(btc), alone.predict(btc, series="Bitstamp_BTCUSD_d")
    )


def test_save_load_keeps_the_series_and_their_calibration(fitted, group):
    from forecaster import LSTMForecaster

    loaded = LSTMForecaster.from_bytes(fitted.to_bytes())
    assert loaded.series_ == fitted.series_
    assert loaded.skipped_series_ == fitted.skipped_series_
    assert loaded.calibration_ == fitted.calibration_
    for key in fitted.series_:
        pd.testing.assert_frame_equal(
            loaded.predict(group[key], series=key), fitted.predict(group[key], series=key)
        )


def test_update_fine_tunes_on_every_series_newest_windows_a_new_one_too(fitted, group):
    from forecaster import LSTMForecaster

    model = LSTMForecaster.from_bytes(fitted.to_bytes())
    newcomer = scaled(sine_candles(60, seed=7, start="2021-03-01"), 3.0)
    model.update({**group, "Coinbase_ETHUSD_d": newcomer}, epochs=1)
    assert model.update_series_ == (*group, "Coinbase_ETHUSD_d")
    # by default the 5 series share finetune_windows (32): the newest 32 // 5 windows of each
    each = GLOBAL.finetune_windows // 5
    expected = sum(min(each, len(f) - LENGTH + 1) for f in group.values())  # Kraken has 3
    assert model.update_windows_ == expected + each == 4 * 6 + 3
    assert model.calibration_ == fitted.calibration_  # calibration waits for a retrain
    assert model.training_range_[1] == group["Bitstamp_BTCUSD_d"].index[-1]
    before = fitted.predict(group["Bitstamp_BTCUSD_d"])["value"]
    assert not np.allclose(model.predict(group["Bitstamp_BTCUSD_d"])["value"], before)


def test_the_single_series_api_records_no_series(candles):
    from forecaster import LSTMForecaster

    model = LSTMForecaster(ForecasterConfig(**{**GLOBAL.to_dict()})).fit(candles)
    assert model.series_ == () and model.calibration_ == {}
    assert LSTMForecaster.from_bytes(model.to_bytes()).series_ == ()


@pytest.fixture(scope="module")
def embedded(group):
    from forecaster import LSTMForecaster

    return LSTMForecaster(dataclasses.replace(GLOBAL, series_embedding=3)).fit(group)


def test_a_series_embedding_gives_each_trained_series_its_own_forecast(embedded, group):
    btc = group["Bitstamp_BTCUSD_d"]
    assert embedded.embedded_
    rows = embedded.network_.get_layer("series_embedding").get_weights()[0]
    assert rows.shape == (len(embedded.series_) + 1, 3)  # one row per series, one for any other
    own = embedded.predict(btc, series="Bitstamp_BTCUSD_d")["value"]
    as_ada = embedded.predict(btc, series="Binance_ADAUSDT_d")["value"]
    unknown = embedded.predict(btc, series="Kraken_NEWUSD_d")["value"]
    assert not np.allclose(own, as_ada) and not np.allclose(own, unknown)
    assert (own > 0).all() and np.isfinite(unknown).all()


def test_an_embedded_model_saves_loads_and_fine_tunes_a_newcomer(embedded, group):
    from forecaster import LSTMForecaster
    from forecaster.artifact import ArtifactError

    loaded = LSTMForecaster.from_bytes(embedded.to_bytes())
    assert loaded.embedded_ and loaded.series_ == embedded.series_
    for key in (*embedded.series_, "Kraken_NEWUSD_d"):
        pd.testing.assert_frame_equal(
            loaded.predict(group[key], series=key), embedded.predict(group[key], series=key)
        )
    newcomer = scaled(sine_candles(60, seed=7, start="2021-03-01"), 3.0)
    before = embedded.network_.get_layer("series_embedding").get_weights()[0]
    loaded.update({**group, "Coinbase_ETHUSD_d": newcomer}, epochs=1)
    after = loaded.network_.get_layer("series_embedding").get_weights()[0]
    assert not np.allclose(before, after)  # the slots of the series it fine-tuned on moved
    assert np.isfinite(loaded.predict(newcomer, series="Coinbase_ETHUSD_d")["value"]).all()

    loaded.series_ = loaded.series_[:-1]  # metadata naming fewer series than the embedding's rows
    with pytest.raises(ArtifactError, match="series embedding has 4 rows .* names 2 series"):
        LSTMForecaster.from_bytes(loaded.to_bytes())


def test_a_single_series_fit_ignores_the_embedding(candles):
    from forecaster import LSTMForecaster

    config = dataclasses.replace(GLOBAL, series_embedding=3)
    model = LSTMForecaster(config).fit(candles)
    plain = LSTMForecaster(GLOBAL).fit(candles)
    assert not model.embedded_
    pd.testing.assert_frame_equal(model.predict(candles), plain.predict(candles))


def test_a_negative_embedding_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match="series_embedding must be an integer >= 0"):
        ForecasterConfig(series_embedding=-1)


def test_a_group_fine_tune_budget_is_shared_by_its_series(fitted, group):
    from forecaster import LSTMForecaster

    model = LSTMForecaster.from_bytes(fitted.to_bytes())
    model.config = dataclasses.replace(GLOBAL, group_finetune_windows=9)
    model.update(group, epochs=1)  # 4 series: the newest 9 // 4 = 2 windows of each
    assert model.update_series_ == tuple(group) and model.update_windows_ == 4 * 2

    model.config = dataclasses.replace(GLOBAL, group_finetune_windows=4 * 32)
    model.update(group, epochs=1)  # each series' finetune_windows (32): all 3 of Kraken's
    assert model.update_windows_ == 3 * 32 + 3

    model.config = dataclasses.replace(GLOBAL, group_finetune_windows=2)
    model.update(group, epochs=1)  # fewer windows than series: still one of each
    assert model.update_windows_ == 4
    model.update(group["Bitstamp_BTCUSD_d"], epochs=1)  # one series: finetune_windows
    assert model.update_windows_ == GLOBAL.finetune_windows
    with pytest.raises(ValueError, match="group_finetune_windows must be a positive integer"):
        dataclasses.replace(GLOBAL, group_finetune_windows=0)


def test_series_with_few_validation_windows_share_intervals_more_get_their_own(fitted, group):
    from forecaster import LSTMForecaster

    model = fitted  # default series_interval_windows: these series' intervals are shared
    own = LSTMForecaster(dataclasses.replace(GLOBAL, series_interval_windows=40)).fit(group)
    trained = ("Bitstamp_BTCUSD_d", "Binance_ADAUSDT_d")
    assert own.calibration_ == {**dict.fromkeys(trained, "series"), "Binance_SOLUSDT_d": "pooled"}
    # the same network (seeded), only the calibration differs
    pd.testing.assert_series_equal(
        own.predict(group[trained[0]], series=trained[0])["value"],
        model.predict(group[trained[0]], series=trained[0])["value"],
    )
    for key in trained:
        mine, theirs = model.series_calibration_[key], own.series_calibration_[key]
        np.testing.assert_array_equal(mine.shrinkage, theirs.shrinkage)  # still its own
        assert not np.allclose(mine.quantiles[0.8], theirs.quantiles[0.8])
    shared = model.series_calibration_["Bitstamp_BTCUSD_d"].quantiles
    for level, q in model.series_calibration_["Binance_ADAUSDT_d"].quantiles.items():
        np.testing.assert_array_equal(q, shared[level])  # one set of quantiles for both
    loaded = LSTMForecaster.from_bytes(model.to_bytes())
    pd.testing.assert_frame_equal(
        loaded.predict(group["Binance_ADAUSDT_d"], series="Binance_ADAUSDT_d"),
        model.predict(group["Binance_ADAUSDT_d"], series="Binance_ADAUSDT_d"),
    )
