"""A series' first run warms up: it walks forward over its newest periods before it serves.

    warm_up("Bitstamp_BTCUSD_d", candles)   # in run_series, before the training step

The service learns a series' aggregation weights and interval widths only from forecasts it has
scored, so a new series would serve the prior weights (LSTM 0.10, naive 0.90) for weeks and its
`forecast_metrics` and `model_leaderboard` would say nothing about it. So the first daily run of
a series of its own model (one with no ``daily`` forecast run yet) first backfills the
``CDDF_WARMUP_PERIODS`` final candles before its newest (by default ``MIN_ROUNDS + horizon - 1``:
16 days, 33 hours — the fewest that score each horizon ``MIN_ROUNDS`` times by today), as
`flows.backfill` walks forward: point in time, registered and stored as ``backfill`` runs, then
scored with today's evaluate step. Its as_ofs end before today's, so the daily forecast is the
only run of today's as_of; its served weights are learned from the warm-up's scored forecasts.

One retrain, at the warm-up's first as_of, and a fine-tune at each later one: the first run
costs one more retrain than before (today's run retrains again, its retrain day having passed
since the warm-up's), not one per retrain day in the range (docs/benchmarks.md, "First run with
a warm-up"). Resumable as a backfill: a warm-up that failed fails the series at its ``warm-up``
step, and the rerun, still without a daily run, goes on from the as_ofs it stored. A series
with too little history for the whole range warms up from its first trainable as_of, one with
none before today's skips it (logged). It trains in the process that runs the series, as a
backfill does, not on ``CDDF_TRAIN_DEPLOYMENT``'s pool. A global model's series are not warmed
up: their group's model is trained on the other series' history, and a new member's weights
start from the prior.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
from prefect import get_run_logger

from db.engine import get_engine
from db.forecasts import has_run
from flows.backfill import walk_forward
from flows.backfill_plan import BackfillError, plan_backfill
from flows.scopes import series_config
from forecaster import first_trainable
from forecaster.online import MIN_ROUNDS
from settings import SeriesConfig, get_settings


@dataclass(frozen=True)
class WarmUp:
    """What a first run's warm-up did."""

    first: pd.Timestamp
    last: pd.Timestamp
    forecast: int  # as_ofs forecast now
    done: int  # as_ofs a previous (interrupted) warm-up or a backfill had forecast already
    retrained: int
    finetuned: int
    seconds: float

    def __str__(self) -> str:
        """``warmed up 2025-09-08 .. 2025-09-23: 16 as_ofs (1 retrained, 15 fine-tuned)``."""
        done = f", {self.done} done before" if self.done else ""
        return (
            f"warmed up {self.first:%Y-%m-%d %H:%M} .. {self.last:%Y-%m-%d %H:%M}: "
            f"{self.forecast + self.done} as_ofs ({self.retrained} retrained, "
            f"{self.finetuned} fine-tuned{done}) in {self.seconds:.1f}s"
        )


def warmup_periods(config: SeriesConfig) -> int:
    """How many periods a first run of ``config``'s series warms up on (0: none): by default
    ``MIN_ROUNDS + horizon - 1``, 16 for a daily series (horizon 7), 33 for an hourly one (24)."""
    periods = get_settings().warmup_periods
    return MIN_ROUNDS + config.forecaster.horizon - 1 if periods is None else periods


def warm_up(series: str, candles: pd.DataFrame) -> WarmUp | None:
    """Backfill the newest periods before the newest final candle on a series' first run;
    None when it is no first run, warm-up is off or there is no as_of to warm up on."""
    config = series_config(series)
    periods = warmup_periods(config)
    if periods == 0 or config.group is not None or len(candles) < 2:
        return None
    if has_run(get_engine(), series, "daily"):
        return None
    logger = get_run_logger()
    history = candles.iloc[:-1]  # today's as_of is the daily forecast's alone
    earliest = first_trainable(history.index, config.forecaster)
    if earliest is None:
        logger.info(
            "%s: no warm-up: too little history before %s to train on",
            series,
            f"{candles.index[-1]:%Y-%m-%d %H:%M}",
        )
        return None
    first = max(history.index[-min(periods, len(history))], earliest)
    started = time.perf_counter()
    try:
        plan = plan_backfill(
            history,
            series,
            first.date(),
            history.index[-1].date(),
            config.retrain_after,
            config.forecaster,
            retrain_days=False,
        )
    except BackfillError as error:  # nothing in the range can be forecast (holes)
        logger.info("%s: no warm-up: %s", series, error)
        return None
    plan = plan.trimmed(first)
    logger.info(
        "%s: first run: warming up on %d as_ofs %s .. %s (CDDF_WARMUP_PERIODS=%d) before its "
        "first forecast",
        series,
        len(plan.as_ofs),
        f"{plan.as_ofs[0]:%Y-%m-%d %H:%M}",
        f"{plan.as_ofs[-1]:%Y-%m-%d %H:%M}",
        periods,
    )
    records, done = walk_forward(plan, config, processes=1, force=False, logger=logger)
    warmed = WarmUp(
        plan.as_ofs[0],
        plan.as_ofs[-1],
        len(records),
        done,
        sum(r.action == "retrain" for r in records),
        sum(r.action == "finetune" for r in records),
        time.perf_counter() - started,
    )
    logger.info("%s: %s", series, warmed)
    return warmed
