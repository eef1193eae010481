"""LSTMForecaster: training, fine-tuning, forecasting, leakage and storage (CPU, tiny)."""

from __future__ import annotations

import dataclasses
import logging
import random

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from forecaster import ArtifactError, ForecasterConfig, LSTMForecaster
from tests.forecaster.synthetic import TINY, random_walk, sine_candles

COLUMNS = [
    "as_of",
    "target_time",
    "horizon",
    "value",
    "lower_80",
    "upper_80",
    "lower_95",
    "upper_95",
    "filled",
]


def _copy(model: LSTMForecaster) -> LSTMForecaster:
    return LSTMForecaster.from_bytes(model.to_bytes())


def test_fit_lowers_the_validation_loss(fitted):
    losses = fitted.history_["val_loss"]
    assert min(losses) < 0.7 * losses[0]
    # shrinking toward naive is fitted on validation: it never makes that loss worse
    assert fitted.validation_metrics_["loss"] <= min(losses) * (1 + 1e-4)
    # the sine is predictable: the fitted model beats persistence and keeps most of its move
    assert fitted.validation_metrics_["skill"] > 0.1
    assert fitted.shrinkage_.shape == (TINY.horizon,)
    assert ((fitted.shrinkage_ > 0.3) & (fitted.shrinkage_ <= 1.0)).all()


def test_intervals_widen_after_turbulent_candles(fitted, candles):
    calm = fitted.predict(candles)
    turbulent = candles.copy()
    turbulent.iloc[-6:-1, turbulent.columns.get_loc("close")] *= [1.2, 0.8, 1.25, 0.85, 1.1]
    turbulent["high"] = turbulent[["high", "close"]].max(axis=1)
    turbulent["low"] = turbulent[["low", "close"]].min(axis=1)
    rough = fitted.predict(turbulent)

    def relative_width(f):
        return ((f["upper_80"] - f["lower_80"]) / f["value"]).to_numpy()

    assert (relative_width(rough) > 1.5 * relative_width(calm)).all()


def test_fitted_attributes(fitted, candles):
    assert fitted.training_range_ == (candles.index[0], candles.index[-1])
    assert fitted.n_windows_ == len(candles) - TINY.window - TINY.horizon + 1
    # where the test runs: the GPU when TensorFlow sees one (the device machine), else the CPU
    assert fitted.device_ == ("GPU" if tf.config.list_physical_devices("GPU") else "CPU")
    assert fitted.epochs_trained_ == len(fitted.history_["loss"]) <= TINY.max_epochs
    assert fitted.train_seconds_ > 0
    assert all(isinstance(v, float) for v in fitted.validation_metrics_.values())


def test_predict_shape_columns_and_ordered_intervals(fitted, candles):
    forecast = fitted.predict(candles)
    assert list(forecast.columns) == COLUMNS
    assert forecast["horizon"].tolist() == [1, 2, 3]
    assert (forecast["as_of"] == candles.index[-1]).all()
    expected = candles.index[-1] + pd.to_timedelta([1, 2, 3], unit="D")
    assert list(forecast["target_time"]) == list(expected)
    ordered = forecast[["lower_95", "lower_80", "value", "upper_80", "upper_95"]].to_numpy()
    assert (np.diff(ordered, axis=1) > 0).all()


def test_predict_as_of_uses_that_candle(fitted, candles):
    as_of = candles.index[150]
    forecast = fitted.predict(candles, as_of=as_of)
    assert (forecast["as_of"] == as_of).all()
    assert forecast.equals(fitted.predict(candles.loc[:as_of]))
    with pytest.raises(ValueError, match="not a candle time"):
        fitted.predict(candles, as_of=as_of + pd.Timedelta(hours=1))


def test_no_leakage_from_rows_after_as_of(fitted, candles):
    as_of = candles.index[180]
    changed = candles.copy()
    later = changed.index > as_of
    changed.loc[later, ["high", "low", "close"]] *= 3.0
    changed.loc[later, "close"] = np.nan  # even unusable rows after as_of do not matter
    pd.testing.assert_frame_equal(
        fitted.predict(candles, as_of=as_of), fitted.predict(changed, as_of=as_of)
    )


def test_transform_is_fitted_on_training_windows_only(candles):
    config = dataclasses.replace(TINY, max_epochs=1)
    model = LSTMForecaster(config).fit(candles)
    n_train = model.n_windows_ - int(model.validation_metrics_["n_windows"]) - (config.horizon - 1)
    first_unused = n_train + config.window + config.horizon - 1  # rows only validation sees
    changed = candles.copy()
    changed.iloc[first_unused:, changed.columns.get_loc("close")] *= 5.0
    other = LSTMForecaster(config).fit(changed)
    assert other.transform_.to_state() == model.transform_.to_state()
    changed.iloc[first_unused - 1, changed.columns.get_loc("close")] *= 5.0
    moved = LSTMForecaster(config).fit(changed)
    assert moved.transform_.to_state() != model.transform_.to_state()


def test_the_same_config_trains_to_the_same_weights_whatever_else_draws_random(
    candles, monkeypatch
):
    """Prefect's threads draw from Python's ``random`` at any time: training must not care."""
    import forecaster.model

    config = dataclasses.replace(TINY, max_epochs=2, dropout=0.1)
    train = candles.iloc[:120]
    alone = LSTMForecaster(config).fit(train).predict(train)

    build = forecaster.model.build_network

    def interrupted(*args, **kwargs):  # another thread draws between seeding and building
        random.random()
        return build(*args, **kwargs)

    monkeypatch.setattr(forecaster.model, "build_network", interrupted)
    pd.testing.assert_frame_equal(LSTMForecaster(config).fit(train).predict(train), alone)


