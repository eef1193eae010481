"""Online aggregation and interval scale tracking: regret against the best expert, coverage."""

from __future__ import annotations

import numpy as np
import pytest

from forecaster.online import Bernstein, aggregate_many, aggregate_weights, tracked_scale


def random_walk_record(rounds: int, seed: int = 0):
    """A random walk's log returns, the naive forecast (0) and a noisy 'model' beside it."""
    rng = np.random.default_rng(seed)
    actual = rng.normal(0.0, 0.03, rounds)
    model = rng.normal(0.0, 0.03, rounds)  # no skill: pure noise around the truth's mean
    return np.column_stack([model, np.zeros(rounds)]), actual


def test_weights_move_to_naive_when_the_model_only_adds_noise():
    experts, actual = random_walk_record(1000)
    weights = aggregate_weights(experts, actual, prior=np.array([0.5, 0.5]))
    assert not weights.from_prior and weights.rounds == 1000
    assert weights.weights[1] > 0.8


def test_weights_move_to_the_expert_that_knows_something():
    rng = np.random.default_rng(1)
    signal = rng.normal(0.0, 0.02, 1000)
    actual = signal + rng.normal(0.0, 0.01, 1000)
    experts = np.column_stack([signal, np.zeros(1000)])
    weights = aggregate_weights(experts, actual, prior=np.array([0.2, 0.8]))
    assert weights.weights[0] > 0.8


def test_the_aggregate_is_never_much_worse_than_the_best_expert():
    """Replayed online, the aggregate's mean square error stays within a few % of naive's."""
    experts, actual = random_walk_record(2000, seed=2)
    prior = np.array([0.5, 0.5])
    served = [
        aggregate_weights(experts[:t], actual[:t], prior=prior).weights @ experts[t]
        for t in range(0, 2000, 10)
    ]
    truth = actual[::10]
    ratio = np.mean((np.array(served) - truth) ** 2) / np.mean(truth**2)
    assert ratio < 1.05


def test_too_few_rounds_serve_the_prior_and_say_so():
    experts, actual = random_walk_record(5)
    weights = aggregate_weights(experts, actual, prior=np.array([1.0, 3.0]), min_rounds=10)
    assert weights.from_prior and weights.rounds == 5
    assert weights.weights.tolist() == [0.25, 0.75]


def test_a_nan_or_infinite_value_never_reaches_a_weight():
    experts, actual = random_walk_record(200)
    experts[3, 0], actual[7], experts[9, 1] = np.nan, np.inf, -np.inf
    weights = aggregate_weights(experts, actual, prior=np.array([0.5, 0.5]))
    assert np.isfinite(weights.weights).all() and weights.rounds == 197
    assert weights.weights.sum() == pytest.approx(1.0)


def shrunk_then_noisy(agree: int, rounds: int, seed: int = 3):
    """A model wholly shrunk onto naive for ``agree`` rounds (equal up to round-off), then
    forecasting noise: the LSTM's record on a series where its first fits had no skill."""
    experts, actual = random_walk_record(rounds, seed)
    rng = np.random.default_rng(seed + 1)
    experts[:agree, 0] = rng.normal(0.0, 1e-16, agree)
    return experts, actual


def test_an_expert_equal_to_the_aggregate_up_to_round_off_leaves_the_prior():
    experts, actual = shrunk_then_noisy(agree=200, rounds=200)
    prior = np.array([0.1, 0.9])
    weights = aggregate_weights(experts, actual, prior=prior)
    assert not weights.from_prior
    assert weights.weights.tolist() == pytest.approx(prior.tolist(), abs=1e-12)
    (many,) = aggregate_many(
        experts[:, None, :], actual[:, None], prior=prior[None, :], quantile=np.array([np.nan])
    )
    assert many.weights.tolist() == pytest.approx(prior.tolist(), abs=1e-12)


def test_after_round_off_agreement_the_regrets_stay_on_the_scale_of_the_losses():
    """Round-off rounds once set a learning rate of ~1e16 whose −η r² penalty, applied to the
    first real difference, summed to regrets of ~1e8; as η then moved, the served BTC weights
    jumped from one expert wholly to the other on single rounds. Each round's step is now at
    most 1 / (2 |r|), so a regret moves by at most 1.5 |r| a round."""
    experts, actual = shrunk_then_noisy(agree=150, rounds=700)
    prior = np.array([0.1, 0.9])
    learner = Bernstein(prior)
    model = []
    for x, y in zip(experts.tolist(), actual.tolist(), strict=True):
        learner.update(x, y)
        model.append(learner.weights[0])
    assert max(abs(r) for r in learner._regret) < 1.0  # |r| ~ 1e-3 a round
    assert max(model) < 0.2


