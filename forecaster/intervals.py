"""Validation-calibrated forecasts: shrinkage toward naive and split-conformal intervals.

Both are fitted per horizon on the validation windows, in the network's scaled target
space. The residuals are divided by each window's relative volatility (`spread`), so an
interval ``output ± q * spread`` widens when the recent candles are turbulent; it is
mapped back to prices through the transform (multiplicative for ``logreturn``).

>>> import numpy as np
>>> q = conformal_quantiles(np.arange(1.0, 11.0)[:, None], 0.8)
>>> q.tolist()
[9.0]
"""

from __future__ import annotations

import math

import numpy as np


def conformal_quantiles(residuals: np.ndarray, level: float) -> np.ndarray:
    """The split-conformal quantile of ``|residuals|`` ``(n, horizon)`` for each horizon.

    Uses the finite-sample rank ``ceil((n + 1) * level)``, capped at the largest residual
    when the calibration set is too small for the level.
    """
    scores = np.sort(np.abs(residuals), axis=0)  # (n, horizon)
    n = scores.shape[0]
    if n == 0:
        raise ValueError("no validation windows to calibrate the intervals on")
    rank = min(n, math.ceil((n + 1) * level))
    return scores[rank - 1]


def residual_quantiles(residuals: np.ndarray, levels: tuple[float, ...]) -> dict[float, np.ndarray]:
    """``{level: quantile per horizon}`` for every interval level."""
    return {level: conformal_quantiles(residuals, level) for level in levels}


def shrinkage(predicted: np.ndarray, targets: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """Per-horizon factor in [0, 1] on the forecast's move away from naive (``anchor``).

    The least-squares factor of ``targets - anchor`` on ``predicted - anchor``, clipped:
    0 falls back to the naive forecast where validation finds no signal.

    >>> shrinkage(np.array([[1.0], [2.0]]), np.array([[0.5], [1.0]]), np.zeros((2, 1)))
    array([0.5])
    """
    move, actual = predicted - anchor, targets - anchor  # (n, horizon)
    power = (move**2).sum(axis=0)
    factor = np.divide(
        (move * actual).sum(axis=0), power, out=np.zeros_like(power), where=power > 0
    )
    return np.clip(factor, 0.0, 1.0)
