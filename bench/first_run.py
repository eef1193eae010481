"""A new series' first run with its warm-up, side by side with one without (issue 27.3).

    .venv/bin/python bench/first_run.py [--source ../shared/data/Bitstamp_BTCUSD_d.csv]
        [--repeats 2]

``cdd-forecast run --source FILE`` as a user runs it (a child process, the service's defaults,
a fresh SQLite file in a temporary folder), alternately with ``--no-warmup`` (today's first
run before the warm-up existed) and without (the default warm-up, `flows/warmup.py`), each
``--repeats`` times. Prints each run's wall and CPU seconds with the load beside it, what the
first served forecast's weights were learned from (the ``forecast_weights`` rows of its daily
run: how many horizons served the prior), and the metric rows stored; then the ratio of the
medians (target: at most 2, the first served forecast's weights learned at every horizon).
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "Bitstamp_BTCUSD_d.csv"


def first_run(source: Path, warmup: bool, timeout: float) -> dict:
    """One first run in a fresh folder; its seconds and what its tables hold afterwards."""
    with tempfile.TemporaryDirectory(prefix="cddf-first-run-") as folder:
        env = {key: value for key, value in os.environ.items() if not key.startswith("CDDF_")}
        database = Path(folder) / "first-run.sqlite"
        env["CDDF_DATABASE_URL"] = f"sqlite:///{database}"
        env["PYTHONPATH"] = str(ROOT)  # this checkout's code, whichever the venv installed
        argv = [str(ROOT / ".venv" / "bin" / "cdd-forecast"), "run", "--source", str(source)]
        load, cpu = os.getloadavg()[0], _children_cpu()
        started = time.perf_counter()
        done = subprocess.run(
            argv + ([] if warmup else ["--no-warmup"]),
            cwd=folder, env=env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        if done.returncode:
            raise SystemExit(f"first run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        with sqlite3.connect(database) as tables:
            (prior, horizons) = tables.execute(
                "SELECT count(DISTINCT CASE WHEN w.from_prior THEN w.horizon END), "
                "count(DISTINCT w.horizon) FROM forecast_weights w "
                "JOIN forecast_runs r ON r.id = w.run_id WHERE r.kind = 'daily'"
            ).fetchone()
            (metrics,) = tables.execute("SELECT count(*) FROM forecast_metrics").fetchone()
            (runs,) = tables.execute("SELECT count(*) FROM forecast_runs").fetchone()
    return {
        "seconds": seconds,
        "cpu": _children_cpu() - cpu,
        "load": load,
        "prior": prior,
        "horizons": horizons,
        "metrics": metrics,
        "runs": runs,
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=DATA, help="a CDD file (one series)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side, alternated")
    parser.add_argument("--timeout", type=float, default=900, help="seconds for one run")
    args = parser.parse_args()
    if not args.source.exists():
        raise SystemExit(f"{args.source} not found: the shared data lives in ../shared/data/")
    print(f"first run of {args.source.name}, {args.repeats} of each side, alternated")
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for warmup in (False, True):
            result = first_run(args.source, warmup, args.timeout)
            seconds[warmup].append(result["seconds"])
            name = "with warm-up" if warmup else "--no-warmup"
            print(
                f"{name:13s} {result['seconds']:6.1f} s wall, {result['cpu']:6.1f} s CPU "
                f"(load {result['load']:.1f}); forecast runs {result['runs']}, first served "
                f"forecast: {result['prior']} of {result['horizons']} horizons from the prior; "
                f"forecast_metrics rows {result['metrics']}",
                flush=True,
            )
    ratio = statistics.median(seconds[True]) / statistics.median(seconds[False])
    print(f"median with warm-up / without: {ratio:.2f} (target <= 2)")


if __name__ == "__main__":
    main()
