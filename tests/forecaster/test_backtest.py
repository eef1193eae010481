"""Walk-forward backtests: policy actions, point-in-time forecasts, scores."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from forecaster import NaiveForecaster
from forecaster.backtest import (
    BacktestPolicy,
    newest_candles,
    walk_forward,
    walk_forward_steps,
)
from tests.forecaster.synthetic import TINY, random_walk, sine_candles


def test_naive_walk_forward_scores_zero_skill():
    series = random_walk(200)
    result = walk_forward(
        series,
        lambda: NaiveForecaster(horizon=2),
        series.index[100],
        series.index[150],
        BacktestPolicy(retrain_every=10, finetune_epochs=0),
    )
    assert len(result.forecasts) == 51 * 2
    assert (result.forecasts["naive"] == result.forecasts["value"]).all()
    assert result.metrics.loc[0, "skill"] == pytest.approx(0.0)
    assert result.metrics.loc[1, "n"] == 51
    actions = result.steps["action"].tolist()
    assert actions[:11] == ["retrain"] + ["none"] * 9 + ["retrain"]


def test_lstm_walk_forward_follows_the_policy_and_never_looks_ahead():
    candles = sine_candles(150)
    config = dataclasses.replace(TINY, max_epochs=2)
    start, end = candles.index[120], candles.index[124]
    policy = BacktestPolicy(retrain_every=3, finetune_epochs=1)
    steps, trained_until = [], []
    for step in walk_forward_steps(candles, config, start, end, policy):
        steps.append(step)  # the model is live: look at it before the next step
        trained_until.append(step.model.training_range_[1])
    assert [s.action for s in steps] == ["retrain", "finetune", "finetune", "retrain", "finetune"]
    assert [s.as_of for s in steps] == list(candles.index[120:125])
    assert trained_until == [s.as_of for s in steps]
    assert all(s.forecast["naive"].iloc[0] == candles["close"].loc[s.as_of] for s in steps)
    # the future changed beyond recognition: every forecast up to that time is unchanged
    changed = candles.copy()
    changed.loc[changed.index > candles.index[122], ["close", "high", "low"]] *= 2.0
    again = list(walk_forward_steps(changed, config, start, candles.index[122], policy))
    for first, second in zip(steps[:3], again, strict=True):
        pd.testing.assert_frame_equal(first.forecast, second.forecast)


def test_walk_forward_result_scores_the_forecasts():
    candles = sine_candles(140)
    config = dataclasses.replace(TINY, max_epochs=2)
    result = walk_forward(
        candles, config, candles.index[125], None, BacktestPolicy(retrain_every=100)
    )
    assert result.steps["as_of"].iloc[-1] == candles.index[-1]
    # the last as-of times' targets are in the future: they are left out of the scores
    assert result.metrics.loc[1, "n"] == 14
    assert result.metrics.loc[3, "n"] == 12
    assert np.isfinite(result.metrics.loc[0, ["rmse", "coverage_80", "skill"]]).all()


def test_bad_ranges_and_policies_are_refused():
    series = random_walk(50)
    with pytest.raises(ValueError, match="no candle between"):
        walk_forward(series, lambda: NaiveForecaster(), "2030-01-01", "2030-02-01")
    with pytest.raises(ValueError, match="after end"):
        walk_forward(series, lambda: NaiveForecaster(), series.index[40], series.index[30])
    with pytest.raises(ValueError, match="retrain_every"):
        BacktestPolicy(retrain_every=0)


def test_a_group_shares_group_train_candles_each_series_its_newest():
    group = {key: sine_candles(100, seed=seed) for seed, key in enumerate("abc")}
    shared = newest_candles(group, group_train_candles=90)
    assert {key: len(frame) for key, frame in shared.items()} == {"a": 30, "b": 30, "c": 30}
    assert all(frame.index[-1] == group[key].index[-1] for key, frame in shared.items())
    assert len(newest_candles(group, 20, 90)["a"]) == 20  # train_candles caps each too
    assert len(newest_candles(group, None, 90, least=40)["b"]) == 40  # none drops out
    assert len(newest_candles(group["a"], 25, 90)) == 25  # one series: train_candles alone
    assert newest_candles(group) == group


def test_a_global_walk_forward_retrains_within_group_train_candles():
    group = {key: sine_candles(200, seed=seed) for seed, key in enumerate(("x_d", "y_d"))}
    config = dataclasses.replace(TINY, max_epochs=1)
    start = group["x_d"].index[150]
    policy = BacktestPolicy(retrain_every=10, finetune_epochs=0, group_train_candles=120)
    (step,) = walk_forward_steps(group, config, start, start, policy, series="x_d")
    assert step.action == "retrain"
    # each of the 2 series fitted on its newest 60 candles, up to the as-of
    assert step.model.training_range_ == (group["x_d"].index[91], start)
    with pytest.raises(ValueError, match="group_train_candles"):
        BacktestPolicy(group_train_candles=1)
