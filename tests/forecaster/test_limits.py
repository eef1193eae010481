"""Training stops itself at its time limit, between batches, in any thread."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from forecaster import LSTMForecaster, TrainingTimeout
from forecaster.limits import TimeLimit
from tests.forecaster.synthetic import TINY

# a fit that would go on for hours: only the limit ends it
ENDLESS = dataclasses.replace(TINY, max_epochs=100_000, patience=100_000, batch_size=8)


def test_a_fit_past_its_limit_stops_after_the_batch_and_keeps_nothing(candles):
    model = LSTMForecaster(ENDLESS)
    with pytest.raises(TrainingTimeout, match=r"fit epoch 1/100000, batch 1: its time limit"):
        model.fit(candles, time_limit=1e-6)
    assert not model.is_fitted


def test_a_fine_tune_past_its_limit_stops_after_the_batch(fitted, candles):
    model = LSTMForecaster.from_bytes(fitted.to_bytes())
    with pytest.raises(TrainingTimeout) as raised:
        model.update(candles, epochs=50, time_limit=1e-6)
    assert raised.value.where == "update epoch 1/50, batch 1"
    assert raised.value.seconds > 1e-6


def test_a_fit_in_a_worker_thread_stops_at_its_limit(candles):
    """What Prefect's timeout cannot do to a task in a thread: the fit ends ~on time."""
    ended: list[BaseException] = []

    def train() -> None:
        try:
            LSTMForecaster(ENDLESS).fit(candles, time_limit=3)
        except BaseException as error:  # recorded for the main thread's assertions
            ended.append(error)

    started = time.monotonic()
    worker = threading.Thread(target=train)
    worker.start()
    worker.join(120)  # a limit that does not work fails the test, never hangs it
    took = time.monotonic() - started
    assert not worker.is_alive(), "the fit ran on past its 3 s limit for 120 s"
    (error,) = ended
    assert isinstance(error, TrainingTimeout) and isinstance(error, TimeoutError)
    # a batch takes milliseconds; the first traces the network, seconds on a loaded machine
    assert 3 < error.seconds < 3 + 60 and took < 3 + 90
    assert "fit epoch" in error.where


def test_a_limit_must_be_positive():
    with pytest.raises(ValueError, match="time_limit must be > 0 seconds, got 0"):
        TimeLimit.of(0)
    assert TimeLimit.of(None) is None
