"""Backfill benchmark (issue 27): the service's backfill of BTC daily, time per as_of by phase.

    nice .venv/bin/python bench/backfill.py [--range 2019-01-01:2025-09-23]
        [--side-by-side 2025-03-01:2025-05-31] [--baseline 2f8813e] [--baseline-first]
        [--skip-full] [--processes N]
    nice .venv/bin/python bench/backfill.py --daily-multi   # the 8 daily series of multi/

Each backfill runs in a child process of its own, through the CLI's code (`cdd-forecast
ingest --source ../shared/data/Bitstamp_BTCUSD_d.csv`, then `cdd-forecast backfill`, with
typer's app called in-process so that the phases can be timed), on a fresh SQLite database
with the service's defaults:

1. side by side, on the short ``--side-by-side`` range: today's code (this checkout) and the
   ``--baseline`` commit (checked out into a temporary git worktree, run with the same venv);
   the ratio of their seconds per as_of;
2. the full ``--range`` with today's code (``--skip-full`` leaves it out), its seconds per
   as_of against the baseline's of step 1, and the served forecasts' quality read back from
   the tables (every stored forecast against the stored final candles, all horizons pooled,
   scored by `forecaster.metrics.score_forecasts`): RMSE / naive, Diebold-Mariano against
   naive, interval scores beside the naive-empirical ones, coverage.

``--daily-multi`` backfills instead each daily series of ``../shared/data/multi/`` from its
1,001st final candle (the as_ofs of `bench/walkforward.py --daily-multi`) to its last, each on
a fresh database, and prints the same quality per series, read back from the tables.

The phases (seconds per as_of, in the backfill's own process) are timed by wrapping the
functions that do them: retrain (``LSTMForecaster.fit``; with a retrain pool, the time the
backfill waited for one), fine-tune (``update``), forecast (``predict``), serialise
(``to_bytes`` / ``from_bytes``), aggregation (the served forecast's record and weights),
storage (registering versions, writing forecast runs, dropping weights, the queries of the
backfill), scoring (the evaluate flow at the end); "Prefect and other" is the rest of the
backfill's wall time: task runs, logging, planning. The load (``uptime``) is printed with
each figure: the machine is shared.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = ROOT.parent / "shared" / "data" / "Bitstamp_BTCUSD_d.csv"
MULTI = DATA.parent / "multi"
SERIES = "Bitstamp_BTCUSD_d"

# (module, attribute, phase): the functions whose time is each phase's; an attribute a
# version of the code does not have is left out
PHASES = [
    ("forecaster.model", "LSTMForecaster.fit", "retrain"),
    ("flows.backfill", "retrained_model", "retrain"),
    ("forecaster.model", "LSTMForecaster.update", "fine-tune"),
    ("forecaster.model", "LSTMForecaster.predict", "forecast"),
    ("forecaster.model", "LSTMForecaster.to_bytes", "serialise"),
    ("forecaster.model", "LSTMForecaster.from_bytes", "serialise"),
    ("flows.served", "served_forecast", "aggregation"),
    ("flows.versions", "register_version", "storage"),
    ("flows.served", "write_forecast_run", "storage"),
    ("flows.backfill", "drop_artifacts", "storage"),
    ("flows.backfill", "latest_version", "storage"),
    ("flows.backfill", "runs", "storage"),
    ("flows.backfill", "evaluate_flow", "scoring"),
]
ORDER = [
    "retrain",
    "fine-tune",
    "forecast",
    "serialise",
    "aggregation",
    "storage",
    "scoring",
    "Prefect and other",
]


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


# the child: one backfill through the CLI's code, its phases timed ---------------------------


class Timers:
    """Seconds per phase, summed over threads; a phase nested in another counts once."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()
        self._inside = threading.local()

    def wrap(self, function, phase: str):
        timers = self

        def timed(*args, **kwargs):
            if getattr(timers._inside, "phase", None):  # nested: the outer phase counts it
                return function(*args, **kwargs)
            timers._inside.phase = phase
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                timers._inside.phase = None
                with timers._lock:
                    timers.seconds[phase] = (
                        timers.seconds.get(phase, 0.0) + time.perf_counter() - started
                    )

        return timed

    def install(self) -> None:
        for module_name, attribute, phase in PHASES:
            module = importlib.import_module(module_name)
            owner_name, _, name = attribute.rpartition(".")
            owner = getattr(module, owner_name) if owner_name else module
            original = owner.__dict__.get(name) if owner_name else getattr(module, name, None)
            if original is None:
                continue
            if isinstance(original, classmethod):
                wrapped = self.wrap(original.__func__, phase)
                setattr(owner, name, classmethod(wrapped))
            else:
                setattr(owner, name, self.wrap(original, phase))


