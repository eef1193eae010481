"""How the served forecasts did against naive, series by series and over them all at once:
what ``cdd-forecast scores`` prints.

    scored = served_scores(engine, ["Bitstamp_BTCUSD_d", "Bitstamp_XRPUSD_d"], days=365)
    for one in scored.series:
        one.rmse_ratio, one.dm_statistic, one.dm_p_value, one.dm_p_holm  # p adjusted for the 2

Per series: what was served at each as_of of its last ``days`` days (the newest run of each
as_of) whose targets all have final candles now, scored as the evaluate flow scores a model
version's runs (``forecaster.metrics.score_forecasts``, every horizon pooled).

Over the series together: with hundreds of series, about 1 in 20 that is exactly as good as
naive shows a Diebold–Mariano p below 0.05 by chance. Holm's adjustment for the number of series
tested (``forecaster.scores.holm``) keeps the chance of any false "worse than naive" among them
at 5 %, whatever their dependence (the series of one market move together).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from db.candles import load_candles
from db.forecasts import served_forecasts
from forecaster.metrics import score_forecasts
from forecaster.scores import holm

LEVEL = 0.05  # "significantly" in what the command says


@dataclass(frozen=True)
class SeriesScores:
    """One series' served forecasts of a stretch, pooled over their horizons."""

    series: str
    first_as_of: dt.datetime
    last_as_of: dt.datetime
    as_ofs: int
    scores: pd.Series  # horizon 0's row of score_forecasts
    dm_p_holm: float  # dm_p_value adjusted for the series scored together (nan: no test)

    @property
    def rmse_ratio(self) -> float:
        return float(self.scores["rmse"] / self.scores["naive_rmse"])

    @property
    def dm_statistic(self) -> float:
        return float(self.scores["dm_statistic"])

    @property
    def dm_p_value(self) -> float:
        return float(self.scores["dm_p_value"])


@dataclass(frozen=True)
class ServedScores:
    days: int
    series: list[SeriesScores]
    unscored: list[str]  # selected, but no served forecast of the stretch has its actuals yet


def served_scores(engine: Engine, keys: list[str], *, days: int) -> ServedScores:
    """Score each series' served forecasts made in the ``days`` days up to its newest final
    candle, then adjust their Diebold–Mariano p-values for the number of series tested."""
    scored: list[tuple[str, pd.DataFrame, pd.Series]] = []
    unscored = []
    for key in keys:
        actuals = load_candles(engine, key)["close"]
        forecasts = pd.DataFrame()
        if not actuals.empty:
            newest = actuals.index[-1]
            since = (newest - pd.Timedelta(days=days)).to_pydatetime()
            forecasts = served_forecasts(engine, key, as_of_from=since)
        if not forecasts.empty:  # only runs whose every target is final by now, as evaluate
            complete = forecasts.groupby("run_id")["target_time"].transform("max") <= newest
            forecasts = forecasts[complete]
        if forecasts.empty:
            unscored.append(key)
        else:
            scored.append((key, forecasts, score_forecasts(forecasts, actuals).loc[0]))
    adjusted = holm(np.array([pooled["dm_p_value"] for _, _, pooled in scored], dtype=float))
    return ServedScores(
        days,
        [
            SeriesScores(
                key,
                forecasts["as_of"].min().to_pydatetime(),
                forecasts["as_of"].max().to_pydatetime(),
                int(forecasts["as_of"].nunique()),
                pooled,
                float(p_holm),
            )
            for (key, forecasts, pooled), p_holm in zip(scored, adjusted, strict=True)
        ],
        unscored,
    )


def summary_lines(scored: ServedScores) -> list[str]:
    """What the scores say over the series together, for the console."""
    series = scored.series
    tested = [s for s in series if math.isfinite(s.dm_p_value)]
    below = sum(round(s.rmse_ratio, 4) < 1 for s in series)
    above = sum(round(s.rmse_ratio, 4) > 1 for s in series)
    lines = [
        f"{len(series)} series, the forecasts served in the last {scored.days} days of each: "
        f"RMSE below naive's on {below}, above on {above}, equal to 4 decimals on "
        f"{len(series) - below - above}."
    ]
    for side, sign in (("worse", 1), ("better", -1)):
        alone = [s for s in tested if sign * s.dm_statistic > 0 and s.dm_p_value < LEVEL]
        together = [s for s in alone if s.dm_p_holm < LEVEL]
        lines.append(
            f"{side.capitalize()} than naive by Diebold–Mariano at p < {LEVEL:g}: "
            f"{_names(alone, 'dm_p_value')}; after Holm's adjustment for the {len(tested)} "
            f"series tested: {_names(together, 'dm_p_holm')}."
        )
    if len(tested) > 1:
        lines.append(
            f"(Holm keeps the chance of a false result anywhere among the {len(tested)} at "
            f"{LEVEL:.0%}; unadjusted, about 1 series in 20 that is exactly as good as naive "
            f"has p < {LEVEL:g}.)"
        )
    return lines


def _names(series: list[SeriesScores], p: str) -> str:
    return ", ".join(f"{s.series} (p {getattr(s, p):.3f})" for s in series) or "none"
