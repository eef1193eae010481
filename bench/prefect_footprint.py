"""Prefect's footprint per daily run (issue 26 items 2 and 5): database growth, largest artifact,
task runs, log rows, console output, as `cdd-forecast run` leaves them.

    nice .venv/bin/python bench/prefect_footprint.py [--n 32] [--days 3] [--checkout DIR]

N synthetic daily series (random walks, ``Bitstamp_S<i>USD_d``, one global model for the
timeframe so that training is cheap) are written as a ``--source`` directory, one candle more
each day; the CLI runs once per day in a child process against its own Prefect home and its own
SQLite service database, so that Prefect's temporary API starts and stops as in production.
After each run: the size of Prefect's database (``prefect.db`` with its WAL), its rows per table
(flow runs, task runs, logs, artifacts, events), the largest artifact's bytes, the flow run's
name, the console output's bytes and lines and its ERROR lines. ``--checkout DIR`` runs another
checkout's code (e.g. ``git archive <commit>`` unpacked) for a before/after comparison; the
series files come from this one.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

HISTORY = 400  # candles of the first day: past the daily window and its validation
TABLES = ("flow_run", "task_run", "task_run_state", "log", "artifact", "events", "event_resources")


def write_day(folder: Path, keys: list[str], candles: int, total: int) -> None:
    """Each series' first ``candles`` of its ``total`` final candles as its CDD file in
    ``folder`` (the same candles every day: a random walk drawn for ``total`` at once)."""
    from cdd.series_key import SeriesKey
    from tests.flows.cdd_files import make_candles, make_cdd_csv

    folder.mkdir(parents=True, exist_ok=True)
    for seed, key in enumerate(keys):
        parsed = SeriesKey.parse(key)
        # every candle weeks old, so final: each day's run adds one
        start = (time_now_day() - parsed.period * (total + 30)).tz_localize(None)
        frame = make_candles(parsed, total, start=start, seed=seed).iloc[:candles]
        (folder / f"{key}.csv").write_bytes(make_cdd_csv(parsed, frame))


def time_now_day():
    import pandas as pd

    return pd.Timestamp.now(tz="UTC").normalize()


def prefect_figures(home: Path) -> dict[str, object]:
    """Prefect's database once its WAL is checkpointed: the bytes its pages in use take (the
    file less its free pages, which SQLite reuses before it grows), rows per table, the largest
    artifact, run names."""
    with sqlite3.connect(home / "prefect.db") as con:
        con.execute("pragma wal_checkpoint(truncate)")
        pages, free, page_size = (
            con.execute(f"pragma {name}").fetchone()[0]
            for name in ("page_count", "freelist_count", "page_size")
        )
        rows = {
            table: con.execute(f"select count(*) from {table}").fetchone()[0] for table in TABLES
        }
        largest = con.execute("select max(length(data)) from artifact").fetchone()[0] or 0
        names = [name for (name,) in con.execute("select name from flow_run order by created")]
    return {
        "bytes": (pages - free) * page_size,
        "rows": rows,
        "largest_artifact": largest,
        "names": names,
    }


def run_day(checkout: Path, keys: list[str], source: Path, env: dict[str, str], log: Path) -> dict:
    """`cdd-forecast run KEYS --source DIR` of ``checkout`` in a child process: wall, output
    (written to ``log``)."""
    command = [sys.executable, "-c", "from flows.cli import app; app()", "run"]
    command += [option for key in keys for option in ("--series", key)]
    command += ["--source", f"{source}/"]
    wall = time.perf_counter()
    done = subprocess.run(
        command, cwd=checkout, env=env, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - wall
    output = done.stdout + done.stderr
    log.write_text(output)
    lines = output.splitlines()
    return {
        "rc": done.returncode,
        "wall": wall,
        "output_bytes": len(output.encode()),
        "output_lines": len(lines),
        "error_lines": sum("| ERROR" in line for line in lines),  # Prefect's log format
        "tail": "\n".join(lines[-15:]) if done.returncode else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="series (default 32)")
    parser.add_argument("--days", type=int, default=3, help="daily runs (default 3)")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the code to run")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="prefect-footprint-"))
    folder.mkdir(parents=True, exist_ok=True)
    keys = [f"Bitstamp_S{i:04d}USD_d" for i in range(args.n)]
    home = folder / "prefect"
    env = {
        **os.environ,
        "PYTHONPATH": str(args.checkout.resolve()),
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "CDDF_DATABASE_URL": f"sqlite:///{folder / 'service.sqlite'}",
        "CDDF_CHART_DIR": str(folder / "charts"),
        "CDDF_MAX_PARALLEL_SERIES": "4",
        "CDDF_TIMEFRAME_SETTINGS": json.dumps({"d": {"model_scope": "timeframe"}}),
    }
    env.pop("PREFECT_API_URL", None)
    print(f"N = {args.n}, checkout {args.checkout.resolve()}, work in {folder}", flush=True)
    print(
        "| day | rc | wall s | Prefect DB MB | growth MB | largest artifact kB | task runs "
        "| logs | events | console kB | console lines | ERROR lines | run name chars |"
    )
    print("|---" * 13 + "|")
    before = 0
    for day in range(args.days):
        source = folder / f"day{day}"
        write_day(source, keys, HISTORY + day, HISTORY + args.days)
        measured = run_day(args.checkout.resolve(), keys, source, env, folder / f"day{day + 1}.log")
        if not (home / "prefect.db").exists():
            raise SystemExit(f"day {day + 1}: no Prefect database in {home}:\n{measured['tail']}")
        figures = prefect_figures(home)
        rows = figures["rows"]
        print(
            f"| {day + 1} | {measured['rc']} | {measured['wall']:.1f} "
            f"| {figures['bytes'] / 1e6:.2f} | {(figures['bytes'] - before) / 1e6:.2f} "
            f"| {figures['largest_artifact'] / 1e3:.1f} | {rows['task_run']} | {rows['log']} "
            f"| {rows['events']} | {measured['output_bytes'] / 1e3:.1f} "
            f"| {measured['output_lines']} | {measured['error_lines']} "
            f"| {len(figures['names'][-1]) if figures['names'] else 0} |",
            flush=True,
        )
        if measured["tail"]:
            print(measured["tail"], flush=True)
        before = figures["bytes"]
    print("rows per table after the last day:", json.dumps(prefect_figures(home)["rows"]))


if __name__ == "__main__":
    main()