def child(start: str, end: str, folder: Path, with_quality: bool, source: Path) -> None:
    """Ingest the file and backfill ``start``..``end`` as the CLI does; print a JSON line."""
    os.environ["CDDF_DATABASE_URL"] = f"sqlite:///{folder / 'backfill.sqlite'}"
    from flows.cli import app

    series = source.name.removesuffix(".csv")
    app(["ingest", "--series", series, "--source", str(source)], standalone_mode=False)
    timers = Timers()
    timers.install()
    started = time.perf_counter()
    app(
        ["backfill", "--series", series, "--start", start, "--end", end],
        standalone_mode=False,
    )
    wall = time.perf_counter() - started
    from db.engine import get_engine
    from db.forecasts import runs
    from db.registry import versions

    kinds = [version.kind for version in versions(get_engine(), series)]
    quality = served_quality(get_engine(), series) if with_quality else {}
    print(
        "RESULT "
        + json.dumps(
            {
                "wall": wall,
                "as_ofs": len(runs(get_engine(), series)),
                "retrains": kinds.count("retrain"),
                "finetunes": kinds.count("finetune"),
                "phases": timers.seconds,
                "quality": quality,
            }
        ),
        flush=True,
    )


def served_quality(engine, series: str) -> dict[str, float]:
    """The backfill's stored forecasts against the stored final candles, all runs and
    horizons pooled, scored by `forecaster.metrics.score_forecasts` (as the evaluate flow)."""
    from db.candles import load_candles
    from db.forecasts import run_forecasts, runs

    forecasts = run_forecasts(engine, [run.id for run in runs(engine, series)])
    actuals = load_candles(engine, series)["close"]
    from forecaster.metrics import score_forecasts

    pooled = score_forecasts(forecasts, actuals).loc[0]
    names = ["n", "skill", "lstm_skill", "interval_score_80", "interval_score_95"]
    names += ["naive_interval_score_80", "naive_interval_score_95", "coverage_80", "coverage_95"]
    names += ["dm_statistic", "dm_p_value"]
    return {name: float(pooled[name]) for name in names}


# the parent: runs the children, prints the tables --------------------------------------------


