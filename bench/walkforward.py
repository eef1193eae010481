"""Benchmark 3 of issue 5: a point-in-time walk-forward of the package's default model.

Every day from --start to the end of the Bitstamp daily file the model forecasts t+1..t+7
from the candles up to t only; it is refitted every --retrain-every days and fine-tuned
for --finetune-epochs on the days in between. Prints the RMSE ratio to naive persistence
(pooled and per horizon), 80 % / 95 % interval coverage and the time spent, next to the
drift and seasonal-naive baselines on the same as-of times.

    nice .venv/bin/python bench/walkforward.py                      # weekly retrain, daily tune
    nice .venv/bin/python bench/walkforward.py --retrain-every 28 --train-candles 1500
    .venv/bin/python bench/walkforward.py --start 2025-06-01        # a short smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402
from _data import load_daily  # noqa: E402

from forecaster import (  # noqa: E402
    DriftForecaster,
    ForecasterConfig,
    SeasonalNaiveForecaster,
)
from forecaster.backtest import BacktestPolicy, BacktestStep, walk_forward  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", default="2019-01-01")
    parser.add_argument("--end", default=None, help="last as-of day (default: the file's end)")
    parser.add_argument("--retrain-every", type=int, default=7)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--train-candles", type=int, default=None,
                        help="refit on the newest N candles only (default: all history)")
    parser.add_argument("--config", default="{}", help="ForecasterConfig overrides as JSON")
    args = parser.parse_args()

    candles = load_daily()
    overrides = json.loads(args.config)
    config = ForecasterConfig(**overrides)
    policy = BacktestPolicy(
        retrain_every=args.retrain_every,
        finetune_epochs=args.finetune_epochs,
        train_candles=args.train_candles,
    )
    print(f"# bench/walkforward.py  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"candles {len(candles)} ({candles.index[0]:%Y-%m-%d} .. {candles.index[-1]:%Y-%m-%d}),"
          f" as-of {args.start} .. {args.end or 'end'}")
    print(f"policy {policy}\nconfig {config}")

    started = time.perf_counter()

    def progress(step: BacktestStep) -> None:
        if step.action == "retrain":
            model = step.model
            print(f"  {step.as_of:%Y-%m-%d} retrain {step.seconds:5.1f}s "
                  f"{model.epochs_trained_} epochs, validation skill "
                  f"{model.validation_metrics_['skill']:+.4f}  "
                  f"[{time.perf_counter() - started:6.0f}s]", file=sys.stderr, flush=True)

    result = walk_forward(candles, config, args.start, args.end, policy, on_step=progress)
    seconds = time.perf_counter() - started
    steps = result.steps
    print(f"\n{len(steps)} as-of days in {seconds:.0f} s: "
          f"{(steps['action'] == 'retrain').sum()} retrains "
          f"({steps.loc[steps['action'] == 'retrain', 'seconds'].sum():.0f} s), "
          f"{(steps['action'] == 'finetune').sum()} fine-tunes "
          f"({steps.loc[steps['action'] == 'finetune', 'seconds'].sum():.0f} s)")
    report("LSTM (package default)", result.metrics)
    for name, make in (
        ("drift", lambda: DriftForecaster(horizon=config.horizon)),
        ("seasonal naive (7)", lambda: SeasonalNaiveForecaster(7, horizon=config.horizon)),
    ):
        baseline = walk_forward(candles, make, args.start, args.end,
                                BacktestPolicy(retrain_every=1, finetune_epochs=0))
        report(name, baseline.metrics)


def report(name: str, metrics: pd.DataFrame) -> None:
    """The pooled row against the targets, then one line per horizon."""
    pooled = metrics.loc[0]
    print(f"\n{name}: RMSE ${pooled['rmse']:,.2f} vs naive ${pooled['naive_rmse']:,.2f}"
          f" -> ratio {pooled['rmse'] / pooled['naive_rmse']:.4f} (target <= 1.00, goal 0.97);"
          f" MASE {pooled['mase']:.4f}; direction {pooled['direction']:.3f};"
          f" coverage 80% {pooled['coverage_80']:.3f} (target 0.77-0.83),"
          f" 95% {pooled['coverage_95']:.3f}")
    for horizon, row in metrics.drop(index=0).iterrows():
        print(f"  h={horizon}: n {int(row['n']):4d}  ratio {row['rmse'] / row['naive_rmse']:.4f}"
              f"  MAPE {row['mape']:.2f}%  cov80 {row['coverage_80']:.3f}"
              f"  cov95 {row['coverage_95']:.3f}  width80 ${row['width_80']:,.0f}")


if __name__ == "__main__":
    main()
