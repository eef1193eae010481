"""Seeded synthetic candles and the tiny config shared by the forecaster tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecaster import ForecasterConfig

TINY = ForecasterConfig(
    window=7,
    horizon=3,
    units=8,
    batch_size=16,
    max_epochs=12,
    patience=12,
    learning_rate=1e-2,
    finetune_windows=32,
    seed=1,
)


def sine_candles(n: int = 240, seed: int = 0, start: str = "2021-01-01") -> pd.DataFrame:
    """Daily OHLCV candles whose close is a 14-day sine plus noise around 100."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    close = 100 + 10 * np.sin(2 * np.pi * t / 14) + rng.normal(0, 1, n)
    spread = np.abs(rng.normal(0, 1, n)) + 0.5
    return pd.DataFrame(
        {
            "open": np.r_[close[0], close[:-1]],
            "high": close + spread,
            "low": close - spread,
            "close": close,
            "volume_base": rng.lognormal(3, 0.5, n),
            "volume_quote": rng.lognormal(7, 0.5, n),
            "is_final": True,
        },
        index=pd.date_range(start, periods=n, freq="D", tz="UTC", name="time"),
    )


def random_walk(n: int = 300, seed: int = 0) -> pd.Series:
    """A geometric random walk of closes on daily UTC candles."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    return pd.Series(close, index=pd.date_range("2020-01-01", periods=n, freq="D", tz="UTC"))