def run_backfill(
    root: Path,
    start: str,
    end: str,
    env: dict[str, str],
    quality: bool = False,
    source: Path = DATA,
) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as folder:
        home = Path(folder) / "prefect"
        command = [sys.executable, str(BENCH / "backfill.py"), "--child", f"{start}:{end}"]
        command += ["--folder", folder, "--source", str(source)]
        command += ["--quality"] if quality else []
        before = load()
        done = subprocess.run(
            command,
            cwd=root,
            env={
                **env,
                "PYTHONPATH": str(root),
                "PREFECT_HOME": str(home),
                "BENCH_ROOT": str(root),
            },
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(
                f"the backfill in {root} failed:\n{done.stdout[-3000:]}{done.stderr[-5000:]}"
            )
        [line] = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        result = json.loads(line.removeprefix("RESULT "))
        result["load"] = f"{before} / {load()}"
        return result


def report(name: str, result: dict) -> None:
    n = result["as_ofs"]
    phases = dict(result["phases"])
    phases["Prefect and other"] = result["wall"] - sum(phases.values())
    print(
        f"\n{name}: {n} as_of times ({result['retrains']} retrains, {result['finetunes']} "
        f"fine-tunes) in {result['wall']:.1f} s = {result['wall'] / n:.3f} s per as_of"
    )
    print(f"  load (uptime before / after): {result['load']}")
    print(f"  {'phase':<18} {'s per as_of':>11} {'share':>6}")
    for phase in ORDER:
        seconds = phases.get(phase, 0.0)
        print(f"  {phase:<18} {seconds / n:>11.3f} {seconds / result['wall']:>6.1%}")


def baseline_worktree(commit: str) -> Path:
    path = Path(tempfile.gettempdir()) / f"cdd-backfill-base-{commit}"
    if not path.exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(path), commit],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--range", default="2019-01-01:2025-09-23", help="START:END of the full run"
    )
    parser.add_argument(
        "--side-by-side", default="2025-03-01:2025-05-31", help="START:END of the baseline ratio"
    )
    parser.add_argument("--baseline", default="2f8813e", help="the commit to compare with")
    parser.add_argument("--skip-full", action="store_true", help="the side-by-side run only")
    parser.add_argument("--skip-baseline", action="store_true", help="today's code only")
    parser.add_argument("--baseline-first", action="store_true", help="run the baseline first")
    parser.add_argument("--processes", type=int, help="CDDF_BACKFILL_PROCESSES for today's code")
    parser.add_argument(
        "--daily-multi", action="store_true", help="the daily series of multi/, quality only"
    )
    parser.add_argument(
        "--multi", default="*_d.csv", help="with --daily-multi: the files of multi/ to run"
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="the daily models' seed (CDDF_TIMEFRAME_SETTINGS), to see how far a figure "
        "moves with the fit alone",
    )
    parser.add_argument(
        "--start",
        help="with --daily-multi: the first as_of date (default: each file's 1,001st candle), "
        "to start on the day another walk starts",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, default=DATA, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--quality", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        start, end = args.child.split(":")
        child(start, end, Path(args.folder), args.quality, args.source)
        return
    if not DATA.exists():
        raise SystemExit(f"benchmark data {DATA} not found; it lives in ../shared/data/")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDDF_")}
    ours = dict(env)
    if args.processes:
        ours["CDDF_BACKFILL_PROCESSES"] = str(args.processes)
    if args.seed is not None:
        ours["CDDF_TIMEFRAME_SETTINGS"] = json.dumps({"d": {"seed": args.seed}})
    if args.daily_multi:
        daily_multi(ours, args.multi, args.start)
        return
    start, end = args.side_by_side.split(":")
    print(
        f"== side by side, {start} .. {end} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})"
    )
    runs = [("today", ROOT, ours)]
    if not args.skip_baseline:  # the later run tends to see another load: --baseline-first
        base = ("baseline", baseline_worktree(args.baseline), env)
        runs = [base, *runs] if args.baseline_first else [*runs, base]
    results = {}
    for name, root, variables in runs:
        results[name] = run_backfill(root, start, end, variables)
        title = f"today's code ({head(ROOT)})" if name == "today" else f"baseline {args.baseline}"
        report(title, results[name])
    if not args.skip_baseline:
        new, old = results["today"], results["baseline"]
        ratio = (new["wall"] / new["as_ofs"]) / (old["wall"] / old["as_ofs"])
        print(f"\nratio today / baseline, seconds per as_of: {ratio:.3f}")
    if not args.skip_full:
        start, end = args.range.split(":")
        print(f"\n== full range, {start} .. {end}")
        full = run_backfill(ROOT, start, end, ours, quality=True)
        report(f"today's code ({head(ROOT)})", full)
        if not args.skip_baseline:
            ratio = (full["wall"] / full["as_ofs"]) / (old["wall"] / old["as_ofs"])
            print(f"\nratio full range / baseline's side by side, seconds per as_of: {ratio:.3f}")
        print_quality(full["quality"])


def daily_multi(env: dict[str, str], pattern: str = "*_d.csv", first: str | None = None) -> None:
    """Each daily series of multi/ from its 1,001st final candle (or from ``first``), its
    quality from the tables."""
    sys.path.insert(0, str(BENCH))
    from _data import load_series

    sources = sorted(MULTI.glob(pattern))
    if not sources:
        raise SystemExit(f"--multi {pattern!r} matches no file of {MULTI}")
    for source in sources:
        index = load_series(source).index
        start = first or f"{index[min(1000, len(index) - 1)]:%Y-%m-%d}"
        end = f"{index[-1]:%Y-%m-%d}"
        print(f"\n== {source.name.removesuffix('.csv')}, {start} .. {end}", flush=True)
        result = run_backfill(ROOT, start, end, env, quality=True, source=source)
        report(f"today's code ({head(ROOT)})", result)
        print_quality(result["quality"])


def print_quality(quality: dict[str, float]) -> None:
    """The served forecasts' figures read back from the tables (all horizons pooled)."""
    q = quality
    print(
        f"\nserved, from the tables ({q['n']:.0f} forecasts, all horizons): RMSE / naive "
        f"{1 - q['skill']:.4f} (the LSTM alone {1 - q['lstm_skill']:.4f}), Diebold-Mariano "
        f"against naive {q['dm_statistic']:+.2f} (p {q['dm_p_value']:.3f})\n"
        f"  interval score / close: 80 % {q['interval_score_80']:.4f} (naive-empirical "
        f"{q['naive_interval_score_80']:.4f}), 95 % {q['interval_score_95']:.4f} "
        f"({q['naive_interval_score_95']:.4f}); coverage 80 % {q['coverage_80']:.3f}, "
        f"95 % {q['coverage_95']:.3f}"
    )


def head(root: Path) -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "flows/backfill.py"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() + ("+" if dirty.stdout.strip() else "")


if __name__ == "__main__":
    main()
