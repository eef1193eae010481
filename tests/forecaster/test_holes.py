"""Series with holes: windows inside contiguous stretches, small holes filled before a forecast."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecaster import (
    ForecasterConfig,
    HoleError,
    LSTMForecaster,
    NaiveForecaster,
    find_holes,
    first_trainable,
    forecast_problem,
)
from forecaster.backtest import BacktestPolicy, walk_forward
from forecaster.windowing import block_starts
from tests.forecaster.synthetic import sine_candles

SMALL = ForecasterConfig(
    window=8,
    horizon=3,
    units=4,
    batch_size=32,
    max_epochs=3,
    patience=3,
    finetune_windows=16,
    seed=2,
)  # max_filled 2
HOURLY = pd.Timedelta("1h")


def hourly(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """``sine_candles`` on an hourly grid."""
    candles = sine_candles(n, seed)
    return candles.set_axis(pd.date_range("2021-04-20", periods=n, freq="h", tz="UTC", name="time"))


def holed(candles: pd.DataFrame, *holes: tuple[int, int]) -> pd.DataFrame:
    """``candles`` without the rows ``[start, stop)`` of each hole."""
    drop = np.concatenate([np.arange(start, stop) for start, stop in holes])
    return candles.drop(candles.index[drop])


# holes at the start, in the middle and at the end of the training range (all > max_filled)
THREE_HOLES = ((5, 8), (140, 143), (285, 289))


def contiguous_blocks(index: pd.DatetimeIndex, length: int) -> int:
    """Brute force: windows of ``length`` rows that are ``length`` consecutive hours."""
    return sum(
        index[i + length - 1] - index[i] == (length - 1) * HOURLY
        for i in range(len(index) - length + 1)
    )


def test_holes_are_found_with_the_missing_times():
    candles = holed(hourly(20), (3, 4), (10, 13))
    holes = find_holes(candles.index, HOURLY)
    assert [(h.after, h.before, h.missing) for h in holes] == [
        (pd.Timestamp("2021-04-20 02:00", tz="UTC"), pd.Timestamp("2021-04-20 04:00", tz="UTC"), 1),
        (pd.Timestamp("2021-04-20 09:00", tz="UTC"), pd.Timestamp("2021-04-20 13:00", tz="UTC"), 3),
    ]
    assert str(holes[1]) == "2021-04-20 10:00 .. 2021-04-20 12:00 (3 candles missing)"


def test_block_starts_never_span_a_hole():
    candles = holed(hourly(60), (10, 12), (30, 31))
    starts = block_starts(candles.index, HOURLY, 6)
    assert len(starts) == contiguous_blocks(candles.index, 6)
    for start in starts:
        assert candles.index[start + 5] - candles.index[start] == 5 * HOURLY


def test_fit_uses_every_contiguous_stretch_and_no_window_spans_a_hole():
    candles = holed(hourly(), *THREE_HOLES)
    # a jump across each hole: a window spanning one would see a move of log(3) ~ 1.1
    jumped = candles.copy()
    for start, _ in THREE_HOLES:
        after = candles.index >= hourly().index[start]
        jumped.loc[after, ["open", "high", "low", "close"]] *= 3.0
    model = LSTMForecaster(SMALL).fit(jumped)
    assert model.n_windows_ == contiguous_blocks(candles.index, SMALL.window + SMALL.horizon)
    assert model.training_range_ == (candles.index[0], candles.index[-1])
    assert model.period_ == HOURLY
    clean = LSTMForecaster(SMALL).fit(candles)
    np.testing.assert_allclose(model.transform_.target_scale, clean.transform_.target_scale)
    assert model.transform_.return_var == pytest.approx(clean.transform_.return_var)
    # the validation windows (the newest 20 %) are contiguous: same calibration as unjumped
    np.testing.assert_allclose(model.quantiles_[0.8], clean.quantiles_[0.8], rtol=1e-5)
    assert model.validation_metrics_["n_windows"] == clean.validation_metrics_["n_windows"]


def test_too_few_contiguous_windows_names_the_holes():
    candles = holed(hourly(40), (8, 9), (18, 19), (28, 29))
    with pytest.raises(ValueError, match=r"too short: 1 windows.*3 hole\(s\): 2021-04-20 08:00"):
        LSTMForecaster(SMALL).fit(candles)


def test_update_fine_tunes_on_contiguous_windows_only():
    candles = holed(hourly(), *THREE_HOLES)
    model = LSTMForecaster(SMALL).fit(candles)
    before = [w.copy() for w in model.network_.get_weights()]
    model.update(candles, epochs=1)
    assert model.update_windows_ == SMALL.finetune_windows
    after = model.network_.get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))
    # 3 candles before the end hole and the 11 after it hold a single window
    model.update(candles.iloc[-14:], epochs=1)
    assert model.update_windows_ == 1
    with pytest.raises(ValueError, match="no 11 consecutive candles.*1 hole"):
        model.update(holed(hourly(20), (9, 10)), epochs=1)


def test_predict_fills_a_small_hole_right_before_as_of():
    full = hourly()
    model = LSTMForecaster(SMALL).fit(full.iloc[:250])
    candles = holed(full, (257, 259))  # 2 hours missing just before as_of 259
    as_of = full.index[259]
    forecast = model.predict(candles, as_of=as_of)
    assert (forecast["filled"] == 2).all() and (forecast["as_of"] == as_of).all()
    assert list(forecast["target_time"]) == [as_of + h * HOURLY for h in (1, 2, 3)]
    # the same as forecasting from the candles with the hole filled by hand
    by_hand = full.iloc[:260].copy()
    last_close = full["close"].iloc[256]
    by_hand.loc[by_hand.index[257:259], ["open", "high", "low", "close"]] = last_close
    by_hand.loc[by_hand.index[257:259], ["volume_base", "volume_quote"]] = 0.0
    expected = model.predict(by_hand)
    assert (expected["filled"] == 0).all()
    np.testing.assert_allclose(forecast["value"], expected["value"])
    np.testing.assert_allclose(forecast["upper_95"], expected["upper_95"])


def test_predict_refuses_a_hole_longer_than_it_may_fill_and_names_it():
    full = hourly()
    model = LSTMForecaster(SMALL).fit(full.iloc[:250])
    candles = holed(full, (255, 258))  # 3 missing, max_filled is 2
    hole = f"{full.index[255]:%Y-%m-%d %H:%M} .. {full.index[257]:%Y-%m-%d %H:%M}"
    with pytest.raises(HoleError, match=f"miss 3 candles.*{hole}"):
        model.predict(candles, as_of=full.index[260])
    assert model.predict(candles, as_of=full.index[260], max_filled=3)["filled"].iloc[0] == 3
    assert model.predict(candles, as_of=full.index[265])["filled"].iloc[0] == 0  # window after
    problem = forecast_problem(candles.loc[: full.index[260]].index, SMALL)
    assert problem is not None and "at most 2 may be filled" in problem


def test_first_trainable_moves_past_the_holes():
    candles = hourly(60)
    assert first_trainable(candles.index, SMALL) == candles.index[SMALL.min_history - 1]
    with_hole = holed(candles, (4, 5))  # the first 4 candles hold no window
    start = first_trainable(with_hole.index, SMALL)
    assert start == candles.index[5 + SMALL.min_history - 1]
    LSTMForecaster(SMALL).fit(with_hole.loc[:start])
    with pytest.raises(ValueError, match="too short"):
        LSTMForecaster(SMALL).fit(with_hole.loc[:start].iloc[:-1])


def test_naive_baseline_never_scores_across_a_hole():
    candles = holed(hourly(40), (20, 23))
    naive = NaiveForecaster(horizon=2).fit(candles)
    forecast = naive.predict(candles, as_of=candles.index[19])
    assert list(forecast["target_time"]) == [candles.index[19] + h * HOURLY for h in (1, 2)]
    assert (forecast["value"] == candles["close"].iloc[19]).all()
    assert (
        NaiveForecaster(horizon=2).fit(candles).predict(candles)["value"].iloc[0]
        == (candles["close"].iloc[-1])
    )


def test_walk_forward_skips_unforecastable_as_ofs_and_leaves_hole_targets_unscored():
    full = hourly(120)
    candles = holed(full, (100, 104))  # 4 missing: the next 5 windows miss more than 2
    result = walk_forward(
        candles, SMALL, full.index[95], None, BacktestPolicy(retrain_every=50, finetune_epochs=0)
    )
    skipped = result.steps[result.steps["action"] == "skip"]
    assert list(skipped["as_of"]) == list(full.index[104:109])
    assert skipped["reason"].str.contains("at most 2 may be filled").all()
    forecasts = result.forecasts
    in_hole = forecasts["target_time"].isin(full.index[100:104])
    assert in_hole.sum() == 1 + 2 + 3  # as_ofs 97..99 reach into the hole
    scorable = ~in_hole & (forecasts["target_time"] <= full.index[-1])
    assert result.metrics.loc[0, "n"] == scorable.sum()
