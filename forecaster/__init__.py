"""Windowed-LSTM forecasting of candle closes: train, fine-tune, predict with intervals,
baselines, metrics and walk-forward backtests. Standalone: numpy, pandas, SciPy and
TensorFlow/Keras only (never prefect, sqlalchemy, db or flows).

>>> from forecaster import ForecasterConfig, LSTMForecaster
>>> model = LSTMForecaster(ForecasterConfig(horizon=7)).fit(candles)   # doctest: +SKIP
>>> model.predict(candles)                                             # doctest: +SKIP

Progress goes to the ``forecaster`` logger at INFO (one line per epoch); it is silent
unless the application enables that level. TensorFlow is imported on first use of
`LSTMForecaster`, so the config, baselines and metrics load fast.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from forecaster.artifact import ArtifactError
from forecaster.baselines import DriftForecaster, NaiveForecaster, SeasonalNaiveForecaster
from forecaster.config import ForecasterConfig
from forecaster.holes import Hole, HoleError, find_holes, first_trainable, forecast_problem
from forecaster.limits import TrainingTimeout

if TYPE_CHECKING:
    from forecaster.model import LSTMForecaster

__version__ = "0.1.0"
__all__ = [
    "ArtifactError",
    "DriftForecaster",
    "ForecasterConfig",
    "Hole",
    "HoleError",
    "LSTMForecaster",
    "NaiveForecaster",
    "SeasonalNaiveForecaster",
    "TrainingTimeout",
    "find_holes",
    "first_trainable",
    "forecast_problem",
]

logging.getLogger("forecaster").addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    if name == "LSTMForecaster":
        from forecaster.model import LSTMForecaster

        return LSTMForecaster
    raise AttributeError(f"module 'forecaster' has no attribute {name!r}")
