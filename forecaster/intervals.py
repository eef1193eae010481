"""Split-conformal prediction intervals, per horizon, from validation residuals.

The residuals are taken in the network's scaled target space; the interval
``output ± q`` is mapped back to prices through the transform, so for ``logreturn``
targets the price bounds are multiplicative (asymmetric in dollars).

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


def residual_quantiles(
    residuals: np.ndarray, levels: tuple[float, ...]
) -> dict[float, np.ndarray]:
    """``{level: quantile per horizon}`` for every interval level."""
    return {level: conformal_quantiles(residuals, level) for level in levels}
