"""The served forecast: prior for a new series, point in time, NaN guard, adaptive intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecaster.aggregate import (
    EXPERTS,
    PRIOR,
    RATE,
    RECORD_COLUMNS,
    SCALE_STEPS,
    references,
    serve,
)
from forecaster.online import MIN_ROUNDS, tracked_scale

H = 3
DAYS = pd.date_range("2021-01-01", periods=900, freq="D", tz="UTC")


def closes(seed: int = 0) -> pd.Series:
    rng = np.random.default_rng(seed)
    return pd.Series(100 * np.exp(np.cumsum(rng.normal(0, 0.03, len(DAYS)))), index=DAYS)


def lstm_forecast(close: pd.Series, i: int, noise: np.ndarray, half: float) -> pd.DataFrame:
    """An 'LSTM' forecast as of day ``i``: the close moved by ``noise``, bands ± ``half`` √h."""
    h = np.arange(1, H + 1)
    c, as_of = float(close.iloc[i]), close.index[i]
    centre = c * np.exp(noise)
    return pd.DataFrame(
        {
            "as_of": as_of,
            "target_time": as_of + pd.to_timedelta(h, unit="D"),
            "horizon": h,
            "value": centre,
            "naive": c,
            "lower_80": centre * np.exp(-half * np.sqrt(h)),
            "upper_80": centre * np.exp(half * np.sqrt(h)),
            "lower_95": centre * np.exp(-2 * half * np.sqrt(h)),
            "upper_95": centre * np.exp(2 * half * np.sqrt(h)),
        }
    )


def replay(close: pd.Series, first: int, last: int, *, half: float = 0.03, seed: int = 1):
    """Serve every day first..last from the record of the earlier ones; returns the record."""
    rng = np.random.default_rng(seed)
    record = pd.DataFrame(columns=list(RECORD_COLUMNS))
    rows = []
    for i in range(first, last):
        served = serve(
            lstm_forecast(close, i, rng.normal(0, 0.03, H), half), close.iloc[: i + 1], record
        ).forecasts
        served["actual"] = close.reindex(served["target_time"]).to_numpy()
        rows.append(served[list(RECORD_COLUMNS)])
        record = pd.concat(rows, ignore_index=True)
    return record


@pytest.fixture(scope="module")
def record() -> pd.DataFrame:
    """Days 500..699 served one after the other; the model's bands a third too narrow."""
    return replay(closes(), 500, 700, half=0.01)


def test_a_new_series_is_served_with_the_prior_weights_and_says_so():
    close = closes()
    served = serve(
        lstm_forecast(close, 400, np.zeros(H), 0.03),
        close.iloc[:401],
        pd.DataFrame(columns=list(RECORD_COLUMNS)),
    )
    assert served.from_prior
    value = served.weights[served.weights["quantity"] == "value"]
    weights = value.pivot(index="horizon", columns="expert", values="weight")
    for expert in EXPERTS:
        assert weights[expert].tolist() == pytest.approx([PRIOR[expert]] * H)
    bounds = served.weights[served.weights["quantity"] != "value"]
    assert bounds["from_prior"].all() and (bounds["weight"] == 0.5).all()
    assert "weights from the prior at h=1..3 (0 scored forecasts" in served.summary()
    assert "a new series" in served.summary()


def test_weights_leave_naive_noise_out_and_never_do_much_worse_than_naive(record):
    scored = record[record["target_time"] >= DAYS[560]]  # past the prior rounds
    served = np.mean(((scored["value"] - scored["actual"]) / scored["naive"]) ** 2)
    naive = np.mean(((scored["naive"] - scored["actual"]) / scored["naive"]) ** 2)
    lstm = np.mean(((scored["lstm_value"] - scored["actual"]) / scored["naive"]) ** 2)
    assert lstm > 1.3 * naive  # the "LSTM" is noise
    assert served < 1.05 * naive


