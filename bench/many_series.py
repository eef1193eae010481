"""Many series side by side (issue 9.5): the daily flow on N real daily series, serial vs parallel.

    nice .venv/bin/python bench/many_series.py [--n 1,4,8] [--parallel 4] [--skip-second]
        [--hourly] [--global-model [--repeat R]]

For each N and each parallelism (1 = serial, then ``--parallel``), on a fresh SQLite database:
the daily run on N real CryptoDataDownload daily files (../shared/data/Bitstamp_BTCUSD_d.csv
first, then ../shared/data/multi/*_d.csv in name order) passed as a ``--source`` directory,

1. first run: the files without their newest final day -> every series retrains;
2. second run: the whole files, one more final day -> every series fine-tunes.

Reported: wall seconds, CPU seconds of the process (every thread, TensorFlow's included) and of
Prefect's temporary API server (a child process, read from /proc), the per-series cost, and the
parallel/serial ratios. ``--hourly`` adds one hourly series (``Binance_ADAUSDT_1h``, the service's
hourly defaults), serial, reported on its own. ``--global-model`` adds, for each N, the same
runs with one global model for the daily series, in parallel; every file of that run (local
rows too) is then cut at the newest day all of them have (the multi files end in October 2021:
a global model serves series that are current together). A fine-tune day's wall varies by a
third from run to run on a small machine: ``--repeat R`` runs it R times a side, local models
and the global model alternately, each from the database as the first run left it, and
reports the median of the R global / local ratios. Targets: first run N=8 parallel
<= 0.8x serial; fine-tune day N=8 parallel <= 0.6x serial; per-series CPU seconds of the
fine-tune day no higher in parallel (issue 9); fine-tune day N=8 with the global model <= 0.5x
the local models' (issue 14). The forecaster runs with the service's config per series
(the daily defaults unless CDDF_FORECASTER / CDDF_TIMEFRAME_SETTINGS say otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
SHARED = BENCH.parents[1] / "shared" / "data"


def daily_files() -> list[Path]:
    """The real daily files: Bitstamp BTC/USD, then the other pairs' in name order."""
    files = [SHARED / "Bitstamp_BTCUSD_d.csv", *sorted((SHARED / "multi").glob("*_d.csv"))]
    missing = [path for path in files[:1] if not path.exists()]
    if missing:
        raise SystemExit(f"benchmark data {missing[0]} not found; it lives in ../shared/data/")
    return files


def data_lines(path: Path) -> tuple[list[str], list[str]]:
    """A CDD file's header lines and its data rows (newest first)."""
    lines = path.read_text().splitlines(keepends=True)
    first_data = next(i for i, line in enumerate(lines) if line[:1].isdigit())
    return lines[:first_data], lines[first_data:]


def day_of(row: str) -> str:
    """The day (YYYY-MM-DD) of a CDD data row: the date column's first 10 characters."""
    return row.split(",")[1][:10]


def common_end(files: list[Path]) -> str:
    """The newest day every file has: a global model serves series that are all current."""
    return min(day_of(data_lines(path)[1][0]) for path in files)


def write_source(folder: Path, files: list[Path], drop_newest: int, end: str | None = None) -> Path:
    """A source directory holding each file without its rows after ``end`` (a day), then
    without its ``drop_newest`` newest data rows."""
    folder.mkdir(parents=True)
    for path in files:
        header, rows = data_lines(path)
        if end is not None:
            rows = [row for row in rows if day_of(row) <= end]
        (folder / path.name).write_text("".join(header + rows[drop_newest:]))
    return folder


@dataclass(frozen=True)
class Measured:
    wall: float
    cpu: float
    api_cpu: float
    failed: list[str]
    actions: list[str]


