"""The served forecast: the LSTM, naive and drift aggregated online, with adaptive intervals.

At each ``as_of`` the service replays its own scored record — the forecasts whose target time
is at or before ``as_of``, beside the close that came — and serves, per horizon:

- ``value``: close × exp(Σ w_k log(x_k / close)), the experts x = (LSTM, naive, drift)
  combined in log-return space with Bernstein online aggregation weights w
  (`forecaster.online.aggregate_weights`; the prior `PRIOR` while fewer than
  `MIN_ROUNDS` forecasts of that horizon were scored);
- ``lower_XX`` / ``upper_XX``: value × exp(∓ s × h), h the LSTM's own volatility-scaled
  conformal half-width (in log space) and s the scale tracked online from the record's
  realised coverage at that level (`forecaster.online.tracked_scale`).

Beside it: the LSTM's own forecast (``lstm_*``), ``drift`` and the naive forecast with
empirical intervals (``naive_lower_XX`` / ``naive_upper_XX``: quantiles of the trailing
`REFERENCE_PERIODS` h-step log returns), and ``volatility`` (the standard deviation of the
last `VOLATILITY_PERIODS` one-period log returns). Nothing is stored between runs but the
record, so the state survives retrains and fine-tunes, and a backfill replaying the same
record gets the same numbers. A NaN or infinite value in the record (an old row without a
drift, say) drops that round; it never reaches a weight.

>>> served = serve(lstm_forecast, close, record)        # doctest: +SKIP
>>> served.forecasts[["horizon", "value", "lstm_value", "naive", "drift"]]  # doctest: +SKIP
>>> served.summary()                                     # doctest: +SKIP
'weights from the prior (3 scored forecasts, fewer than 10) at h=1..7: lstm 0.30, ...'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecaster.online import MIN_ROUNDS, aggregate_weights, tracked_scale
from forecaster.validation import infer_period

EXPERTS = ("lstm", "naive", "drift")
# Prior weights (a new series, or fewer than MIN_ROUNDS scored forecasts of a horizon):
# mostly "tomorrow = today", which daily crypto closes are hard to beat.
PRIOR = {"lstm": 0.3, "naive": 0.6, "drift": 0.1}
LEVELS = {"80": 0.8, "95": 0.95}
REFERENCE_PERIODS = 365  # drift and the naive's empirical intervals: trailing periods
VOLATILITY_PERIODS = 30
RECORD_ROUNDS = 1000  # the replay reads the newest this many scored forecasts per horizon
RECORD_COLUMNS = (
    "as_of",
    "target_time",
    "horizon",
    "value",
    "lstm_value",
    "naive",
    "drift",
    "actual",
    *(f"lstm_{bound}_{name}" for name in LEVELS for bound in ("lower", "upper")),
)


@dataclass(frozen=True)
class Served:
    """The served forecasts (one row per horizon) and the weights behind them."""

    forecasts: pd.DataFrame
    weights: pd.DataFrame  # horizon, expert, weight, rounds, from_prior

    @property
    def from_prior(self) -> bool:
        return bool(self.weights["from_prior"].any())

    def summary(self) -> str:
        """One line: where the weights came from and, pooled over horizons, what they are."""
        mean = self.weights.groupby("expert", sort=False)["weight"].mean()
        shares = ", ".join(f"{expert} {mean[expert]:.2f}" for expert in EXPERTS)
        rounds = self.weights.groupby("horizon")["rounds"].first()
        prior = sorted(self.weights.loc[self.weights["from_prior"], "horizon"].unique())
        if prior:
            return (
                f"weights from the prior at h={_spans(prior)} ({rounds[prior].min()} scored "
                f"forecasts, fewer than {MIN_ROUNDS}: a new series): {shares} (mean over horizons)"
            )
        return f"weights from {rounds.min()}..{rounds.max()} scored forecasts per horizon: {shares}"


def serve(
    lstm: pd.DataFrame,
    close: pd.Series,
    record: pd.DataFrame,
    *,
    prior: dict[str, float] = PRIOR,
    min_rounds: int = MIN_ROUNDS,
    rounds: int = RECORD_ROUNDS,
) -> Served:
    """The served forecast of one ``as_of`` from the LSTM's and the record up to it.

    ``lstm``: ``LSTMForecaster.predict`` output (one as_of) with ``naive``; ``close``: the
    closes up to as_of; ``record``: `RECORD_COLUMNS` of earlier forecasts and their actual
    (rows whose target is after as_of are ignored, whatever the caller passes).
    """
    as_of = pd.Timestamp(lstm["as_of"].iloc[0])
    if close.index[-1] != as_of:
        raise ValueError(
            f"serve as of {as_of}: the closes end at {close.index[-1]}, not at as_of; pass "
            "the closes up to as_of"
        )
    missing = [name for name in RECORD_COLUMNS if name not in record.columns]
    if missing:
        raise ValueError(f"serve as of {as_of}: the record lacks {', '.join(missing)}")
    out = lstm.rename(
        columns={"value": "lstm_value"}
        | {f"{b}_{n}": f"lstm_{b}_{n}" for n in LEVELS for b in ("lower", "upper")}
    )
    refs = references(close, out["horizon"].to_numpy(dtype=int))
    out["drift"] = refs["drift"].to_numpy()
    for name in LEVELS:
        for bound in ("lower", "upper"):
            out[f"naive_{bound}_{name}"] = refs[f"naive_{bound}_{name}"].to_numpy()
    out["volatility"] = refs["volatility"].to_numpy()
    past = record[pd.to_datetime(record["target_time"], utc=True) <= as_of]
    prior_weights = np.array([prior[expert] for expert in EXPERTS], dtype=np.float64)
    weight_rows, served = [], []
    for _, row in out.iterrows():
        horizon = int(row["horizon"])
        rows = past[past["horizon"] == horizon].sort_values(["target_time", "as_of"])
        rows = rows.tail(rounds)
        weights = aggregate_weights(
            _log_returns(rows, ["lstm_value", "naive", "drift"]),
            _log_returns(rows, ["actual"])[:, 0],
            prior=prior_weights,
            min_rounds=min_rounds,
        )
        weight_rows += [
            {
                "horizon": horizon,
                "expert": expert,
                "weight": float(w),
                "rounds": weights.rounds,
                "from_prior": weights.from_prior,
            }
            for expert, w in zip(EXPERTS, weights.weights, strict=True)
        ]
        served.append(_served_row(row, rows, weights.weights))
    for name in LEVELS:
        for column in (f"lower_{name}", f"upper_{name}", f"scale_{name}"):
            out[column] = [values[column] for values in served]
    out["value"] = [values["value"] for values in served]
    for outer, inner in (("lower_95", "lower_80"), ("upper_95", "upper_80")):
        pick = np.minimum if outer.startswith("lower") else np.maximum
        out[outer] = pick(out[outer], out[inner])  # a 95 % band holds the 80 % one
    return Served(out, pd.DataFrame(weight_rows))


def _served_row(row: pd.Series, rows: pd.DataFrame, weights: np.ndarray) -> dict[str, float]:
    """The served value and bounds of one horizon."""
    naive = float(row["naive"])
    now = np.log(np.array([row["lstm_value"], naive, row["drift"]], dtype=np.float64) / naive)
    usable = np.isfinite(now)  # drift is NaN on a history too short to have one
    share = weights * usable
    centre = float(np.where(usable, now, 0.0) @ (share / share.sum()))
    values = {"value": naive * float(np.exp(centre))}
    with np.errstate(divide="ignore", invalid="ignore"):
        actual = np.log(
            rows["actual"].to_numpy(dtype=np.float64) / rows["value"].to_numpy(dtype=np.float64)
        )
        for name, level in LEVELS.items():
            width = _half_width(rows[f"lstm_lower_{name}"], rows[f"lstm_upper_{name}"])
            scale = tracked_scale(np.abs(actual) / width, level=level).scale
            half = scale * float(_half_width(row[f"lstm_lower_{name}"], row[f"lstm_upper_{name}"]))
            values |= {
                f"lower_{name}": values["value"] * float(np.exp(-half)),
                f"upper_{name}": values["value"] * float(np.exp(half)),
                f"scale_{name}": scale,
            }
    return values


def _half_width(lower, upper) -> np.ndarray:
    """Half the width of [lower, upper] in log space (NaN where it is not positive)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        width = (
            np.log(np.asarray(upper, dtype=np.float64))
            - np.log(np.asarray(lower, dtype=np.float64))
        ) / 2
    return np.where(width > 0, width, np.nan)