@pytest.mark.parametrize("day", [515, 540, 600, 699])
def test_with_the_gate_the_lstm_is_served_only_while_its_record_beats_the_naive(record, day):
    """``gate=True`` (not the service's rule: `GATE`), per horizon: the LSTM's square loss
    over the scored record (log returns, as the weights learn) below the naive's → the value
    the weights give; otherwise the naive itself, its weight 0 and the summary saying so. The
    weights behind the bounds are never touched."""
    close = closes()
    forecast = lstm_forecast(close, day, np.full(H, 0.02), 0.03)
    past = record[record["target_time"] <= DAYS[day]]
    gated = serve(forecast, close.iloc[: day + 1], past, gate=True)
    free = serve(forecast, close.iloc[: day + 1], past)
    bounds = gated.weights["quantity"] != "value"
    pd.testing.assert_frame_equal(gated.weights[bounds], free.weights[bounds])
    closed = []
    for h in range(1, H + 1):
        rows = past[past["horizon"] == h]
        lstm = np.log(rows["lstm_value"] / rows["naive"]).to_numpy()
        actual = np.log(rows["actual"] / rows["naive"]).to_numpy()
        ahead = np.sum((lstm - actual) ** 2) < np.sum(actual**2)
        served = gated.forecasts.set_index("horizon").loc[h]
        weights = gated.weights.query("quantity == 'value' and horizon == @h")
        if len(rows) < MIN_ROUNDS or ahead:
            assert served["value"] == free.forecasts.set_index("horizon").loc[h, "value"]
            continue
        closed.append(h)
        assert served["value"] == served["naive"]
        assert weights.set_index("expert")["weight"].to_dict() == {"lstm": 0.0, "naive": 1.0}
        assert not weights["from_prior"].any()
    if day >= 600:  # the "LSTM" is noise: its record is the worse one at every horizon
        assert closed == list(range(1, H + 1))
    assert ("naive alone at h=" in gated.summary()) == bool(closed)


def test_a_forecast_whose_target_is_after_as_of_never_counts(record):
    close = closes()
    i = 540  # record rows with targets after day 540 exist: they must change nothing
    forecast = lstm_forecast(close, i, np.full(H, 0.01), 0.03)
    cut = record[record["target_time"] <= DAYS[i]]
    later = record[record["target_time"] > DAYS[i]]
    assert len(later) and len(cut) >= 3 * 30
    served = serve(forecast, close.iloc[: i + 1], record)
    alone = serve(forecast, close.iloc[: i + 1], cut)
    pd.testing.assert_frame_equal(served.weights, alone.weights)
    pd.testing.assert_frame_equal(served.forecasts, alone.forecasts)
    assert served.weights.groupby("horizon")["rounds"].first().tolist() == [
        int((cut["horizon"] == h).sum()) for h in range(1, H + 1)
    ]


def test_a_nan_or_infinite_value_in_the_record_never_reaches_a_weight(record):
    close = closes()
    i = 540
    record = record[record["target_time"] <= DAYS[i]]
    forecast = lstm_forecast(close, i, np.full(H, 0.01), 0.03)
    broken = record.copy()
    broken.loc[3, "naive"] = np.nan  # every quantity is relative to naive: the round drops
    broken.loc[7, "actual"] = np.inf
    clean = record.drop(index=[3, 7])
    served = serve(forecast, close.iloc[: i + 1], broken)
    assert np.isfinite(served.weights["weight"]).all()
    np.testing.assert_allclose(
        served.weights["weight"], serve(forecast, close.iloc[: i + 1], clean).weights["weight"]
    )
    broken.loc[11, "lstm_value"] = 0.0  # log(0) = -inf: the value's weights skip the round
    broken.loc[12, "naive_lower_80"] = np.nan  # an old row without the naive's bounds
    broken.loc[13, "scale_95"] = np.nan
    served = serve(forecast, close.iloc[: i + 1], broken)
    assert np.isfinite(served.weights["weight"]).all()
    assert np.isfinite(served.forecasts[["value", "lower_80", "upper_95"]].to_numpy()).all()
    rounds = served.weights.set_index(["horizon", "quantity", "expert"])["rounds"]
    h = int(record.loc[11, "horizon"])
    assert rounds[h, "value", "lstm"] == rounds[h, "upper_80", "lstm"] - 1


def test_bands_keep_their_coverage_when_the_models_bands_miss_too_often(record):
    """The 'LSTM' bands are a third of the truth: the served bands lean on the naive's
    empirical bounds and the tracked scale, and cover about 80 % all the same."""
    close = closes()
    recent = record[record["target_time"] >= DAYS[600]]
    lstm_inside = (
        (recent["lstm_lower_80"] <= recent["actual"])
        & (recent["actual"] <= recent["lstm_upper_80"])
    ).mean()
    served_inside = (
        (recent["lower_80"] <= recent["actual"]) & (recent["actual"] <= recent["upper_80"])
    ).mean()
    assert lstm_inside < 0.5
    assert 0.7 < served_inside < 0.9
    forecast = lstm_forecast(close, 700, np.zeros(H), 0.01)
    served = serve(forecast, close.iloc[:701], record)
    bounds = served.weights[(served.weights["quantity"] != "value")]
    naive = bounds[bounds["expert"] == "naive"].groupby("quantity")["weight"].mean()
    assert (naive > 0.55).all()  # every bound learnt toward the naive's (prior 0.5), slowly
    out = served.forecasts
    assert (
        np.log(out["upper_80"] / out["lower_80"])
        > 2 * np.log(out["lstm_upper_80"] / out["lstm_lower_80"])
    ).all()
    assert (out["lower_95"] <= out["lower_80"]).all()
    assert (out["upper_95"] >= out["upper_80"]).all()


