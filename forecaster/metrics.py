"""Scores of forecasts against actual closes, per horizon and pooled, on the price level.

>>> import pandas as pd
>>> t = pd.date_range("2024-01-01", periods=3, tz="UTC")
>>> forecasts = pd.DataFrame({"as_of": t[:2], "target_time": t[1:], "horizon": 1,
...                           "value": [11.0, 12.0], "naive": [10.0, 10.0]})
>>> score_forecasts(forecasts, pd.Series([10.0, 12.0, 11.0], index=t)).loc[0, "rmse"]
np.float64(1.0)
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from forecaster.probabilistic import SCORE_COLUMNS, probabilistic_scores

COLUMNS = [
    "n",
    "rmse",
    "mae",
    "mape",
    "smape",
    "mase",
    "direction",
    "coverage_80",
    "width_80",
    "coverage_95",
    "width_95",
    "naive_rmse",
    "skill",
    *SCORE_COLUMNS,
]
_BOUND = re.compile(r"^lower_(?P<level>[0-9.]+)$")


def score_forecasts(forecasts: pd.DataFrame, actuals: pd.Series) -> pd.DataFrame:
    """Score ``forecasts`` against ``actuals`` (a Series of close indexed by time).

    ``forecasts`` has columns target_time, horizon, value, naive (the close at as_of) and
    optional ``lower_XX`` / ``upper_XX`` bounds. Rows whose target has no actual are
    ignored. Returns one row per horizon plus horizon 0 for all pooled, with
    n, rmse, mae, mape and smape (percent), mase (MAE / naive MAE), direction (share of
    forecasts moving the same way from the naive value as the actual), coverage_XX and
    width_XX for each interval level, naive_rmse and skill (1 - rmse / naive_rmse), and the
    `SCORE_COLUMNS` of `forecaster.probabilistic` (interval scores, pinball losses, coverage
    per volatility tercile, Diebold–Mariano against naive; for the LSTM's own forecast and the
    naive's empirical intervals too when ``lstm_*`` / ``naive_lower_XX`` columns are given).
    """
    levels = sorted(
        {m["level"] for c in forecasts.columns if (m := _BOUND.match(str(c)))} | {"80", "95"},
        key=float,
    )
    frame = _with_actuals(forecasts, actuals)
    rows = {0: _score(frame, levels)}
    for horizon, group in frame.groupby("horizon", sort=True):
        rows[int(horizon)] = _score(group, levels)
    extra = [
        c
        for level in levels
        if level not in ("80", "95")
        for c in (f"coverage_{level}", f"width_{level}")
    ]
    result = pd.DataFrame.from_dict(rows, orient="index", columns=COLUMNS + extra)
    result.index.name = "horizon"
    return result.astype({"n": "int64"})


def skill(forecasts: pd.DataFrame, actuals: pd.Series) -> float:
    """``score_forecasts(forecasts, actuals).loc[0, "skill"]`` alone: 1 - RMSE / naive RMSE of
    every forecast with an actual, all horizons pooled (nan with none, or a naive RMSE of 0).
    What the retrain policy reads at every step of a backfill, without the other scores."""
    frame = _with_actuals(forecasts, actuals)
    actual = frame["actual"].to_numpy(dtype="float64")
    error = frame["value"].to_numpy(dtype="float64") - actual
    return _skill(error, frame["naive"].to_numpy(dtype="float64") - actual)


def _with_actuals(forecasts: pd.DataFrame, actuals: pd.Series) -> pd.DataFrame:
    """The rows of ``forecasts`` with a value and an actual, the actual beside them."""
    missing = [c for c in ("target_time", "horizon", "value", "naive") if c not in forecasts]
    if missing:
        raise ValueError(
            f"forecasts lack the column(s) {missing}; they need target_time, horizon, value "
            "and naive (the close at as_of)"
        )
    if not isinstance(actuals, pd.Series):
        raise TypeError(f"actuals must be a Series of close indexed by time, got {type(actuals)}")
    if actuals.index.has_duplicates:
        first = actuals.index[actuals.index.duplicated()][0]
        raise ValueError(f"actuals have a duplicate time {first}; keep one close per time")
    if not isinstance(actuals.index, pd.DatetimeIndex):
        raise ValueError("actuals must be indexed by time (a DatetimeIndex)")
    targets = pd.DatetimeIndex(forecasts["target_time"]).as_unit("ns")
    by_time = actuals.set_axis(actuals.index.as_unit("ns"))
    frame = forecasts.assign(actual=by_time.reindex(targets).to_numpy())
    return frame[frame["actual"].notna() & frame["value"].notna()]


def _skill(error: np.ndarray, naive_error: np.ndarray) -> float:
    """1 - RMSE / naive RMSE (nan with no error, or a naive RMSE of 0)."""
    if len(error) == 0:
        return np.nan
    naive_rmse = float(np.sqrt(np.mean(naive_error**2)))
    return 1 - float(np.sqrt(np.mean(error**2))) / naive_rmse if naive_rmse > 0 else np.nan


def _score(frame: pd.DataFrame, levels: list[str]) -> dict[str, float]:
    """The metrics of one group of rows (all with an actual)."""
    value = frame["value"].to_numpy(dtype="float64")
    actual = frame["actual"].to_numpy(dtype="float64")
    naive = frame["naive"].to_numpy(dtype="float64")
    n = len(frame)
    row: dict[str, float] = {"n": n}
    if n == 0:
        return row | {c: np.nan for c in COLUMNS[1:]}
    error = value - actual
    naive_error = naive - actual
    row["rmse"] = float(np.sqrt(np.mean(error**2)))
    row["mae"] = float(np.mean(np.abs(error)))
    row["mape"] = float(100 * np.mean(np.abs(error) / np.abs(actual)))
    row["smape"] = float(200 * np.mean(np.abs(error) / (np.abs(actual) + np.abs(value))))
    naive_mae = float(np.mean(np.abs(naive_error)))
    row["mase"] = row["mae"] / naive_mae if naive_mae > 0 else np.nan
    row["direction"] = float(np.mean(np.sign(value - naive) == np.sign(actual - naive)))
    for level in levels:
        lower, upper = f"lower_{level}", f"upper_{level}"
        if lower in frame and upper in frame:
            low = frame[lower].to_numpy(dtype="float64")
            high = frame[upper].to_numpy(dtype="float64")
            row[f"coverage_{level}"] = float(np.mean((low <= actual) & (actual <= high)))
            row[f"width_{level}"] = float(np.mean(high - low))
        else:
            row[f"coverage_{level}"] = row[f"width_{level}"] = np.nan
    row["naive_rmse"] = float(np.sqrt(np.mean(naive_error**2)))
    row["skill"] = _skill(error, naive_error)
    return row | probabilistic_scores(frame)