@pytest.mark.parametrize("prior", [np.array([1.0]), np.array([0.5, -0.5]), np.array([np.nan, 1])])
def test_a_bad_prior_is_refused(prior):
    experts, actual = random_walk_record(20)
    with pytest.raises(ValueError, match="prior"):
        aggregate_weights(experts, actual, prior=prior)


@pytest.mark.parametrize("level", [0.8, 0.95])
def test_the_tracked_scale_restores_coverage_after_a_regime_change(level):
    """Scores calibrated for a calm regime, then volatility doubles: coverage recovers."""
    rng = np.random.default_rng(3)
    half_width = {0.8: 1.2816, 0.95: 1.9600}[level]  # the calm regime's central quantile
    calm = np.abs(rng.normal(0, 1, 1500)) / half_width
    wild = np.abs(rng.normal(0, 2, 1500)) / half_width
    tracked = tracked_scale(np.concatenate([calm, wild]), level=level)
    assert abs(tracked.coverage - level) < 0.02
    assert tracked.scale > 1.5  # it widened for the wild regime


def test_the_scale_skips_non_finite_scores():
    tracked = tracked_scale(np.array([0.5, np.nan, np.inf, 2.0]), level=0.8)
    assert tracked.rounds == 2


def interval_score(scale, scores, widths, level):
    """Mean interval score of bands ±scale × width / 2 (score = distance / half-width)."""
    return np.mean(widths * (scale + (np.maximum(scores - scale, 0) / (1 - level))))


@pytest.mark.parametrize("level", [0.8, 0.95])
def test_width_weighted_tracking_finds_the_scale_of_the_best_interval_score(level):
    """Half the bands are wide and right, half narrow and too narrow: the plain tracker holds
    coverage by widening both, the width-weighted one (gradient descent on the interval score)
    settles near the scale whose interval score is lowest, at lower coverage."""
    rng = np.random.default_rng(5)

    def draw(n):
        wide = rng.random(n) < 0.5
        return np.abs(rng.normal(0, np.where(wide, 1.0, 2.0))) / 1.2816, np.where(wide, 3.0, 1.0)

    scores, widths = draw(4000)
    plain = tracked_scale(scores, level=level)
    weighted = tracked_scale(scores, level=level, widths=widths)
    assert abs(plain.coverage - level) < 0.025
    assert weighted.coverage < plain.coverage - 0.04
    fresh, fresh_widths = draw(20000)
    grid = np.linspace(0.5, 4.0, 351)
    best = grid[np.argmin([interval_score(s, fresh, fresh_widths, level) for s in grid])]
    assert abs(weighted.scale - best) < 0.15 < abs(plain.scale - best)
    assert interval_score(weighted.scale, fresh, fresh_widths, level) < interval_score(
        plain.scale, fresh, fresh_widths, level
    )


def test_equal_widths_track_as_no_widths():
    scores = np.abs(np.random.default_rng(6).normal(0, 1, 500))
    weighted = tracked_scale(scores, level=0.8, widths=np.full(500, 0.3))
    plain = tracked_scale(scores, level=0.8)
    assert weighted.scale == pytest.approx(plain.scale, abs=1e-9)
    assert (weighted.rounds, weighted.coverage) == (plain.rounds, plain.coverage)


def test_the_scale_skips_rounds_without_a_usable_width():
    scores = np.array([0.5, 0.7, 2.0, 0.1, 1.5])
    widths = np.array([1.0, np.nan, 0.0, -1.0, 2.0])
    assert tracked_scale(scores, level=0.8, widths=widths).rounds == 2
    with pytest.raises(ValueError, match="widths"):
        tracked_scale(scores, level=0.8, widths=widths[:3])


def test_many_learners_at_once_weigh_as_each_alone():
    """The vectorised replay (horizons × quantities in one pass) equals one learner at a time,
    whatever the learners' lengths, losses and skipped rounds."""
    rng = np.random.default_rng(4)
    rounds, learners = 300, 4
    experts = rng.normal(0, 0.02, (rounds, learners, 2))
    actual = experts[:, :, 0] * 0.5 + rng.normal(0, 0.02, (rounds, learners))
    experts[:40, 1] = np.nan  # a shorter learner: its first rounds padded
    actual[[7, 90], 2] = np.inf
    prior = np.array([[0.1, 0.9], [0.5, 0.5], [0.3, 0.7], [0.5, 0.5]])
    quantile = np.array([np.nan, 0.1, np.nan, 0.975])
    rate = np.array([0.39, 1.0, 1.0, 0.5])
    many = aggregate_many(experts, actual, prior=prior, quantile=quantile, rate=rate)
    for i in range(learners):
        alone = aggregate_weights(
            experts[:, i],
            actual[:, i],
            prior=prior[i],
            quantile=None if np.isnan(quantile[i]) else quantile[i],
            rate=rate[i],
        )
        assert many[i].rounds == alone.rounds
        np.testing.assert_allclose(many[i].weights, alone.weights, rtol=1e-9)
