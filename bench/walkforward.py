"""Benchmark 3 of issue 5: a point-in-time walk-forward of the package's default model.

At every candle from --start to the end of the series file (default: the Bitstamp daily
file) the model forecasts t+1..t+H from the candles up to t only; it is refitted every
--retrain-every steps and fine-tuned for --finetune-epochs on the steps in between. Prints
the RMSE ratio to naive persistence (pooled and per horizon), 80 % / 95 % interval coverage
and the time spent, next to the drift and seasonal-naive baselines on the same as-of times.

--source takes any CDD file named after its series (Binance_ADAUSDT_1h.csv): the series'
timeframe (or --timeframe) picks the service's config for it (settings: window and horizon
24 for 1h) and the season of the seasonal naive (7 days, 24 hours, 60 minutes). Holes stay
holes: as-of times whose window misses more candles than a forecast may fill are skipped
and counted, and targets in a hole are not scored. --start defaults to 2019-01-01 for a
daily series and to the last 30 days otherwise.

    nice .venv/bin/python bench/walkforward.py                      # weekly retrain, daily tune
    nice .venv/bin/python bench/walkforward.py --retrain-every 28 --train-candles 1500
    .venv/bin/python bench/walkforward.py --start 2025-06-01        # a short smoke run
    nice .venv/bin/python bench/walkforward.py --retrain-every 168 \
        --source ../shared/data/multi/Binance_ADAUSDT_1h.csv        # hourly, its last month
    nice .venv/bin/python bench/walkforward.py --retrain-every 28 --train-candles 1000 \
        --daily-multi --no-baselines          # every daily series of multi/, after 1,000 candles

Issue 13's side by side follows the LSTM's figures: the LSTM raw, the served aggregate
(`forecaster.aggregate.serve` replayed over the walk-forward's LSTM forecasts in as_of order:
the service's rule), the naive with trailing-365 empirical intervals and the naive with
EWMA-scaled intervals (λ 0.94, 730 days): RMSE ratio, coverage, interval scores ÷ close, 80 %
coverage per year and volatility tercile, Diebold–Mariano against naive, time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402
from _compare import calibrated_chance, models, served_replay  # noqa: E402
from _compare import report as compare  # noqa: E402
from _data import DATA, load_daily, load_series  # noqa: E402

from cdd.series_key import SeriesKey  # noqa: E402
from forecaster import (  # noqa: E402
    DriftForecaster,
    ForecasterConfig,
    SeasonalNaiveForecaster,
    find_holes,
)
from forecaster.backtest import (  # noqa: E402
    BacktestPolicy,
    BacktestResult,
    BacktestStep,
    walk_forward,
)

SEASONS = {"d": 7, "1h": 24, "minute": 60}  # the seasonal naive's season per timeframe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DATA, help="a CDD file <series>.csv")
    parser.add_argument("--timeframe", default=None, help="d, 1h or minute (default: the file's)")
    parser.add_argument("--start", default=None, help="first as-of time (see above)")
    parser.add_argument("--end", default=None, help="last as-of day (default: the file's end)")
    parser.add_argument("--retrain-every", type=int, default=7)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument(
        "--train-candles",
        type=int,
        default=None,
        help="refit on the newest N candles only (default: all history)",
    )
    parser.add_argument("--config", default="{}", help="ForecasterConfig overrides as JSON")
    parser.add_argument(
        "--daily-multi",
        action="store_true",
        help="every daily series of ../shared/data/multi/, each from its "
        "1,001st candle (after the first 1,000)",
    )
    parser.add_argument(
        "--last",
        type=int,
        default=None,
        help="only the last N as-of candles of each series (a smoke run)",
    )
    parser.add_argument(
        "--no-baselines",
        action="store_true",
        help="skip the drift and seasonal-naive walk-forwards",
    )
    parser.add_argument(
        "--forecasts-only",
        action="store_true",
        help="only the LSTM walk-forward (into --cache), no side by side",
    )
    parser.add_argument(
        "--gate",
        action="store_true",
        help="also the served aggregate with the LSTM's gate (forecaster.aggregate.GATE: "
        "tried 2026-12-07, not adopted), side by side",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="keep each LSTM walk-forward's forecasts here and reuse them when "
        "the file, config, policy and dates are the same (e.g. bench/.cache)",
    )
    args = parser.parse_args()
    if not args.daily_multi:
        run(args.source, args, args.start)
        return
    for source in sorted((DATA.parent / "multi").glob("*_d.csv")):
        candles = load_series(source)
        run(source, args, args.start or f"{candles.index[min(1000, len(candles) - 1)]:%Y-%m-%d}")


def run(source: Path, args: argparse.Namespace, start: str | None) -> None:
    """The walk-forward of one series, its side-by-side with the served aggregate, baselines."""
    key = SeriesKey.parse(source.name.removesuffix(".csv"))
    timeframe = args.timeframe or key.timeframe
    candles = load_daily(source) if source == DATA else load_series(source)
    if args.last:
        start = f"{candles.index[-min(args.last, len(candles))]:%Y-%m-%d %H:%M}"
    if start is None:
        month_ago = candles.index[-1] - pd.Timedelta(days=30)
        start = "2019-01-01" if timeframe == "d" else f"{month_ago:%Y-%m-%d %H:%M}"
    base = service_config(f"{key.exchange}_{key.pair}_{timeframe}")
    config = ForecasterConfig.from_dict(base.to_dict() | json.loads(args.config))
    season = SEASONS.get(timeframe, 7)
    policy = BacktestPolicy(
        retrain_every=args.retrain_every,
        finetune_epochs=args.finetune_epochs,
        train_candles=args.train_candles,
    )
    holes = find_holes(candles.index, key.period)
    print(f"# bench/walkforward.py  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"{key.key}: candles {len(candles)} ({candles.index[0]:%Y-%m-%d %H:%M} .. "
        f"{candles.index[-1]:%Y-%m-%d %H:%M}), {len(holes)} holes "
        f"({sum(h.missing for h in holes)} missing), as-of {start} .. {args.end or 'end'}"
    )
    print(f"policy {policy}\nconfig {config}")

    started = time.perf_counter()

    def progress(step: BacktestStep) -> None:
        if step.action == "skip":
            print(f"  {step.as_of:%Y-%m-%d %H:%M} skipped: {step.reason}", file=sys.stderr)
        if step.action == "retrain":
            model = step.model
            print(
                f"  {step.as_of:%Y-%m-%d %H:%M} retrain {step.seconds:5.1f}s "
                f"{model.epochs_trained_} epochs, validation skill "
                f"{model.validation_metrics_['skill']:+.4f}  "
                f"[{time.perf_counter() - started:6.0f}s]",
                file=sys.stderr,
                flush=True,
            )

    result, seconds = _cached(
        args.cache,
        source,
        (config, policy, start, args.end),
        lambda: walk_forward(candles, config, start, args.end, policy, on_step=progress),
    )
    steps = result.steps
    forecasts = result.forecasts
    in_holes = ~forecasts["target_time"].isin(candles.index) & (
        forecasts["target_time"] <= candles.index[-1]
    )
    print(
        f"\n{len(steps)} as-of times in {seconds:.0f} s: "
        f"{(steps['action'] == 'skip').sum()} skipped (hole), "
        f"{in_holes.sum()} forecasts unscorable (target in a hole), "
        f"{(steps['action'] == 'retrain').sum()} retrains "
        f"({steps.loc[steps['action'] == 'retrain', 'seconds'].sum():.0f} s), "
        f"{(steps['action'] == 'finetune').sum()} fine-tunes "
        f"({steps.loc[steps['action'] == 'finetune', 'seconds'].sum():.0f} s)"
    )
    report("LSTM (package default)", result.metrics)
    if args.forecasts_only:
        return
    close = candles["close"].astype("float64")
    served, serve_seconds = served_replay(forecasts, close)
    print(
        f"\nside by side (issue 13), as-of {start} .. {args.end or 'end'}; interval scores "
        "÷ the close at as_of; coverage by year of as_of, terciles of the as_of volatility"
    )
    side_by_side = models(served, close)
    if args.gate:
        gated, _ = served_replay(forecasts, close, gate=True)
        side_by_side["served, with the gate"] = models(gated, close)["served aggregate"]
    chance = calibrated_chance(served, close)
    for name, frame in side_by_side.items():
        took = {"LSTM raw": seconds, "served aggregate": seconds + serve_seconds}.get(name)
        compare(name, frame, close, took, chance)
    if args.daily_multi:  # the served rule was chosen on what came before: the clean part
        since = candles.index[-1] - pd.DateOffset(years=2)
        print(
            f"\n  the last two years alone (as-of {since:%Y-%m-%d} .. end), not seen when "
            "the served rule was chosen (bench/aggregation_choice.py):"
        )
        chance = calibrated_chance(served[pd.DatetimeIndex(served["as_of"]) >= since], close)
        for name, frame in side_by_side.items():
            compare(name, frame[pd.DatetimeIndex(frame["as_of"]) >= since], close, None, chance)
    if args.no_baselines:
        return
    for name, make in (
        ("drift", lambda: DriftForecaster(horizon=config.horizon)),
        (
            f"seasonal naive ({season})",
            lambda: SeasonalNaiveForecaster(season, horizon=config.horizon),
        ),
    ):
        baseline = walk_forward(
            candles, make, start, args.end, BacktestPolicy(retrain_every=1, finetune_epochs=0)
        )
        report(name, baseline.metrics)


def _cached(
    folder: Path | None, source: Path, what: tuple, run: Callable[[], BacktestResult]
) -> tuple[BacktestResult, float]:
    """``run()`` and its seconds, or what an earlier identical run left in ``folder``.

    The key hashes the source file's bytes and ``what`` (config, policy, dates), so a changed
    file or setting never reuses stale forecasts; the seconds are the original run's.
    """
    started = time.perf_counter()
    if folder is None:
        return run(), time.perf_counter() - started
    digest = hashlib.sha256(source.read_bytes() + repr(what).encode()).hexdigest()[:16]
    path = folder / f"{source.stem}-{digest}.pickle"
    if path.exists():
        with path.open("rb") as handle:
            return pickle.load(handle)
    result = run()
    seconds = time.perf_counter() - started
    folder.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        pickle.dump((result, seconds), handle)
    return result, seconds


def service_config(series: str) -> ForecasterConfig:
    """The forecaster config the service would use for ``series`` (its timeframe's defaults)."""
    try:
        from settings import get_settings
    except ImportError:  # before per-timeframe settings: the package defaults
        return ForecasterConfig()
    return get_settings().series_config(series).forecaster


def report(name: str, metrics: pd.DataFrame) -> None:
    """The pooled row against the targets, then one line per horizon."""
    pooled = metrics.loc[0]
    print(
        f"\n{name}: RMSE {_price(pooled['rmse'])} vs naive {_price(pooled['naive_rmse'])}"
        f" -> ratio {pooled['rmse'] / pooled['naive_rmse']:.4f} (target <= 1.00, goal 0.97);"
        f" MASE {pooled['mase']:.4f}; direction {pooled['direction']:.3f};"
        f" coverage 80% {pooled['coverage_80']:.3f} (target 0.77-0.83),"
        f" 95% {pooled['coverage_95']:.3f}"
    )
    for horizon, row in metrics.drop(index=0).iterrows():
        print(
            f"  h={horizon}: n {int(row['n']):4d}  ratio {row['rmse'] / row['naive_rmse']:.4f}"
            f"  MAPE {row['mape']:.2f}%  cov80 {row['coverage_80']:.3f}"
            f"  cov95 {row['coverage_95']:.3f}  width80 {_price(row['width_80'])}"
        )


def _price(value: float) -> str:
    """$1,234 for BTC-sized numbers, $0.01234 for ADA-sized ones."""
    return f"${value:,.0f}" if abs(value) >= 1000 else f"${value:.4g}"


if __name__ == "__main__":
    main()
