"""Probabilistic scores of a group of scored forecasts, for `forecaster.metrics`.

For the forecast (``value`` and ``lower_XX`` / ``upper_XX``), the LSTM's own (``lstm_value``,
``lstm_lower_XX`` …) and the naive forecast with empirical intervals (``naive`` and
``naive_lower_XX`` …), each where the columns are there:

- ``interval_score_XX``: Winkler's interval score, ÷ the close at as_of (``naive``), so that
  a 2019 and a 2025 forecast weigh alike; ``pinball_XX``: the mean pinball loss at the two
  bounds (quantiles α/2 and 1 − α/2), ÷ the close too (= α/4 × the interval score);
- ``coverage_80_low_vol`` / ``_mid_vol`` / ``_high_vol``: 80 % coverage per tercile of the
  as_of's ``volatility`` among the group's as_of times (NaN below 3 of them);
- ``dm_statistic`` / ``dm_p_value``: Diebold–Mariano of the squared error ÷ close against the
  naive's, in as_of order, HAC variance over h − 1 lags (pooled over horizons: each as_of's
  mean loss, H − 1 lags). Positive: the forecast's loss is larger; p two-sided.

>>> import pandas as pd
>>> rows = pd.DataFrame({"value": [10.0], "naive": [10.0], "actual": [11.0],
...                      "lower_80": [9.0], "upper_80": [11.5]})
>>> probabilistic_scores(rows)["interval_score_80"]
0.25
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from forecaster.scores import diebold_mariano, interval_score, pinball_loss

LEVELS = {"80": 0.8, "95": 0.95}
TERCILES = ("low_vol", "mid_vol", "high_vol")
PROBABILISTIC = [
    *(f"interval_score_{name}" for name in LEVELS),
    *(f"pinball_{name}" for name in LEVELS),
    *(f"coverage_80_{tercile}" for tercile in TERCILES),
]
SCORE_COLUMNS = [
    *PROBABILISTIC,
    "dm_statistic",
    "dm_p_value",
    "lstm_rmse",
    "lstm_skill",
    "lstm_coverage_80",
    "lstm_coverage_95",
    *(f"lstm_{name}" for name in PROBABILISTIC),
    "lstm_dm_statistic",
    "lstm_dm_p_value",
    "naive_coverage_80",
    "naive_coverage_95",
    *(f"naive_{name}" for name in PROBABILISTIC),
]


def probabilistic_scores(frame: pd.DataFrame) -> dict[str, float]:
    """`SCORE_COLUMNS` of ``frame`` (rows with an ``actual``; NaN where columns lack)."""
    scores = dict.fromkeys(SCORE_COLUMNS, math.nan)
    scores |= _bands(frame, "")
    scores |= _dm(frame, "value", "")
    if "lstm_value" in frame:
        lstm = frame[np.isfinite(frame["lstm_value"].to_numpy(dtype=np.float64))]
        if len(lstm):
            error = lstm["lstm_value"].to_numpy(dtype=np.float64) - lstm["actual"].to_numpy()
            naive_error = lstm["naive"].to_numpy(dtype=np.float64) - lstm["actual"].to_numpy()
            rmse, naive_rmse = np.sqrt(np.mean(error**2)), np.sqrt(np.mean(naive_error**2))
            scores["lstm_rmse"] = float(rmse)
            scores["lstm_skill"] = float(1 - rmse / naive_rmse) if naive_rmse > 0 else math.nan
            scores |= _bands(lstm, "lstm_")
            scores |= _dm(lstm, "lstm_value", "lstm_")
    if "naive_lower_80" in frame:
        scores |= _bands(frame, "naive_")
    return {name: scores[name] for name in SCORE_COLUMNS}  # coverage_XX stays metrics'


def _bands(frame: pd.DataFrame, prefix: str) -> dict[str, float]:
    """Coverage, interval score, pinball and tercile coverage of the ``prefix`` bounds."""
    out: dict[str, float] = {}
    naive = frame["naive"].to_numpy(dtype=np.float64)
    actual = frame["actual"].to_numpy(dtype=np.float64)
    for name, level in LEVELS.items():
        lower_name, upper_name = f"{prefix}lower_{name}", f"{prefix}upper_{name}"
        if lower_name not in frame or upper_name not in frame:
            continue
        lower = frame[lower_name].to_numpy(dtype=np.float64)
        upper = frame[upper_name].to_numpy(dtype=np.float64)
        usable = np.isfinite(lower) & np.isfinite(upper) & (naive > 0)
        if not usable.any():
            continue
        lo, hi, y, close = lower[usable], upper[usable], actual[usable], naive[usable]
        alpha = 1 - level
        inside = (lo <= y) & (y <= hi)
        out[f"{prefix}coverage_{name}"] = float(inside.mean())
        out[f"{prefix}interval_score_{name}"] = float(
            np.mean(interval_score(lo, hi, y, level=level) / close)
        )
        pinball = (
            pinball_loss(lo, y, quantile=alpha / 2) + pinball_loss(hi, y, quantile=1 - alpha / 2)
        ) / 2
        out[f"{prefix}pinball_{name}"] = float(np.mean(pinball / close))
        if name == "80" and _as_ofs(frame) >= 3:  # fewer: no terciles (one run has one)
            out |= _by_tercile(frame[usable], inside, prefix)
    return out


def _by_tercile(frame: pd.DataFrame, inside: np.ndarray, prefix: str) -> dict[str, float]:
    """80 % coverage per tercile of the as_of volatility (NaN below 3 distinct as_of)."""
    if "volatility" not in frame or "as_of" not in frame:
        return {}
    volatility = frame["volatility"].to_numpy(dtype=np.float64)
    known = np.isfinite(volatility)
    per_as_of = pd.Series(volatility[known], index=frame["as_of"].to_numpy()[known])
    per_as_of = per_as_of[~per_as_of.index.duplicated()]
    if len(per_as_of) < 3:
        return {}
    low, high = np.quantile(per_as_of.to_numpy(), [1 / 3, 2 / 3])
    tercile = np.where(volatility <= low, 0, np.where(volatility <= high, 1, 2))
    out = {}
    for number, name in enumerate(TERCILES):
        chosen = known & (tercile == number)
        if chosen.any():
            out[f"{prefix}coverage_80_{name}"] = float(inside[chosen].mean())
    return out


def _as_ofs(frame: pd.DataFrame) -> int:
    """How many distinct as_of the rows have (0 without the column)."""
    return int(frame["as_of"].nunique()) if "as_of" in frame else 0


def _dm(frame: pd.DataFrame, column: str, prefix: str) -> dict[str, float]:
    """Diebold–Mariano of ``column`` against naive on squared errors ÷ the close."""
    if "as_of" not in frame or frame.empty:
        return {}
    if _as_ofs(frame) < 3:  # diebold_mariano's least n: one run's rows say nothing
        return {f"{prefix}dm_statistic": math.nan, f"{prefix}dm_p_value": math.nan}
    close = frame["naive"].to_numpy(dtype=np.float64)
    actual = frame["actual"].to_numpy(dtype=np.float64)
    losses = pd.DataFrame(
        {
            "as_of": pd.to_datetime(frame["as_of"], utc=True).to_numpy(),
            "model": ((frame[column].to_numpy(dtype=np.float64) - actual) / close) ** 2,
            "naive": ((close - actual) / close) ** 2,
        }
    )
    per_as_of = losses.groupby("as_of", sort=True)[["model", "naive"]].mean()
    horizon = (
        int(frame["horizon"].max())
        if frame["horizon"].nunique() > 1
        else int(frame["horizon"].iloc[0])
    )
    test = diebold_mariano(
        per_as_of["model"].to_numpy(), per_as_of["naive"].to_numpy(), horizon=horizon
    )
    return {f"{prefix}dm_statistic": test.statistic, f"{prefix}dm_p_value": test.p_value}
