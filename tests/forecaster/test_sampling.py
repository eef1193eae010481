"""A fit's epochs of a fixed number of batches drawn across every window (issue 26.4)."""

from __future__ import annotations

import dataclasses
import random
import threading

import keras
import numpy as np
import pytest

from forecaster import ForecasterConfig, LSTMForecaster
from forecaster.sampling import EpochDraws, validation_rows
from tests.forecaster.synthetic import TINY, sine_candles

SAMPLED = dataclasses.replace(TINY, max_epochs=3, patience=3, batch_size=8, steps_per_epoch=2)


def group(n: int) -> dict:
    return {f"Bitstamp_S{i}USD_d": sine_candles(160, seed=i) for i in range(n)}


def test_an_epoch_is_steps_batches_of_distinct_windows_a_new_draw_each_epoch():
    x, y = np.arange(100.0)[:, None, None], np.arange(100.0)
    epochs = EpochDraws([x, x], y, batch_size=8, steps=3, seed=5)
    drawn = []
    for _ in range(40):
        assert len(epochs) == 3
        rows = np.concatenate([epochs[i][1] for i in range(len(epochs))])
        assert len(rows) == 24 and len(set(rows)) == 24  # no window twice in one epoch
        inputs = epochs[0][0]
        assert isinstance(inputs, tuple) and (inputs[0][:, 0, 0] == epochs[0][1]).all()
        drawn.append(rows)
        epochs.on_epoch_end()
    assert not np.array_equal(drawn[0], drawn[1])
    assert len(set(np.concatenate(drawn))) == 100  # every window reaches training
    again = EpochDraws(x, y, batch_size=8, steps=3, seed=5)
    assert np.array_equal(np.concatenate([again[i][1] for i in range(3)]), drawn[0])


def test_fewer_windows_than_an_epoch_are_all_of_them_once():
    epochs = EpochDraws(np.zeros((10, 2, 1)), np.arange(10.0), batch_size=4, steps=50, seed=0)
    assert len(epochs) == 3
    assert sorted(np.concatenate([epochs[i][1] for i in range(3)])) == list(range(10))


def test_early_stopping_watches_a_fixed_seeded_sample_of_validation_windows():
    rows = validation_rows(1000, 64, seed=3)
    assert len(set(rows)) == 64 and np.array_equal(rows, validation_rows(1000, 64, seed=3))
    assert np.array_equal(validation_rows(10, 64, seed=3), np.arange(10))


def test_a_sampled_global_fit_is_reproducible_and_trains_on_every_series_whole_history():
    members = group(3)
    first = LSTMForecaster(SAMPLED).fit(members)
    second = LSTMForecaster(SAMPLED).fit(members)
    key = "Bitstamp_S1USD_d"
    assert first.predict(members[key], series=key).equals(second.predict(members[key], series=key))
    assert first.history_ == second.history_
    windows = 160 - SAMPLED.window - SAMPLED.horizon + 1
    assert first.n_windows_ == 3 * windows and list(first.series_) == list(members)


def test_an_epoch_costs_the_same_batches_whatever_the_number_of_series(monkeypatch):
    batches = []
    fit = keras.Model.fit

    def counted(self, *args, **kwargs):
        batches.append(len(kwargs["x"]))
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", counted)
    for n in (2, 6):
        LSTMForecaster(SAMPLED).fit(group(n))
    assert batches == [2, 2]


def test_steps_per_epoch_must_be_a_positive_integer_or_none():
    with pytest.raises(ValueError, match="steps_per_epoch"):
        ForecasterConfig(steps_per_epoch=0)
    assert ForecasterConfig().steps_per_epoch is None


def test_a_sampled_fit_is_the_same_while_another_thread_draws_from_python_s_random():
    """Keras shuffled a PyDataset's batches with Python's global ``random``, which other
    threads of the process (Prefect's) advance: the same fit came out otherwise now and then."""
    members, key = group(3), "Bitstamp_S1USD_d"
    config = dataclasses.replace(SAMPLED, steps_per_epoch=8)  # 8! orders of an epoch's batches
    alone = LSTMForecaster(config).fit(members).predict(members[key], series=key)
    stop = threading.Event()

    def draw() -> None:
        while not stop.is_set():
            random.random()

    other = threading.Thread(target=draw, daemon=True)
    other.start()
    try:
        beside = LSTMForecaster(config).fit(members).predict(members[key], series=key)
    finally:
        stop.set()
        other.join()
    assert alone.equals(beside)


def test_a_sampled_global_fit_with_a_series_embedding_trains_and_forecasts_each_series():
    # its batches carry two inputs (windows, series slots): Keras's PyDataset took no list
    members = group(2)
    model = LSTMForecaster(dataclasses.replace(SAMPLED, series_embedding=2)).fit(members)
    assert model.epochs_trained_ >= 1 and model.embedded_
    for key, candles in members.items():
        assert len(model.predict(candles, series=key)) == SAMPLED.horizon
