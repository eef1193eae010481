"""Training blocks of one or several series, their calibration and validation scores.

A global model (`LSTMForecaster.fit` given a mapping ``{series key: candles}``) trains on
the windows of every series together. The target is scale-free (log returns relative to
each window's last close), so windows of BTC at $100,000 and ADA at $0.40 look alike.
Windows are built per series (never across two series, never across a hole) and every
series validates on its own newest windows. Shrinkage is calibrated per series where it has
at least `MIN_SERIES_CALIBRATION` validation windows, pooled otherwise; interval quantiles
too from ``config.series_interval_windows`` windows, below that (the default for a capped
global fit) from every series' validation windows together, each shrunk by its own factor.

>>> SeriesCalibration(np.array([0.5]), {0.8: np.array([1.0])}).to_state()
{'shrinkage': [0.5], 'quantiles': {'0.8': [1.0]}}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from forecaster.config import ForecasterConfig
from forecaster.intervals import residual_quantiles, shrinkage
from forecaster.transforms import WindowTransform
from forecaster.validation import infer_period
from forecaster.windowing import block_starts, feature_matrix, sliding, training_split

# Fewer validation windows than this: the series' intervals and shrinkage are the pooled
# ones. 40 windows give the 95 % conformal quantile a rank of 39 of 40 (not the maximum).
MIN_SERIES_CALIBRATION = 40


@dataclass(frozen=True)
class SeriesBlocks:
    """One series' training and validation blocks ``(n, window + horizon, feature)``."""

    key: str
    train: np.ndarray
    validation: np.ndarray
    n_windows: int
    first: pd.Timestamp
    last: pd.Timestamp


@dataclass(frozen=True)
class SeriesCalibration:
    """A series' own shrinkage ``(horizon,)`` and interval quantiles ``{level: (horizon,)}``."""

    shrinkage: np.ndarray
    quantiles: dict[float, np.ndarray]

    def to_state(self) -> dict[str, Any]:
        return {
            "shrinkage": self.shrinkage.tolist(),
            "quantiles": {str(level): q.tolist() for level, q in self.quantiles.items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SeriesCalibration:
        return cls(
            np.asarray(state["shrinkage"], dtype="float64"),
            {float(k): np.asarray(v, dtype="float64") for k, v in state["quantiles"].items()},
        )


def common_period(frames: Mapping[str, pd.DataFrame]) -> pd.Timedelta:
    """The one candle period of every series; a ValueError names series of different ones."""
    periods = {key: infer_period(frame.index) for key, frame in frames.items()}
    known = {key: period for key, period in periods.items() if period is not None}
    distinct = sorted(set(known.values()))
    if len(distinct) > 1:
        shown = ", ".join(f"{key}: {period}" for key, period in known.items())
        raise ValueError(
            f"a global model needs series of one timeframe, but their candles are spaced "
            f"differently ({shown}); train one model per timeframe"
        )
    if not distinct:
        raise ValueError(f"no series has 2 candles ({', '.join(frames)}); pass a longer history")
    return distinct[0]


def group_blocks(
    frames: Mapping[str, pd.DataFrame], config: ForecasterConfig, period: pd.Timedelta
) -> tuple[list[SeriesBlocks], dict[str, str]]:
    """Every series' blocks, and ``{series: why}`` for those kept out of training.

    A series with fewer than ``config.min_windows`` windows (or whose holes leave no
    training window before its validation windows) is kept out; none left is a ValueError.
    """
    length = config.window + config.horizon
    parts, skipped = [], {}
    for key, frame in frames.items():
        starts = block_starts(frame.index, period, length)
        if len(starts) < config.min_windows:
            skipped[key] = (
                f"{len(starts)} window(s) of {length} consecutive candles, a fit needs "
                f"{config.min_windows}"
            )
            continue
        try:
            train_at, validation_at = training_split(
                starts, config.window, config.horizon, config.validation_fraction
            )
        except ValueError as error:
            skipped[key] = str(error)
            continue
        if len(train_at) == 0:
            skipped[key] = "its holes leave no training window before the validation windows"
            continue
        raw = feature_matrix(frame, config.features, config.target)  # (time, feature)
        blocks = sliding(raw, length)  # (time - length + 1, length, feature)
        parts.append(
            SeriesBlocks(
                key,
                blocks[train_at],
                blocks[validation_at],
                len(starts),
                frame.index[0],
                frame.index[-1],
            )
        )
    if not parts:
        reasons = "; ".join(f"{key}: {why}" for key, why in skipped.items())
        raise ValueError(f"no series has enough history to train on ({reasons}); pass longer ones")
    return parts, skipped


def calibrate(
    raw: np.ndarray,
    targets: np.ndarray,
    anchor: np.ndarray,
    spread: np.ndarray,
    levels: tuple[float, ...],
) -> SeriesCalibration:
    """Shrinkage and conformal quantiles from validation forecasts ``(n, horizon)``."""
    factor = shrinkage(raw, targets, anchor)  # (horizon,)
    scaled = anchor + factor * (raw - anchor)
    return SeriesCalibration(
        factor, residual_quantiles((scaled - targets) / spread[:, None], levels)
    )


def own_slices(parts: list[SeriesBlocks]) -> dict[str, slice]:
    """Each series' rows in the concatenated validation blocks."""
    slices, first = {}, 0
    for part in parts:
        slices[part.key] = slice(first, first + len(part.validation))
        first += len(part.validation)
    return slices


def validation_scores(
    transform: WindowTransform,
    scaled: np.ndarray,
    targets: np.ndarray,
    validation: np.ndarray,
    factor: np.ndarray,
    best_epoch: int,
    relative: bool = False,
) -> dict[str, float]:
    """Loss (scaled space) and price RMSE/MAE against naive on validation blocks.

    ``scaled``: calibrated forecasts ``(n, horizon)``; ``relative``: prices divided by each
    window's last close (a group's pooled scores, so that one series' price level does not
    drown the others').
    """
    window = validation.shape[1] - targets.shape[1]
    predicted = transform.to_price(scaled, validation[:, :window])  # (n, horizon)
    raw_future = validation[:, window:, 0]
    actual = np.exp(raw_future) if transform.target == "logreturn" else raw_future
    naive = transform.last_close(validation[:, :window])[:, None]
    if relative:
        predicted, actual, naive = predicted / naive, actual / naive, np.ones_like(naive)
    rmse = float(np.sqrt(np.mean((predicted - actual) ** 2)))
    naive_rmse = float(np.sqrt(np.mean((naive - actual) ** 2)))
    return {
        "loss": float(np.mean((scaled - targets) ** 2)),
        "rmse": rmse,
        "mae": float(np.mean(np.abs(predicted - actual))),
        "naive_rmse": naive_rmse,
        "skill": 1.0 - rmse / naive_rmse if naive_rmse > 0 else float("nan"),
        "shrinkage": float(factor.mean()),
        "best_epoch": float(best_epoch),
        "n_windows": float(len(validation)),
    }
