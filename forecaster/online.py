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
# Experts closer to the aggregate than this (in log return: a ten-thousandth of a percent)
# agree with it; the difference is round-off, not evidence. The LSTM shrunk wholly onto naive
# differs from it by ~1e-16, the network computes in float32 (~6e-8 relative), and BOA's
# scale-free learning rate (1 / (2 × the bound of |r|)) would otherwise act on such a
# difference as on a 1 % one.
AGREE = 1e-6
# Quantile-tracking step of the interval scale, in units of the model's half-width.
SCALE_STEP = 0.02
# A round's weight in the tracking: its band's width over the mean width of the last this many
# rounds (chosen on pre-test data: over all earlier rounds, BTC's coverage strayed to 0.787).
WIDTH_ROUNDS = 90


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
    quantile: float | None = None,
    rate: float = 1.0,
) -> Weights:
    """Bernstein online aggregation (BOA) with the gradient trick and adaptive learning rates.

    ``experts`` ``(rounds, K)`` are the experts' forecasts and ``actual`` ``(rounds,)`` what
    happened, in time order. Each round linearises the square loss at the aggregate
    forecast ŷ: the instantaneous regret of expert k is r_k = 2(ŷ − y)(ŷ − x_k); weights are
    π_k η_k exp(η_k Σ(r_k − η_k r_k²)) with η_k = min(1/(2E_k), √(ln K / Σ r_k²)) and E_k a
    doubling bound of |r_k| (Wintenberger 2017); the r² penalty of a round uses the η of the
    round before, capped at 1/(2E_k) with the bound that round raised, so η|r| ≤ 1/2 holds on
    every round as BOA's exponential inequality needs (a first real difference after rounds
    of agreement would otherwise meet a learning rate set by round-off). An expert within
    `AGREE` of the aggregate has no regret that round. Its regret against the best convex
    combination grows as √(T ln K), so over time the aggregate is never much worse than the
    best expert — here, never much worse than the naive forecast. With ``quantile`` τ the
    loss is the pinball loss of quantile τ instead (its slope at ŷ is 1{y < ŷ} − τ): the
    experts are forecasts of an interval bound, as in the aggregation of quantile forecasts.
    ``rate`` < 1 scales the √(ln K / Σ r²) part of η down: the weights leave the prior only on
    stronger evidence, which trades regret against the best expert for regret against the
    prior's favourite (`forecaster.aggregate.RATE`).
    Rounds with a non-finite value are skipped: a NaN or infinite loss never reaches a weight.
    """
    experts = np.asarray(experts, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if experts.ndim != 2 or experts.shape[0] != actual.shape[0]:
        raise ValueError(
            f"experts {experts.shape} must be (rounds, experts) beside actual {actual.shape}"
        )
    prior = _normalised(prior, (experts.shape[1],))
    usable = np.isfinite(experts).all(axis=1) & np.isfinite(actual)
    experts, actual = experts[usable], actual[usable]
    rounds = len(actual)
    if rounds < min_rounds:
        return Weights(prior, rounds, from_prior=True)

    aggregator = Bernstein(prior, quantile=quantile, rate=rate)
    for x, y in zip(experts.tolist(), actual.tolist(), strict=True):
        aggregator.update(x, y)
    return Weights(np.array(aggregator.weights), rounds, from_prior=False)


class Bernstein:
    """The state of `aggregate_weights`, one scored round at a time (``update``).

    A plain-float loop: with a handful of experts it runs ~10x faster than numpy per round
    (the service replays up to a thousand rounds per horizon at every forecast). Feeding the
    rounds one by one gives exactly the weights `aggregate_weights` gives for the same rounds.
    """

    def __init__(
        self, prior: np.ndarray, *, quantile: float | None = None, rate: float = 1.0
    ) -> None:
        self.rate = rate  # a factor on the adaptive learning rate's √(ln K / Σ r²) part
        self.quantile = quantile  # None: square loss; τ: the pinball loss of quantile τ
        self.pi = [float(p) for p in prior / prior.sum()]
        k = len(self.pi)
        self.weights = list(self.pi)
        self._regret = [0.0] * k  # Σ (r - η r²)
        self._variance = [0.0] * k  # Σ r²
        self._bound = [float(np.finfo(np.float64).tiny)] * k
        self._eta = [math.inf] * k
        self._log_k = math.log(k) if k > 1 else 1.0

    def update(self, x: list[float], y: float) -> None:
        """Learn from one round: the experts' forecasts ``x`` and what happened ``y``."""
        k = len(self.pi)
        forecast = sum(w * xi for w, xi in zip(self.weights, x, strict=True))
        regrets = self.regrets(forecast, x, y)
        exponent = [0.0] * k
        for i, r in enumerate(regrets):
            self._bound[i] = max(self._bound[i], 2.0 ** math.ceil(math.log2(max(abs(r), 1e-300))))
            self._variance[i] += r * r
            step = min(self._eta[i], 1.0 / (2.0 * self._bound[i]))  # η|r| ≤ 1/2, always
            self._regret[i] += r - step * r * r
            eta = 1.0 / (2.0 * self._bound[i])
            if self._variance[i] > 0:
                eta = min(eta, self.rate * math.sqrt(self._log_k / self._variance[i]))
            self._eta[i] = eta
            exponent[i] = eta * self._regret[i]
        top = max(exponent)
        raw = [self.pi[i] * self._eta[i] * math.exp(exponent[i] - top) for i in range(k)]
        total = sum(raw)
        if math.isfinite(total) and total > 0:
            self.weights = [value / total for value in raw]

    def regrets(self, forecast: float, x: list[float], y: float) -> list[float]:
        """Each expert's instantaneous regret (positive: it beat the aggregate ``forecast``):
        the loss linearised at the aggregate (the gradient trick)."""
        if self.quantile is None:
            slope = 2.0 * (forecast - y)  # d/dŷ (ŷ - y)²
        else:
            slope = float(y < forecast) - self.quantile  # d/dŷ of the pinball loss
        return [slope * (forecast - xi) if abs(forecast - xi) > AGREE else 0.0 for xi in x]


def aggregate_many(
    experts: np.ndarray,
    actual: np.ndarray,
    *,
    prior: np.ndarray,
    quantile: np.ndarray,
    rate: np.ndarray | float = 1.0,
    min_rounds: int = MIN_ROUNDS,
) -> list[Weights]:
    """`aggregate_weights` for L independent learners at once, vectorised over them.

    ``experts`` ``(rounds, L, K)``, ``actual`` ``(rounds, L)``, ``prior`` ``(L, K)``,
    ``quantile`` ``(L,)`` (NaN: the square loss), ``rate`` one per learner or one for all. A
    learner skips the rounds where its values are not finite (so learners with fewer rounds
    pad theirs with NaN, at the start). Gives the weights `aggregate_weights` gives each
    learner alone, up to float rounding; the service replays its 7 horizons × 5 quantities
    this way, in one pass over the rounds.
    """
    experts = np.asarray(experts, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    prior = _normalised(prior, experts.shape[1:])
    quantile = np.asarray(quantile, dtype=np.float64)
    square = np.isnan(quantile)[:, None]
    levels = quantile[:, None]
    rate = np.broadcast_to(np.asarray(rate, dtype=np.float64), quantile.shape)[:, None]
    usable = np.isfinite(experts).all(axis=2) & np.isfinite(actual)
    experts = np.where(usable[:, :, None], experts, 0.0)
    actual = np.where(usable, actual, 0.0)
    learners, k = prior.shape
    weights = prior.copy()
    regret = np.zeros((learners, k))
    variance = np.zeros((learners, k))
    bound = np.full((learners, k), np.finfo(np.float64).tiny)
    eta = np.full((learners, k), np.inf)
    log_k = math.log(k) if k > 1 else 1.0
    every = usable.all(axis=1)  # the rounds every learner takes: no masking needed
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for x, y, use, all_use in zip(experts, actual, usable[:, :, None], every, strict=True):
            if not all_use and not use.any():
                continue
            forecast = (weights * x).sum(axis=1, keepdims=True)
            target = y[:, None]
            slope = np.where(square, 2.0 * (forecast - target), (target < forecast) - levels)
            gap = forecast - x
            r = slope * np.where(np.abs(gap) > AGREE, gap, 0.0)
            new_bound = np.maximum(bound, 2.0 ** np.ceil(np.log2(np.maximum(np.abs(r), 1e-300))))
            new_variance = variance + r * r
            new_eta = 1.0 / (2.0 * new_bound)
            step = np.minimum(eta, new_eta)  # η|r| ≤ 1/2, always
            new_regret = regret + r - step * r * r
            new_eta = np.where(
                new_variance > 0, np.minimum(new_eta, rate * np.sqrt(log_k / new_variance)), new_eta
            )
            exponent = new_eta * new_regret
            raw = prior * new_eta * np.exp(exponent - exponent.max(axis=1, keepdims=True))
            total = raw.sum(axis=1, keepdims=True)
            good = np.isfinite(total) & (total > 0)
            if all_use:  # the same as the masked updates below, without their copies
                bound, variance, regret, eta = new_bound, new_variance, new_regret, new_eta
                weights = raw / total if good.all() else np.where(good, raw / total, weights)
                continue
            good &= use
            bound = np.where(use, new_bound, bound)
            variance = np.where(use, new_variance, variance)
            regret = np.where(use, new_regret, regret)
            eta = np.where(use, new_eta, eta)
            weights = np.where(good, raw / total, weights)
    rounds = usable.sum(axis=0)
    return [
        Weights(prior[i], int(rounds[i]), from_prior=True)
        if rounds[i] < min_rounds
        else Weights(weights[i], int(rounds[i]), from_prior=False)
        for i in range(learners)
    ]


def _normalised(prior: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``prior`` summing to 1 per learner; a clear error unless it is positive and finite."""
    prior = np.asarray(prior, dtype=np.float64)
    if prior.shape != shape or (prior <= 0).any() or not np.isfinite(prior).all():
        raise ValueError(f"prior {prior} must be one positive weight per expert")
    return prior / prior.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class IntervalScale:
    """The factor on the model's half-width that tracks ``level`` coverage online."""

    scale: float
    rounds: int
    coverage: float  # realised coverage of the tracked intervals over the record


def tracked_scale(
    scores: np.ndarray,
    *,
    level: float,
    step: float = SCALE_STEP,
    start: float = 1.0,
    widths: np.ndarray | None = None,
) -> IntervalScale:
    """Online quantile tracking of ``scores`` = |actual − centre| / half-width, in time order.

    The scale s moves by ``step`` × (miss − α) after each round (the P part of conformal PID
    control, Angelopoulos, Candès & Tibshirani 2023; adaptive conformal inference of Gibbs &
    Candès 2021 on the scale): it grows after misses and shrinks after hits, so the long-run
    miss rate converges to α = 1 − level whatever the data do, regime changes included.

    With ``widths`` (each round's band width before scaling) the step is weighted by the
    round's width over the mean of the last `WIDTH_ROUNDS` widths: the interval score is the
    width times the pinball loss of the score, so this is online gradient descent on the
    interval score itself. A miss of a wide band (where it costs most) moves s more than one
    of a narrow band, and the long-run width-weighted miss rate converges to α. Rounds whose
    score or width is not finite, or whose width is not positive, are skipped.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    scores = np.asarray(scores, dtype=np.float64)
    usable = np.isfinite(scores)
    if widths is not None:
        widths = np.asarray(widths, dtype=np.float64)
        if widths.shape != scores.shape:
            raise ValueError(f"widths {widths.shape} must be one per score {scores.shape}")
        usable &= np.isfinite(widths) & (widths > 0)
    scores = scores[usable]
    weights = np.ones(len(scores)) if widths is None else _relative(widths[usable])
    alpha = 1.0 - level
    scale, hits = start, 0
    for score, weight in zip(scores.tolist(), weights.tolist(), strict=True):
        miss = score > scale
        hits += not miss
        scale = max(0.0, scale + step * weight * (float(miss) - alpha))
    coverage = hits / len(scores) if len(scores) else math.nan
    return IntervalScale(scale, len(scores), coverage)


def _relative(widths: np.ndarray, rounds: int = WIDTH_ROUNDS) -> np.ndarray:
    """Each width over the mean of the last ``rounds`` widths up to and including it."""
    total = np.concatenate([[0.0], np.cumsum(widths)])
    end = np.arange(1, len(widths) + 1)
    begin = np.maximum(end - rounds, 0)
    return widths / ((total[end] - total[begin]) / (end - begin))
