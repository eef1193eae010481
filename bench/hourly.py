"""Issue 27 part 2: the hourly defaults, chosen before the test hours, and the first-run time.

Three commands, on the two shared hourly files (``../shared/data/multi/*_1h.csv``):

- ``choose``: every candidate (``--candidates``, JSON ``{name: 1h settings}``) walks forward
  the way the service follows a new hourly series — retrain every ``retrain_after`` hours on
  the newest ``train_candles``, a one-epoch fine-tune on the ``finetune_windows`` newest
  windows every hour between, the served aggregate replayed from an empty record (a new
  series' prior weights first) — over ``--hours`` as-of hours that END ``--gap`` hours before
  the last ``--test-hours`` (so no forecast it scores targets a test hour). Prints, per
  candidate and series, the served and raw LSTM RMSE / naive, Diebold–Mariano against naive
  and the seconds of its first fit (the first run's training cost); beside the served, the
  served with the LSTM's gate (``gate``: `forecaster.aggregate.GATE`, tried on 2026-12-07 and
  not adopted), replayed over the same forecasts.
- ``test``: the same walk-forward over the last ``--test-hours`` with the settings the service
  resolves for ``1h`` now (``settings/series.py`` ``TIMEFRAME_DEFAULTS["1h"]``, plus any
  ``CDDF_TIMEFRAME_SETTINGS``): report it once the choice is made.
- ``first-run``: ``cdd-forecast run`` of ``Binance_ADAUSDT_1h`` on a fresh SQLite file in a
  temporary folder, ingest to stored forecast, with the current defaults ("after") and with
  ``--before`` given as ``CDDF_TIMEFRAME_SETTINGS`` (the old defaults), side by side in one
  run, with the load average beside each.

    nice .venv/bin/python bench/hourly.py choose --jobs 2
    nice .venv/bin/python bench/hourly.py test --jobs 2
    .venv/bin/python bench/hourly.py first-run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _compare import served_replay  # noqa: E402
from _data import DATA, load_series  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FITTED = r"fitted on (\d+) windows .* in ([\d.]+)s on \w+, (\d+) epochs"  # the fit's log line
HOURLY = sorted((DATA.parent / "multi").glob("*_1h.csv"))
# TIMEFRAME_DEFAULTS["1h"] before issue 27, with ForecasterConfig's units, epochs and patience
BEFORE = {
    "window": 48,
    "horizon": 24,
    "validation_fraction": 0.1,
    "finetune_windows": 168,
    "train_candles": 8760,
    "retrain_after": 168,
    "units": 256,
    "max_epochs": 200,
    "patience": 10,
    "batch_size": 64,
}
CANDIDATES = {
    "u32 w24 2000": {
        "units": 32, "window": 24, "train_candles": 2000, "max_epochs": 30, "patience": 3,
        "batch_size": 128,
    },
    "u32 w48 2000": {
        "units": 32, "window": 48, "train_candles": 2000, "max_epochs": 30, "patience": 3,
        "batch_size": 128,
    },
    "u64 w48 4000": {
        "units": 64, "window": 48, "train_candles": 4000, "max_epochs": 30, "patience": 3,
        "batch_size": 128,
    },
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    choose = commands.add_parser("choose", help="candidates before the test hours")
    choose.add_argument("--candidates", default=json.dumps(CANDIDATES), help="JSON")
    choose.add_argument("--hours", type=int, default=336, help="as-of hours scored")
    choose.add_argument("--gap", type=int, default=24, help="hours between them and the test")
    test = commands.add_parser("test", help="the current 1h settings on the test hours")
    for command in (choose, test):
        command.add_argument("--test-hours", type=int, default=720)
        command.add_argument("--jobs", type=int, default=1, help="walk-forwards side by side")
    first = commands.add_parser("first-run", help="cdd-forecast run, before and after")
    first.add_argument("--before", default=json.dumps(BEFORE), help="the old 1h settings")
    first.add_argument("--source", type=Path, default=HOURLY[0] if HOURLY else None)
    first.add_argument("--skip-before", action="store_true", help="the current defaults only")
    first.add_argument(
        "--timeout", type=float, default=1800, help="seconds a side may run before it is stopped"
    )
    args = parser.parse_args()
    print(f"# bench/hourly.py {args.command}  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {_load()}")
    if args.command == "first-run":
        first_run(args)
        return
    if not HOURLY:
        raise SystemExit(f"no hourly file in {DATA.parent / 'multi'}: it lives in ../shared/data/")
    if args.command == "choose":
        runs = [
            (name, overrides, path, -(args.test_hours + args.gap + args.hours), args.hours)
            for name, overrides in json.loads(args.candidates).items()
            for path in HOURLY
        ]
    else:
        hours = args.test_hours
        runs = [("current 1h settings", {}, path, -hours, hours) for path in HOURLY]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(evaluate, *zip(*runs, strict=True)))
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False))
    print("\nper candidate, both series' forecasts pooled (served RMSE / naive, geometric mean):")
    for name, part in table.groupby("candidate", sort=False):
        print(
            f"  {name:24s} served {np.exp(np.log(part['served']).mean()):.4f}"
            f"  LSTM {np.exp(np.log(part['lstm']).mean()):.4f}"
            f"  worst served {part['served'].max():.4f}"
            f"  first fit {part['first_fit_s'].max():.1f} s"
        )


def evaluate(
    name: str, overrides: dict[str, Any], path: Path, first: int, hours: int
) -> dict[str, Any]:
    """One walk-forward of ``path``'s as-of hours ``[first, first + hours)`` (from the end)."""
    from forecaster.backtest import BacktestPolicy, walk_forward
    from forecaster.metrics import score_forecasts
    from settings import get_settings
    from settings.series import ModelSettings

    settings = get_settings()
    timeframes = dict(settings.timeframe_settings)
    if overrides:
        timeframes["1h"] = ModelSettings(**overrides)
    series = path.name.removesuffix(".csv")
    resolved = _resolve(series, settings, timeframes)
    candles = load_series(path)
    start, end = candles.index[first], candles.index[first + hours - 1]
    policy = BacktestPolicy(
        retrain_every=resolved.retrain_after,
        finetune_epochs=1,
        train_candles=resolved.train_candles,
    )
    started = time.perf_counter()

    def progress(step: Any) -> None:
        if step.action == "retrain":
            print(
                f"  {name} {series} {step.as_of:%Y-%m-%d %H:%M} retrain {step.seconds:.1f} s, "
                f"{step.model.epochs_trained_} epochs [{time.perf_counter() - started:.0f} s]",
                file=sys.stderr,
                flush=True,
            )

    result = walk_forward(candles, resolved.forecaster, start, end, policy, on_step=progress)
    seconds = time.perf_counter() - started
    close = candles["close"].astype("float64")
    served, _ = served_replay(result.forecasts, close)
    gated, _ = served_replay(result.forecasts, close, gate=True)  # tried, not adopted
    actuals = pd.Series(close.to_numpy(), index=close.index)
    lstm = score_forecasts(result.forecasts, actuals).loc[0]
    aggregate = score_forecasts(served, actuals).loc[0]
    with_gate = score_forecasts(gated, actuals).loc[0]
    steps = result.steps
    return {
        "candidate": name,
        "series": series,
        "as_of": f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M}",
        "served": aggregate["rmse"] / aggregate["naive_rmse"],
        "served_dm": aggregate["dm_statistic"],
        "served_p": aggregate["dm_p_value"],
        "gate": with_gate["rmse"] / with_gate["naive_rmse"],
        "gate_dm": with_gate["dm_statistic"],
        "gate_p": with_gate["dm_p_value"],
        "lstm": lstm["rmse"] / lstm["naive_rmse"],
        "lstm_p": lstm["dm_p_value"],
        "cover80": aggregate["coverage_80"],
        "first_fit_s": float(steps["seconds"].iloc[0]),
        "retrains": int((steps["action"] == "retrain").sum()),
        "walk_s": seconds,
    }


