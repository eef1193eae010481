"""Issue 13's side-by-side: LSTM raw, served aggregate, naive with empirical / EWMA intervals.

`served_replay` replays the service's rule (`forecaster.aggregate.serve`) over a walk-forward's
LSTM forecasts in as_of order, each as_of seeing only the served forecasts scored by then;
`ewma_bounds` are the naive forecast's EWMA-volatility-scaled historical quantiles; `report`
prints one line per model with the issue's columns.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from coverage_noise import Chance, by_chance

from forecaster.aggregate import GATE, RECORD_COLUMNS, serve
from forecaster.metrics import score_forecasts

LEVELS = {"80": 0.8, "95": 0.95}


def served_replay(
    lstm: pd.DataFrame, close: pd.Series, *, gate: bool = GATE
) -> tuple[pd.DataFrame, float]:
    """The served forecast of every as_of of ``lstm`` (walk-forward forecasts with naive);
    ``gate``: `forecaster.aggregate.serve`'s."""
    started = time.perf_counter()
    record = pd.DataFrame(columns=list(RECORD_COLUMNS))
    served = []
    for as_of, forecast in lstm.groupby("as_of", sort=True):
        out = serve(forecast.reset_index(drop=True), close.loc[:as_of], record, gate=gate)
        out = out.forecasts
        out["actual"] = close.reindex(pd.DatetimeIndex(out["target_time"])).to_numpy()
        served.append(out)
        scored = out[list(RECORD_COLUMNS)].dropna(subset=["actual"])
        record = scored if record.empty else pd.concat([record, scored], ignore_index=True)
    return pd.concat(served, ignore_index=True), time.perf_counter() - started


def calibrated_chance(served: pd.DataFrame, close: pd.Series) -> Chance:
    """`by_chance` on the as-of days of ``served`` whose 80 % band was scored."""
    actual = close.reindex(pd.DatetimeIndex(served["target_time"])).to_numpy()
    scored = served.loc[np.isfinite(actual), "as_of"]
    return by_chance(close, pd.DatetimeIndex(sorted(scored.unique())))


def ewma_bounds(
    served: pd.DataFrame, close: pd.Series, *, lam: float = 0.94, days: int = 730
) -> pd.DataFrame:
    """Naive with bounds = EWMA volatility now × quantiles of the trailing ``days`` h-step
    log returns each divided by the EWMA volatility at its origin."""
    logs = np.log(close)
    steps = logs.diff().fillna(0.0)
    sigma = np.sqrt((steps**2).ewm(alpha=1 - lam, adjust=False).mean())
    position = pd.Series(np.arange(len(close)), index=close.index)
    out = served[["as_of", "target_time", "horizon", "naive", "volatility"]].copy()
    out["value"] = out["naive"]
    bounds = {f"{b}_{n}": np.full(len(out), np.nan) for n in LEVELS for b in ("lower", "upper")}
    values, sig = logs.to_numpy(), sigma.to_numpy()
    for row, (as_of, h) in enumerate(zip(out["as_of"], out["horizon"], strict=True)):
        t, h = int(position[as_of]), int(h)
        origins = np.arange(max(1, t - days), t - h + 1)
        if len(origins) < 30 or sig[t] <= 0:
            continue
        scale = np.where(sig[origins] > 0, sig[origins], np.nan)
        z = (values[origins + h] - values[origins]) / scale
        z = z[np.isfinite(z)]
        for name, level in LEVELS.items():
            low, high = np.quantile(z, [(1 - level) / 2, (1 + level) / 2])
            bounds[f"lower_{name}"][row] = out["naive"].iloc[row] * np.exp(low * sig[t])
            bounds[f"upper_{name}"][row] = out["naive"].iloc[row] * np.exp(high * sig[t])
    return out.assign(**bounds)


def models(served: pd.DataFrame, close: pd.Series) -> dict[str, pd.DataFrame]:
    """The four forecasts, each as value / naive / bounds / volatility columns."""
    keep = ["as_of", "target_time", "horizon", "naive", "volatility"]
    rename = {f"lstm_{b}_{n}": f"{b}_{n}" for n in LEVELS for b in ("lower", "upper")}
    lstm = served[keep + ["lstm_value", *rename]].rename(columns=rename | {"lstm_value": "value"})
    aggregate = served[keep + ["value", *rename.values()]]
    empirical = served[keep].assign(
        value=served["naive"],
        **{f"{b}_{n}": served[f"naive_{b}_{n}"] for n in LEVELS for b in ("lower", "upper")},
    )
    return {
        "LSTM raw": lstm,
        "served aggregate": aggregate,
        "naive, empirical 365 intervals": empirical,
        "naive, EWMA-scaled intervals": ewma_bounds(served, close),
    }


def report(
    name: str,
    forecasts: pd.DataFrame,
    close: pd.Series,
    seconds: float | None,
    chance: Chance | None = None,
) -> None:
    """One line: RMSE ratio, interval scores, coverage overall / worst year / tercile, DM;
    with ``chance``, how often an exactly calibrated forecaster is as far off
    (`coverage_noise.by_chance`)."""
    actuals = pd.Series(close.to_numpy(dtype="float64"), index=close.index)
    pooled = score_forecasts(forecasts, actuals).loc[0]
    frame = forecasts.assign(
        actual=actuals.reindex(pd.DatetimeIndex(forecasts["target_time"])).to_numpy()
    ).dropna(subset=["actual", "lower_80"])
    inside = (frame["lower_80"] <= frame["actual"]) & (frame["actual"] <= frame["upper_80"])
    by_year = inside.groupby(pd.DatetimeIndex(frame["as_of"]).year).mean()
    worst_year = by_year.sub(0.8).abs().idxmax() if len(by_year) else None
    terciles = [pooled[f"coverage_80_{t}_vol"] for t in ("low", "mid", "high")]
    dm = (
        f"DM {pooled['dm_statistic']:+.2f} p {pooled['dm_p_value']:.3f}"
        if np.isfinite(pooled["dm_statistic"]) and pooled["rmse"] != pooled["naive_rmse"]
        else "DM n/a (naive)"
    )
    took = f"  {seconds:.0f} s" if seconds is not None else ""
    print(
        f"  {name:32s} RMSE/naive {pooled['rmse'] / pooled['naive_rmse']:.4f}"
        f"  cover80 {pooled['coverage_80']:.3f}  cover95 {pooled['coverage_95']:.3f}"
        f"  IS80/close {pooled['interval_score_80']:.4f}"
        f"  IS95/close {pooled['interval_score_95']:.4f}  {dm}{took}"
    )
    if worst_year is not None:
        print(
            f"  {'':32s} 80% by year: "
            + " ".join(f"{year}:{value:.2f}" for year, value in by_year.items())
            + f" (worst {worst_year}: {abs(by_year[worst_year] - 0.8) * 100:.1f} pp off);"
            f" by volatility tercile low/mid/high: "
            + "/".join("n/a" if not np.isfinite(v) else f"{v:.2f}" for v in terciles)
        )
    if worst_year is not None and chance is not None:
        off = 100 * max(
            abs(by_year[worst_year] - 0.8), *(abs(v - 0.8) for v in terciles if np.isfinite(v))
        )
        print(
            f"  {'':32s} worst year or tercile {off:.1f} pp off: an exactly calibrated forecaster"
            f" is as far off in {chance.share_as_far(off):.1%} of resampled paths"
        )
