"""Probabilistic scores and the Diebold–Mariano test, on plain arrays.

>>> import numpy as np
>>> interval_score(np.array([9.0]), np.array([11.0]), np.array([12.0]), level=0.8)
array([12.])
>>> pinball_loss(np.array([9.0]), np.array([12.0]), quantile=0.1)
array([0.3])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def interval_score(
    lower: np.ndarray, upper: np.ndarray, actual: np.ndarray, *, level: float
) -> np.ndarray:
    """Winkler's interval score of central ``level`` intervals: width + 2/α × distance outside.

    Lower is better; a forecaster minimises its expectation by reporting the true α/2 and
    1 − α/2 quantiles (Gneiting & Raftery 2007), so it rewards both coverage and sharpness.
    """
    alpha = 1.0 - level
    below = np.clip(lower - actual, 0.0, None)
    above = np.clip(actual - upper, 0.0, None)
    return (upper - lower) + (2.0 / alpha) * (below + above)


def pinball_loss(forecast: np.ndarray, actual: np.ndarray, *, quantile: float) -> np.ndarray:
    """The quantile (pinball) loss of ``forecast`` as the ``quantile``-quantile of ``actual``."""
    error = actual - forecast
    return np.maximum(quantile * error, (quantile - 1.0) * error)


@dataclass(frozen=True)
class DieboldMariano:
    """The Diebold–Mariano test of equal accuracy of two forecasts (``a`` against ``b``).

    ``statistic`` > 0 means ``a`` has the larger mean loss; ``p_value`` is two-sided,
    ``p_worse`` one-sided for "``a`` is worse than ``b``" and ``p_better`` for "better".
    """

    statistic: float
    p_value: float
    p_worse: float
    p_better: float
    n: int
    mean_difference: float


def diebold_mariano(loss_a: np.ndarray, loss_b: np.ndarray, *, horizon: int) -> DieboldMariano:
    """DM test on paired losses of ``horizon``-step forecasts, in time order.

    h-step errors overlap, so the loss differences are autocorrelated up to lag h − 1: the
    long-run variance sums those autocovariances (Diebold & Mariano 1995), falling back to
    Bartlett (Newey–West) weights when the rectangular sum is not positive; the statistic
    gets the small-sample correction of Harvey, Leybourne & Newbold (1997) and is compared
    with Student's t with n − 1 degrees of freedom. Pairs with a non-finite loss are dropped.
    """
    from scipy import stats

    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    a, b = np.asarray(loss_a, dtype=np.float64), np.asarray(loss_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"loss_a {a.shape} and loss_b {b.shape} must pair one to one")
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]
    n = len(d)
    nan = DieboldMariano(math.nan, math.nan, math.nan, math.nan, n, math.nan)
    if n < max(3, horizon + 1):
        return nan
    mean = float(d.mean())
    variance = _long_run_variance(d - mean, lags=horizon - 1)
    if variance <= 0:
        if mean == 0:
            return DieboldMariano(0.0, 1.0, 0.5, 0.5, n, 0.0)
        return nan
    correction = math.sqrt((n + 1 - 2 * horizon + horizon * (horizon - 1) / n) / n)
    statistic = mean / math.sqrt(variance / n) * correction
    p_worse = float(stats.t.sf(statistic, df=n - 1))
    p_better = float(stats.t.cdf(statistic, df=n - 1))
    return DieboldMariano(
        statistic, min(1.0, 2 * min(p_worse, p_better)), p_worse, p_better, n, mean
    )


def _long_run_variance(centred: np.ndarray, *, lags: int) -> float:
    n = len(centred)
    autocov = [float(centred[k:] @ centred[: n - k]) / n for k in range(lags + 1)]
    rectangular = autocov[0] + 2 * sum(autocov[1:])
    if rectangular > 0:
        return rectangular
    bartlett = [1 - k / (lags + 1) for k in range(1, lags + 1)]
    return autocov[0] + 2 * sum(w * g for w, g in zip(bartlett, autocov[1:], strict=True))


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of p-values for testing them all at once (Holm 1979).

    Rejecting where the adjusted p-value is below α keeps the chance of any false rejection
    among them at α whatever their dependence (series of one market move together). A
    non-finite p-value stays nan and does not count among the tests.

    >>> holm(np.array([0.01, 0.04, 0.03, np.nan]))
    array([0.03, 0.06, 0.06,  nan])
    """
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = len(order)
    stepped = p[order] * (m - np.arange(m))  # the i-th smallest (from 0) × (m − i)
    adjusted[order] = np.minimum(np.maximum.accumulate(stepped), 1.0)
    return adjusted