def test_update_changes_the_weights_and_keeps_the_transform(fitted, candles):
    model = _copy(fitted)
    before = [w.copy() for w in model.network_.get_weights()]
    state = model.transform_.to_state()
    newer = sine_candles(260)  # the same series, 20 candles further
    model.update(newer, epochs=2)
    after = model.network_.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert model.transform_.to_state() == state
    assert model.training_range_ == (candles.index[0], newer.index[-1])
    assert len(model.history_["finetune_loss"]) == 2
    assert model.last_update_loss_ == model.history_["finetune_loss"][-1]
    assert model.update_windows_ == min(
        TINY.finetune_windows, len(newer) - TINY.window - TINY.horizon + 1
    )
    assert not model.predict(newer).equals(fitted.predict(newer))


def test_save_load_gives_identical_predictions(fitted, candles, tmp_path):
    path = fitted.save(tmp_path / "model.lstm.zip")
    loaded = LSTMForecaster.load(path)
    pd.testing.assert_frame_equal(loaded.predict(candles), fitted.predict(candles))
    assert loaded.config == fitted.config
    assert loaded.training_range_ == fitted.training_range_
    assert loaded.validation_metrics_ == fitted.validation_metrics_
    assert (loaded.n_windows_, loaded.device_) == (fitted.n_windows_, fitted.device_)


def test_to_bytes_round_trip(fitted, candles):
    blob = fitted.to_bytes()
    assert isinstance(blob, bytes)
    again = LSTMForecaster.from_bytes(blob)
    pd.testing.assert_frame_equal(again.predict(candles), fitted.predict(candles))
    # a loaded model can still be fine-tuned
    again.update(candles, epochs=1)


def test_corrupted_artifacts_are_artifact_errors(fitted):
    blob = bytearray(fitted.to_bytes())
    flipped = (
        bytes(blob[: len(blob) // 2])
        + bytes([blob[len(blob) // 2] ^ 0xFF])
        + bytes(blob[len(blob) // 2 + 1 :])
    )
    for bad in (flipped, bytes(blob[:-100]), b"not a model", b""):
        with pytest.raises(ArtifactError):
            LSTMForecaster.from_bytes(bad)
    assert issubclass(ArtifactError, ValueError)


def test_tampered_metadata_fails_the_checksum(fitted, tmp_path):
    import io
    import zipfile

    source = zipfile.ZipFile(io.BytesIO(fitted.to_bytes()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            if name == "metadata.json":
                data = data.replace(b'"window": 7', b'"window": 8')
            target.writestr(name, data)
    with pytest.raises(ArtifactError, match="checksum"):
        LSTMForecaster.from_bytes(buffer.getvalue())


def test_level_target_and_extra_features(candles):
    config = dataclasses.replace(
        TINY, target="level", features=("close", "range", "volume"), max_epochs=2
    )
    model = LSTMForecaster(config).fit(candles)
    forecast = model.predict(candles)
    assert forecast["value"].between(50, 150).all()
    assert model.transform_.target == "level"


def test_forecasts_at_price_levels_never_seen_in_training():
    series = random_walk(200)
    model = LSTMForecaster(dataclasses.replace(TINY, max_epochs=2)).fit(series)
    scaled_up = series * 1000.0
    relative = model.predict(scaled_up)["value"] / model.predict(series)["value"]
    np.testing.assert_allclose(relative, 1000.0, rtol=1e-4)


def test_unfitted_and_mismatched_use_is_refused(fitted, candles):
    with pytest.raises(RuntimeError, match="not fitted"):
        LSTMForecaster(TINY).predict(candles)
    hourly = candles.set_axis(pd.date_range("2021-01-01", periods=len(candles), freq="h", tz="UTC"))
    with pytest.raises(ValueError, match="trained on 1 days"):
        fitted.predict(hourly)
    with pytest.raises(ValueError, match="epochs"):
        _copy(fitted).update(candles, epochs=-1)


def test_progress_is_one_log_line_per_epoch_and_silent_by_default(candles, caplog, capsys):
    config = dataclasses.replace(TINY, max_epochs=2, patience=5)
    with caplog.at_level(logging.INFO, logger="forecaster"):
        LSTMForecaster(config).fit(candles)
    epochs = [r.getMessage() for r in caplog.records if " epoch " in r.getMessage()]
    assert len(epochs) == 2 and epochs[0].startswith("fit epoch 1/2 loss")
    caplog.clear()
    LSTMForecaster(config).fit(candles)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert not [r for r in caplog.records if r.levelno >= logging.INFO and r.name == "forecaster"]


def test_config_defaults_to_the_package_default():
    assert LSTMForecaster().config == ForecasterConfig()


def test_mixed_precision_trains_stores_and_fine_tunes(candles):
    config = dataclasses.replace(TINY, mixed_precision=True, max_epochs=2)
    model = LSTMForecaster(config).fit(candles.iloc[:120])
    assert model.network_.get_layer("m0_lstm0").dtype_policy.name == "mixed_float16"
    again = _copy(model)
    # the same weights; float16 arithmetic on a CPU may differ in its last digits from one
    # instance to another (oneDNN picks its kernels per instance on CPUs with AMX-FP16)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(again.network_.get_weights(), model.network_.get_weights(), strict=True)
    )
    pd.testing.assert_frame_equal(again.predict(candles), model.predict(candles), rtol=1e-4)
    again.update(candles, epochs=1, learning_rate=1e-3)
    assert np.isfinite(again.predict(candles)[COLUMNS[3:-1]].to_numpy()).all()