def _resolve(series: str, settings: Any, timeframes: dict[str, Any]) -> Any:
    """The `SeriesConfig` the service would build for ``series`` with ``timeframes``."""
    from settings.series import resolve

    return resolve(
        series,
        forecaster=settings.forecaster,
        retrain_after_days=settings.retrain_after_days,
        timeframe_settings=timeframes,
        series_settings={},
    )


def first_run(args: argparse.Namespace) -> None:
    """``cdd-forecast run`` on a fresh SQLite file: the current defaults, then ``--before``."""
    if args.source is None or not args.source.exists():
        raise SystemExit(f"hourly file {args.source} not found: it lives in ../shared/data/multi/")
    series = args.source.name.removesuffix(".csv")
    sides = [("after (current defaults)", None)]
    if not args.skip_before:
        sides.append(("before (--before)", json.dumps({"1h": json.loads(args.before)})))
    for name, timeframe_settings in sides:
        with tempfile.TemporaryDirectory(prefix="cddf-hourly-") as folder:
            env = {key: value for key, value in os.environ.items() if not key.startswith("CDDF_")}
            env["CDDF_DATABASE_URL"] = f"sqlite:///{folder}/first-run.sqlite"
            env["PYTHONPATH"] = str(ROOT)  # this checkout's code, whichever the venv installed
            if timeframe_settings is not None:
                env["CDDF_TIMEFRAME_SETTINGS"] = timeframe_settings
            load = _load()
            cpu = _children_cpu()
            started = time.perf_counter()
            try:
                done = subprocess.run(
                    [str(ROOT / ".venv" / "bin" / "cdd-forecast"), "run", "--series", series,
                     "--source", str(args.source)],
                    cwd=folder, env=env, capture_output=True, text=True, check=False,
                    timeout=args.timeout,
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                print(
                    f"{name:26s} NOT FINISHED after {args.timeout:.0f} s wall, "
                    f"{_children_cpu() - cpu:6.1f} s CPU by then; load before {load}",
                    flush=True,
                )
                continue
            seconds = time.perf_counter() - started
        fit = re.search(FITTED, done.stderr)
        status = "ok" if done.returncode == 0 else f"FAILED (exit {done.returncode})"
        print(
            f"{name:26s} {status}: {seconds:6.1f} s wall, {_children_cpu() - cpu:6.1f} s CPU; "
            + (f"fit {fit[2]} s, {fit[3]} epochs on {fit[1]} windows; " if fit else "")
            + f"load before {load}",
            flush=True,
        )
        if done.returncode:
            print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
