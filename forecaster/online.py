"""Online learning from a forecaster's own scored record: expert weights and interval scales.

Both are replayed from the record each time (scored forecasts in the order their actuals
arrived), so they need no stored state: they survive retrains and fine-tunes, and a backfill
that replays the same record up to its ``as_of`` gets the same numbers (point in time).

Everything is in log-return space relative to the close at ``as_of``, so BTC at $100,000 and
ADA at $0.40 are on one scale.

>>> import numpy as np
>>> experts = np.array([[0.01, 0.0], [0.02, 0.0], [0.01, 0.0]])   # (rounds, experts)
>>> actual = np.array([0.01, 0.02, 0.01])                          # expert 0 is always right
>>> aggregate_weights(experts, actual, prior=np.array([0.5, 0.5]), min_rounds=1).weights[0] > 0.5
np.True_
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Fewer scored rounds than this: the prior weights are served as they are.
MIN_ROUNDS = 10
# Quantile-tracking step of the interval scale, in units of the model's half-width.
SCALE_STEP = 0.02


@dataclass(frozen=True)
class Weights:
    """Convex weights of the experts after ``rounds`` scored rounds (``from_prior``: too few)."""

    weights: np.ndarray  # (experts,)
    rounds: int
    from_prior: bool


def aggregate_weights(
    experts: np.ndarray,
    actual: np.ndarray,
    *,
    prior: np.ndarray,
    min_rounds: int = MIN_ROUNDS,
) -> Weights:
    """Bernstein online aggregation (BOA) with the gradient trick and adaptive learning rates.

    ``experts`` ``(rounds, K)`` are the experts' forecasts and ``actual`` ``(rounds,)`` what
    happened, in time order. Each round linearises the square loss at the aggregate
    forecast ŷ: the instantaneous regret of expert k is r_k = 2(ŷ − y)(ŷ − x_k); weights are
    π_k η_k exp(η_k Σ(r_k − η_k r_k²)) with η_k = min(1/(2E_k), √(ln K / Σ r_k²)) and E_k a
    doubling bound of |r_k| (Wintenberger 2017). Its regret against the best convex
    combination grows as √(T ln K), so over time the aggregate is never much worse than the
    best expert — here, never much worse than the naive forecast. Rounds with a non-finite
    value are skipped: a NaN or infinite loss never reaches a weight.
    """
    experts = np.asarray(experts, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    prior = np.asarray(prior, dtype=np.float64)
    if experts.ndim != 2 or experts.shape[0] != actual.shape[0]:
        raise ValueError(
            f"experts {experts.shape} must be (rounds, experts) beside actual {actual.shape}"
        )
    if prior.shape != (experts.shape[1],) or (prior <= 0).any() or not np.isfinite(prior).all():
        raise ValueError(f"prior {prior} must be one positive weight per expert")
    prior = prior / prior.sum()
    usable = np.isfinite(experts).all(axis=1) & np.isfinite(actual)
    experts, actual = experts[usable], actual[usable]
    rounds = len(actual)
    if rounds < min_rounds:
        return Weights(prior, rounds, from_prior=True)

    # A plain-float loop: with a handful of experts it runs ~10x faster than numpy per round
    # (the service replays up to a thousand rounds per horizon at every forecast).
    k = len(prior)
    pi = [float(p) for p in prior]
    weights = list(pi)
    regret = [0.0] * k  # Σ (r - η r²)
    variance = [0.0] * k  # Σ r²
    bound = [float(np.finfo(np.float64).tiny)] * k
    eta = [math.inf] * k
    log_k = math.log(k) if k > 1 else 1.0
    for x, y in zip(experts.tolist(), actual.tolist(), strict=True):
        forecast = sum(w * xi for w, xi in zip(weights, x, strict=True))
        exponent = [0.0] * k
        for i in range(k):
            r = 2.0 * (forecast - y) * (forecast - x[i])  # positive: expert i beat the aggregate
            bound[i] = max(bound[i], 2.0 ** math.ceil(math.log2(max(abs(r), 1e-300))))
            variance[i] += r * r
            step = eta[i] if math.isfinite(eta[i]) else 1.0 / (2.0 * bound[i])
            regret[i] += r - step * r * r
            eta[i] = 1.0 / (2.0 * bound[i])
            if variance[i] > 0:
                eta[i] = min(eta[i], math.sqrt(log_k / variance[i]))
            exponent[i] = eta[i] * regret[i]
        top = max(exponent)
        raw = [pi[i] * eta[i] * math.exp(exponent[i] - top) for i in range(k)]
        total = sum(raw)
        if math.isfinite(total) and total > 0:
            weights = [value / total for value in raw]
    weights = np.array(weights)
    return Weights(weights, rounds, from_prior=False)


@dataclass(frozen=True)
class IntervalScale:
    """The factor on the model's half-width that tracks ``level`` coverage online."""

    scale: float
    rounds: int
    coverage: float  # realised coverage of the tracked intervals over the record


def tracked_scale(
    scores: np.ndarray, *, level: float, step: float = SCALE_STEP, start: float = 1.0
) -> IntervalScale:
    """Online quantile tracking of ``scores`` = |actual − centre| / half-width, in time order.

    The scale s moves by ``step`` × (miss − α) after each round (the P part of conformal PID
    control, Angelopoulos, Candès & Tibshirani 2023; adaptive conformal inference of Gibbs &
    Candès 2021 on the scale): it grows after misses and shrinks after hits, so the long-run
    miss rate converges to α = 1 − level whatever the data do, regime changes included.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    alpha = 1.0 - level
    scale, hits = start, 0
    for score in scores:
        miss = score > scale
        hits += not miss
        scale = max(0.0, scale + step * (float(miss) - alpha))
    coverage = hits / len(scores) if len(scores) else math.nan
    return IntervalScale(scale, len(scores), coverage)