def children_cpu() -> float:
    """CPU seconds used so far by this process's live children (Prefect's API server)."""
    total, ticks = 0.0, os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == os.getpid():  # ppid; utime and stime follow at 11, 12
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def daily_run(keys: list[str], source: Path) -> Measured:
    from flows.daily import daily_flow

    wall, cpu, api = time.perf_counter(), time.process_time(), children_cpu()
    state = daily_flow(keys, source=str(source), return_state=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    api = children_cpu() - api
    result = state.result(raise_on_failure=False)
    outcomes = getattr(result, "outcomes", result)
    failed = [f"{o.series} at {o.failed_step}: {o.error}" for o in outcomes if o.failed_step]
    actions = sorted({o.trained.action for o in outcomes if o.trained})
    return Measured(wall, cpu, api, failed, actions)


def warm_up() -> None:
    """Start Prefect's temporary API before timing anything (the first flow run starts it)."""
    from prefect import flow

    flow(name="warm-up")(lambda: None)()


TIMEFRAME_SETTINGS = os.environ.get("CDDF_TIMEFRAME_SETTINGS") or "{}"


def use(database: Path, parallel: int, scope: str = "series") -> None:
    """Point the service at a fresh database with the given parallelism and daily model scope
    (``series``: one model per series; ``timeframe``: one global model for the daily series)."""
    from db.engine import clear_engine_cache
    from settings import get_settings

    os.environ["CDDF_DATABASE_URL"] = f"sqlite:///{database}"
    os.environ["CDDF_MAX_PARALLEL_SERIES"] = str(parallel)
    settings = json.loads(TIMEFRAME_SETTINGS)
    settings.setdefault("d", {})["model_scope"] = scope
    os.environ["CDDF_TIMEFRAME_SETTINGS"] = json.dumps(settings)
    get_settings.cache_clear()
    clear_engine_cache()


def runs(
    folder: Path, chosen: list[Path], parallel: int, args, scope: str = "series"
) -> list[tuple[str, Measured]]:
    """The first (retrain) and second (fine-tune) daily runs of ``chosen`` on a fresh database;
    the database as the first run left it is kept beside it (for `second_again`)."""
    keys = [path.stem for path in chosen]
    end = common_end(chosen) if args.global_model else None  # local and global alike
    first = write_source(folder / "first", chosen, 2, end)
    use(folder.with_suffix(".sqlite"), parallel, scope)
    measured = [("first", daily_run(keys, first))]
    if not args.skip_second:
        copy_database(folder.with_suffix(".sqlite"), folder.with_suffix(".first.sqlite"))
        second = write_source(folder / "second", chosen, 1, end)
        measured.append(("second", daily_run(keys, second)))
    return measured


def second_again(folder: Path, chosen: list[Path], parallel: int, scope: str) -> Measured:
    """The second (fine-tune) run of `runs` again, from the database as its first run left it."""
    copy_database(folder.with_suffix(".first.sqlite"), folder.with_suffix(".sqlite"))
    use(folder.with_suffix(".sqlite"), parallel, scope)
    return daily_run([path.stem for path in chosen], folder / "second")


def copy_database(source: Path, target: Path) -> None:
    """Copy a SQLite database whole (SQLite's backup: its WAL included), replacing ``target``."""
    from db.engine import clear_engine_cache

    clear_engine_cache()  # the service's connections closed first
    with sqlite3.connect(source) as origin, sqlite3.connect(target) as copy:
        origin.backup(copy)


def repeat_second(folder: Path, n: int, chosen: list[Path], args, rows: dict) -> list[float]:
    """The fine-tune day ``args.repeat - 1`` more times a side, local and global alternately;
    the global / local wall of every pair, the first run's included."""
    ratios = [rows[n, -args.parallel, "second"].wall / rows[n, args.parallel, "second"].wall]
    for _ in range(args.repeat - 1):
        local = second_again(folder / f"n{n}_p{args.parallel}", chosen, args.parallel, "series")
        report(f"{n} | {args.parallel}", "second again", local, n)
        shared = second_again(folder / f"n{n}_global", chosen, args.parallel, "timeframe")
        report(f"{n} | {args.parallel} global", "second again", shared, n)
        ratios.append(shared.wall / local.wall)
    return ratios


def report(label: str, name: str, m: Measured, n: int) -> None:
    print(
        f"{label} | {name} | {m.wall:.1f} | {m.cpu:.1f} | {m.api_cpu:.1f} | {m.wall / n:.1f} "
        f"| {m.cpu / n:.1f} | {','.join(m.actions)} | {'; '.join(m.failed) or '-'}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="1,4,8", help="numbers of series, comma-separated")
    parser.add_argument("--parallel", type=int, default=4, help="CDDF_MAX_PARALLEL_SERIES")
    parser.add_argument("--skip-second", action="store_true", help="first run only")
    parser.add_argument("--hourly", action="store_true", help="also Binance_ADAUSDT_1h, serial")
    parser.add_argument(
        "--global-model",
        action="store_true",
        help="also each N with one global daily model (model_scope timeframe), in parallel",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="with --global-model: run each N's fine-tune day this many times a side, local "
        "(parallel) and global alternately, from the same stored state; the median ratio",
    )
    args = parser.parse_args()
    sizes = [int(n) for n in args.n.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="cddf-many-"))
    os.environ.setdefault("PREFECT_HOME", str(folder / "prefect"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["CDDF_CHART_DIR"] = str(folder / "charts")
    files = daily_files()
    warm_up()
    if max(sizes) > len(files):
        raise SystemExit(f"only {len(files)} daily files in {SHARED}: lower --n")
    print(f"work folder {folder}; {os.cpu_count()} CPUs; parallel = {args.parallel}")
    print(
        "N | parallel | run | wall s | CPU s | API server CPU s | wall/series | CPU/series "
        "| actions | failed"
    )
    rows: dict[tuple[int, int, str], Measured] = {}
    repeated: dict[int, list[float]] = {}  # N: global / local wall of each fine-tune day pair
    for n in sizes:
        for parallel in (1, args.parallel):
            for name, m in runs(folder / f"n{n}_p{parallel}", files[:n], parallel, args):
                rows[n, parallel, name] = m
                report(f"{n} | {parallel}", name, m, n)
        if args.global_model:
            folder_n = folder / f"n{n}_global"
            for name, m in runs(folder_n, files[:n], args.parallel, args, "timeframe"):
                rows[n, -args.parallel, name] = m  # negative: the global model's row
                report(f"{n} | {args.parallel} global", name, m, n)
            if not args.skip_second:
                repeated[n] = repeat_second(folder, n, files[:n], args, rows)
    print("\nparallel / serial (wall; CPU per series)")
    for (n, parallel, name), m in rows.items():
        if parallel < 0 and (n, -parallel, name) in rows:
            local = rows[n, -parallel, name]
            print(
                f"N={n} {name} run: global model / local models (both parallel) wall "
                f"{m.wall / local.wall:.2f}x, CPU {m.cpu / local.cpu:.2f}x"
            )
        elif parallel > 1 and (n, 1, name) in rows:
            serial = rows[n, 1, name]
            print(
                f"N={n} {name} run: wall {m.wall / serial.wall:.2f}x, "
                f"CPU/series {m.cpu / serial.cpu:.2f}x"
            )
    for n, ratios in repeated.items():
        print(
            f"N={n} second run repeated {len(ratios)} times a side: global / local wall "
            f"{', '.join(f'{r:.2f}' for r in ratios)}; median {statistics.median(ratios):.2f}x"
        )
    if args.hourly:
        hourly = SHARED / "multi" / "Binance_ADAUSDT_1h.csv"
        print(f"\nhourly: {hourly.stem}, the service's hourly defaults, serial")
        for name, m in runs(folder / "hourly", [hourly], 1, args):
            report("1 (hourly) | 1", name, m, 1)


if __name__ == "__main__":
    main()