def _log_returns(rows: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """log(column / naive) ``(rounds, columns)``; NaN or inf where a value is missing or ≤ 0."""
    values = rows[columns].to_numpy(dtype=np.float64)
    naive = rows["naive"].to_numpy(dtype=np.float64)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(values / naive)


def references(
    close: pd.Series, horizons: np.ndarray, *, periods: int = REFERENCE_PERIODS
) -> pd.DataFrame:
    """Per horizon: ``drift``, the naive's empirical bounds and the recent ``volatility``.

    From the last ``periods`` periods of ``close`` up to as_of (its last value), on the
    period grid (a hole carries the last close). NaN where the history is too short.
    """
    period = infer_period(close.index)
    recent = close.iloc[-(periods + int(horizons.max()) + 1) :]
    if period is not None:
        grid = pd.date_range(recent.index[0], recent.index[-1], freq=period)
        recent = recent.reindex(grid.as_unit(recent.index.unit)).ffill()
    logs = np.log(recent.to_numpy(dtype=np.float64))
    last = float(close.iloc[-1])
    steps = np.diff(logs)[-periods:]
    rows = {"drift": [], "volatility": []} | {
        f"naive_{bound}_{name}": [] for name in LEVELS for bound in ("lower", "upper")
    }
    tail = steps[-VOLATILITY_PERIODS:]
    volatility = float(tail.std(ddof=1)) if len(tail) > 1 else np.nan
    for horizon in horizons:
        rows["drift"].append(last * np.exp(horizon * steps.mean()) if len(steps) else np.nan)
        rows["volatility"].append(volatility)
        moves = (logs[horizon:] - logs[:-horizon])[-periods:]
        for name, level in LEVELS.items():
            alpha = 1 - level
            low, high = (
                np.quantile(moves, [alpha / 2, 1 - alpha / 2]) if len(moves) else (np.nan, np.nan)
            )
            rows[f"naive_lower_{name}"].append(last * np.exp(low))
            rows[f"naive_upper_{name}"].append(last * np.exp(high))
    return pd.DataFrame(rows, index=pd.Index(horizons, name="horizon"))


def _spans(horizons: list[int]) -> str:
    """``[1, 2, 3, 5]`` → ``"1..3,5"``."""
    parts, start = [], None
    for i, h in enumerate(horizons):
        start = h if start is None else start
        if i + 1 == len(horizons) or horizons[i + 1] != h + 1:
            parts.append(f"{start}..{h}" if h != start else f"{h}")
            start = None
    return ",".join(parts)
