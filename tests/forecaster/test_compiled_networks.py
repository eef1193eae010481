"""A retrain on a reused compiled network (`CompiledNetworks`) fits what a fresh build fits."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from forecaster import LSTMForecaster
from forecaster.network import CompiledNetworks
from tests.forecaster.synthetic import TINY, sine_candles

SAMPLED = dataclasses.replace(TINY, max_epochs=4, patience=4, batch_size=8, steps_per_epoch=3)


def members(seed: int) -> dict:
    return {f"Bitstamp_S{i}USD_d": sine_candles(120, seed=seed + i) for i in range(3)}


def same_fit(a: LSTMForecaster, b: LSTMForecaster) -> bool:
    weights = zip(a.network_.get_weights(), b.network_.get_weights(), strict=True)
    return a.history_ == b.history_ and all(np.array_equal(x, y) for x, y in weights)


@pytest.mark.parametrize(
    ("config", "data"),
    [
        (TINY, lambda seed: sine_candles(200, seed=seed)),  # a local model
        (SAMPLED, members),  # a global model's sampled epochs
        (dataclasses.replace(SAMPLED, series_embedding=2), members),  # with an embedding
    ],
    ids=["local", "global", "embedded"],
)
def test_a_reused_network_fits_what_a_fresh_one_fits(config, data):
    networks = CompiledNetworks()
    first = LSTMForecaster(config).fit(data(0), networks=networks)
    assert same_fit(first, LSTMForecaster(config).fit(data(0)))
    network = first.network_
    # the next retrain, on other candles, reuses the trained network: reset, the same fit
    second = LSTMForecaster(config).fit(data(5), networks=networks)
    assert second.network_ is network
    assert same_fit(second, LSTMForecaster(config).fit(data(5)))


def test_another_config_gets_a_network_of_its_own():
    networks = CompiledNetworks()
    small = LSTMForecaster(TINY).fit(sine_candles(200), networks=networks)
    wider = dataclasses.replace(TINY, units=12)
    other = LSTMForecaster(wider).fit(sine_candles(200), networks=networks)
    assert other.network_ is not small.network_
    assert same_fit(other, LSTMForecaster(wider).fit(sine_candles(200)))
