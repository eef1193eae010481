"""Fixtures: seeded synthetic candles and one tiny LSTM fitted once per session."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.forecaster.synthetic import TINY, sine_candles


@pytest.fixture(scope="session")
def candles() -> pd.DataFrame:
    return sine_candles()


@pytest.fixture(scope="session")
def fitted(candles: pd.DataFrame):
    """A tiny LSTM fitted once for the session; copy it (from_bytes) before mutating."""
    from forecaster import LSTMForecaster

    return LSTMForecaster(TINY).fit(candles)