@pytest.mark.parametrize("name, level", [("80", 0.8), ("95", 0.95)])
def test_each_levels_scale_is_tracked_on_its_rounds_weighted_by_their_bands_width(
    record, name, level
):
    """The served scale of a level is `tracked_scale` of the record's rounds of that horizon
    scored by as_of, in target order: each round's score (the actual's distance outside the
    band over the band's unscaled distance to that bound), weighted by the unscaled band's
    width, at that level's step; a round whose band had a side collapsed onto the value is
    left out."""
    close = closes()
    served = serve(lstm_forecast(close, 700, np.zeros(H), 0.01), close.iloc[:701], record)
    collapsed = 0
    for horizon in range(1, H + 1):
        rows = record[(record["horizon"] == horizon) & (record["target_time"] <= DAYS[700])]
        rows = rows.sort_values("target_time", kind="stable")
        logs = {
            c: np.log(rows[c].to_numpy(float) / rows["naive"].to_numpy(float))
            for c in ("value", f"lower_{name}", f"upper_{name}", "actual")
        }
        scale = rows[f"scale_{name}"].to_numpy(float)
        below = (logs["value"] - logs[f"lower_{name}"]) / scale
        above = (logs[f"upper_{name}"] - logs["value"]) / scale
        one_sided = (below <= 0) | (above <= 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            scores = np.maximum(
                (logs["value"] - logs["actual"]) / below, (logs["actual"] - logs["value"]) / above
            )
        scores[one_sided] = np.nan  # no scale widens a side whose bound lay at the value
        expected = tracked_scale(scores, level=level, step=SCALE_STEPS[name], widths=below + above)
        unweighted = tracked_scale(scores, level=level, step=SCALE_STEPS[name])
        collapsed += int(one_sided.sum())
        got = served.forecasts.set_index("horizon").loc[horizon, f"scale_{name}"]
        assert got == pytest.approx(expected.scale, rel=1e-12)
        assert abs(got - unweighted.scale) > 1e-6  # the widths did weigh
    assert collapsed > 0  # the fixture's narrow 'LSTM' bands leave some bands one-sided
    assert SCALE_STEPS["95"] < SCALE_STEPS["80"]


def test_references_are_drift_and_trailing_empirical_quantiles():
    close = closes()
    refs = references(close.iloc[:500], np.arange(1, H + 1), periods=365)
    logs = np.log(close.iloc[:500].to_numpy())
    moves = (logs[2:] - logs[:-2])[-365:]
    low, high = np.quantile(moves, [0.1, 0.9])
    last = close.iloc[499]
    assert refs.loc[2, "naive_lower_80"] == pytest.approx(last * np.exp(low))
    assert refs.loc[2, "naive_upper_80"] == pytest.approx(last * np.exp(high))
    step = np.diff(logs)[-365:].mean()
    assert refs.loc[3, "drift"] == pytest.approx(last * np.exp(3 * step))
    assert refs.loc[1, "volatility"] == pytest.approx(np.diff(logs)[-30:].std(ddof=1))


@pytest.mark.parametrize(
    ("rate", "last", "weight", "gain"),
    [(1.0, 650, 0.9, 20), (RATE, 760, 0.7, 3)],
    ids=["rate 1", "the service's rate"],
)
def test_an_exact_expert_takes_the_weight_so_losses_and_forecasts_line_up(rate, last, weight, gain):
    """The record's losses are matched to the forecasts they score: an 'LSTM' that knows the
    future gets the weight, and the served forecast follows it, far from naive's error. At the
    service's slower rate (`RATE`) it takes longer: the weight has to be earned."""
    close, record, errors = closes(2), pd.DataFrame(columns=list(RECORD_COLUMNS)), []
    for i in range(500, last):
        exact = np.log(close.iloc[i + 1 : i + 1 + H].to_numpy() / close.iloc[i])
        served = serve(lstm_forecast(close, i, exact, 0.03), close.iloc[: i + 1], record, rate=rate)
        out = served.forecasts
        out["actual"] = close.reindex(out["target_time"]).to_numpy()
        record = pd.concat([record, out[list(RECORD_COLUMNS)]], ignore_index=True)
        if i >= last - 50:
            errors.append(np.abs(out["value"] / out["actual"] - 1).mean())
            value = served.weights[served.weights["quantity"] == "value"]
            weights = value.set_index(["horizon", "expert"])["weight"]
            assert (weights.xs("lstm", level="expert") > weight).all()
    naive_error = np.abs(record["naive"] / record["actual"] - 1).mean()
    assert np.mean(errors) < naive_error / gain
