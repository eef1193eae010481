"""The daily run at catalogue scale (issue 26): N synthetic series through the service's CLI.

    nice .venv/bin/python bench/scale.py [--n 8,32,96,256] [--scope series,timeframe]
        [--days 2] [--parallel 4]
    nice .venv/bin/python bench/scale.py --soak 60 --n 32 --scope series [--png docs/scale_soak.png]
        [--warmup-periods 0]

Each of the N series is a renamed copy of a real daily file (../shared/data/Bitstamp_BTCUSD_d.csv
and ../shared/data/multi/*_d.csv in turn): exchange ``Scale``, pair ``S<i>USD``, its prices and
quote volume scaled by a factor of its own, its symbol and volume columns rewritten to match.
Every copy is cut at the newest day all real files have, so that a global model's series are
current together. For each N and model scope (``series``: one model per series; ``timeframe``:
one global daily model), on a fresh SQLite database and a fresh Prefect home (its ephemeral API's
database), the command an operator runs, ``cdd-forecast run --source DIR --series ...``, in a
child process:

- day 0, the first run: the files without their newest ``--days`` days: every model trains;
- days 1..``--days``: the files one day longer each run: the fine-tune days.

Reported per run: wall and CPU seconds (the command and its children: Prefect's temporary API
server), peak memory (the largest resident set of the command or a child), the growth of the
service's and of Prefect's database files, the largest Prefect artifact, Prefect's task runs and
log rows added, the console's bytes, and per-series wall and CPU. ``--soak D`` runs D fine-tune
days after the first run and writes each day's wall and both databases' sizes to a CSV (and a
PNG with ``--png``), then reports the first and last ten days' means side by side;
``--replot LOG`` makes the same CSV, report and plot from a soak's printed output (one stopped
before its end writes no CSV).

A soak's days pass in minutes, but Prefect's retention (``CDDF_PREFECT_RETENTION_DAYS``, which
each ``run`` applies to the temporary API's history) counts real days: so after each soak day
every flow run in Prefect's database is dated one day earlier (`age_prefect_history`), and from
the retention's age on each run deletes the oldest day's history as it would a month into a year.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import itertools
import json
import math
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from bench.many_series import common_end, daily_files, data_lines, day_of  # noqa: E402

CLI = [sys.executable, "-c", "from flows.cli import app; app()"]
WARMUP_PERIODS: int | None = None  # --warmup-periods
DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Copy:
    """One synthetic series: its key, the real file it copies and its price factor."""

    key: str
    source: Path
    factor: float


def copies(n: int) -> list[Copy]:
    """N synthetic series over the real daily files in turn, each with a price factor of its own."""
    files = daily_files()
    return [
        Copy(f"Scale_S{i:03d}USD_d", files[i % len(files)], round(0.5 + (i * 0.37) % 2.0, 4))
        for i in range(n)
    ]


def renamed(copy: Copy, end: str) -> tuple[list[str], list[str]]:
    """``copy``'s header and data rows (newest first, none after ``end``), renamed and scaled."""
    header, rows = data_lines(copy.source)
    names = header[-1].rstrip("\n").split(",")
    first = rows[0].split(",")
    base, quote = first[names.index("symbol")].split("/")
    pair = copy.key.split("_")[1]
    new_base = pair.removesuffix("USD")
    prices = [names.index(name) for name in ("open", "high", "low", "close")]
    base_at, quote_at = names.index(f"Volume {base}"), names.index(f"Volume {quote}")
    renames = {f"Volume {base}": f"Volume {new_base}", f"Volume {quote}": "Volume USD"}
    out_header = [*header[:-1], ",".join(renames.get(name, name) for name in names) + "\n"]
    out_rows = []
    for row in rows:
        if day_of(row) > end:
            continue
        cells = row.rstrip("\n").split(",")
        cells[names.index("symbol")] = f"{new_base}/USD"
        for i in [*prices, quote_volume(cells, base_at, quote_at, prices[-1])]:
            cells[i] = repr(float(cells[i]) * copy.factor)
        out_rows.append(",".join(cells) + "\n")
    return out_header, out_rows


def quote_volume(cells: list[str], base_at: int, quote_at: int, close_at: int) -> int:
    """The column holding the row's quote volume: the real files' older rows have the two
    volume columns swapped (Bitstamp BTC/USD before 2018-02-04), which the parser accepts."""
    base, quote, close = (float(cells[i]) for i in (base_at, quote_at, close_at))
    if base <= 0 or quote <= 0 or close <= 0:
        return quote_at
    as_named = abs(math.log(quote / (base * close)))
    swapped = abs(math.log(base / (quote * close)))
    return quote_at if as_named <= swapped else base_at


def write_day(folder: Path, series: list[Copy], end: str, drop_newest: int) -> None:
    """Each copy's file in ``folder`` without its ``drop_newest`` newest rows (up to ``end``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for copy in series:
        header, rows = renamed(copy, end)
        (folder / f"{copy.key}.csv").write_text("".join(header + rows[drop_newest:]))


@dataclass(frozen=True)
class Run:
    day: int
    wall: float
    cpu: float
    peak_mb: float
    service_mb: float
    prefect_mb: float
    largest_artifact_kb: float
    task_runs: int
    log_rows: int
    console_kb: float
    rc: int


def size_mb(path: Path) -> float:
    """A SQLite database's bytes with its write-ahead log, in MB."""
    parts = [path, path.with_name(path.name + "-wal")]
    return sum(p.stat().st_size for p in parts if p.exists()) / 1e6


def prefect_counts(database: Path) -> tuple[float, int, int]:
    """The largest artifact (kB), the task runs and the log rows of Prefect's database."""
    if not database.exists():
        return 0.0, 0, 0
    with sqlite3.connect(database) as db:
        largest = db.execute(
            "SELECT coalesce(max(length(coalesce(data, '')) + length(coalesce(description, ''))),"
            " 0) FROM artifact"
        ).fetchone()[0]
        task_runs = db.execute("SELECT count(*) FROM task_run").fetchone()[0]
        logs = db.execute("SELECT count(*) FROM log").fetchone()[0]
    return largest / 1e3, task_runs, logs


def run_day(day: int, keys: list[str], source: Path, env: dict[str, str], home: Path) -> Run:
    """The CLI's daily run on ``source``, measured."""
    command = [*CLI, "run", "--source", f"{source}/"]
    for key in keys:
        command += ["--series", key]
    started = time.perf_counter()
    child = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output = b""
    assert child.stdout is not None
    for chunk in iter(lambda: child.stdout.read(65536), b""):
        output += chunk
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if child.returncode != 0:
        sys.stderr.write(output.decode(errors="replace")[-4000:])
    largest, task_runs, logs = prefect_counts(home / "prefect.db")
    return Run(
        day=day,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        peak_mb=usage.ru_maxrss / 1024,
        service_mb=size_mb(home / "service.sqlite"),
        prefect_mb=size_mb(home / "prefect.db"),
        largest_artifact_kb=largest,
        task_runs=task_runs,
        log_rows=logs,
        console_kb=len(output) / 1e3,
        rc=child.returncode,
    )


def age_prefect_history(database: Path) -> int:
    """Date every flow run of Prefect's SQLite database one day earlier (the soak's day passing);
    how many. Its times are stored as ``YYYY-MM-DD HH:MM:SS.ffffff`` UTC text."""
    columns = ("start_time", "end_time", "expected_start_time")
    stamp = "%Y-%m-%d %H:%M:%S.%f"
    with sqlite3.connect(database) as db:
        rows = db.execute(f"SELECT id, {', '.join(columns)} FROM flow_run").fetchall()
        for id_, *times in rows:
            earlier = [
                None if t is None else (dt.datetime.fromisoformat(t) - DAY).strftime(stamp)
                for t in times
            ]
            db.execute(
                f"UPDATE flow_run SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?",
                (*earlier, id_),
            )
    return len(rows)


def environment(home: Path, scope: str, parallel: int) -> dict[str, str]:
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("CDDF_", "PREFECT_"))
    }
    env |= {
        "CDDF_DATABASE_URL": f"sqlite:///{home / 'service.sqlite'}",
        "CDDF_MAX_PARALLEL_SERIES": str(parallel),
        "CDDF_CHART_DIR": str(home / "charts"),
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    if scope == "timeframe":
        env["CDDF_TIMEFRAME_SETTINGS"] = json.dumps({"d": {"model_scope": "timeframe"}})
    if WARMUP_PERIODS is not None:  # the first run's warm-up (flows/warmup.py); unset: default
        env["CDDF_WARMUP_PERIODS"] = str(WARMUP_PERIODS)
    return env


def scenario(
    n: int, scope: str, days: int, parallel: int, work: Path, age_prefect: bool = False
) -> list[Run]:
    """Day 0 (first run) and ``days`` fine-tune days of N copies under ``scope``; with
    ``age_prefect``, Prefect's history a day older after each (`age_prefect_history`)."""
    home = work / f"{scope}-{n}"
    series = copies(n)
    end = common_end(sorted({copy.source for copy in series}))
    env = environment(home, scope, parallel)
    home.mkdir(parents=True)
    upgraded = subprocess.run([*CLI, "db", "upgrade"], cwd=ROOT, env=env, capture_output=True)
    if upgraded.returncode != 0:
        raise SystemExit(upgraded.stdout.decode() + upgraded.stderr.decode())
    runs = []
    for day in range(days + 1):
        source = home / f"source-{day}"
        write_day(source, series, end, drop_newest=days - day)
        runs.append(run_day(day, [copy.key for copy in series], source, env, home))
        print(f"  {scope} N={n} day {day}: {row(runs, n)}", flush=True)
        if runs[-1].rc != 0:
            print(f"  {scope} N={n} day {day} failed (exit {runs[-1].rc}); stopping", flush=True)
            break
        if age_prefect:
            age_prefect_history(home / "prefect.db")
    return runs


def row(runs: list[Run], n: int) -> str:
    """One run's figures, with the growth since the run before it."""
    run = runs[-1]
    before = runs[-2] if len(runs) > 1 else None
    service = run.service_mb - (before.service_mb if before else 0.0)
    prefect = run.prefect_mb - (before.prefect_mb if before else 0.0)
    tasks = run.task_runs - (before.task_runs if before else 0)
    logs = run.log_rows - (before.log_rows if before else 0)
    return (
        f"wall {run.wall:.1f} s ({run.wall / n:.2f} s/series), CPU {run.cpu:.1f} s "
        f"({run.cpu / n:.2f} s/series), peak {run.peak_mb:.0f} MB, service DB +{service:.2f} MB, "
        f"Prefect DB +{prefect:.2f} MB, largest artifact {run.largest_artifact_kb:.1f} kB, "
        f"+{tasks} task runs, +{logs} log rows, console {run.console_kb:.1f} kB, exit {run.rc}"
    )


def soak(n: int, scope: str, days: int, parallel: int, work: Path, out: Path, png: Path | None):
    runs = scenario(n, scope, days, parallel, work, age_prefect=True)
    report_soak(runs, n, scope, out, png)


DAY_LINE = re.compile(
    r"^\s+(?P<scope>\w+) N=(?P<n>\d+) day (?P<day>\d+): wall (?P<wall>[\d.]+) s .*?"
    r"CPU (?P<cpu>[\d.]+) s .*?peak (?P<peak>[\d.]+) MB, service DB \+(?P<service>[-\d.]+) MB, "
    r"Prefect DB \+(?P<prefect>[-\d.]+) MB, largest artifact (?P<artifact>[\d.]+) kB, "
    r"\+(?P<tasks>-?\d+) task runs, \+(?P<logs>-?\d+) log rows, console (?P<console>[\d.]+) kB, "
    r"exit (?P<rc>-?\d+)$"
)


def replot(log: Path, out: Path, png: Path | None) -> None:
    """The figures of a soak from the day lines it printed (a soak stopped before its end
    writes no CSV): sizes are the sums of the growths printed, from 0 before day 0."""
    runs: list[Run] = []
    for line in log.read_text().splitlines():
        if (m := DAY_LINE.match(line)) is None:
            continue
        before = runs[-1] if runs else Run(-1, 0, 0, 0, 0.0, 0.0, 0, 0, 0, 0, 0)
        runs.append(
            Run(
                int(m["day"]), float(m["wall"]), float(m["cpu"]), float(m["peak"]),
                before.service_mb + float(m["service"]), before.prefect_mb + float(m["prefect"]),
                float(m["artifact"]), before.task_runs + int(m["tasks"]),
                before.log_rows + int(m["logs"]), float(m["console"]), int(m["rc"]),
            )
        )  # fmt: skip
        n, scope = int(m["n"]), m["scope"]
    if not runs:
        raise SystemExit(f"{log}: no soak day line in it")
    report_soak(runs, n, scope, out, png)


def report_soak(runs: list[Run], n: int, scope: str, out: Path, png: Path | None) -> None:
    """The soak's CSV, its first and last ten fine-tune days side by side, and its plot."""
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(runs[0])))
        writer.writeheader()
        writer.writerows(asdict(run) for run in runs)
    print(f"soak figures: {out}")
    fine = runs[1:]
    if len(fine) >= 20:
        head, tail = fine[:10], fine[-10:]
        for name in ("wall", "cpu"):
            a = statistics.mean(getattr(r, name) for r in head)
            b = statistics.mean(getattr(r, name) for r in tail)
            print(f"  {name}: first 10 fine-tune days {a:.1f} s, last 10 {b:.1f} s ({b / a:.2f}x)")
        for name in ("service_mb", "prefect_mb"):
            sizes = [getattr(run, name) for run in runs]
            growth = [after - before for before, after in itertools.pairwise(sizes)][1:]
            a, b = statistics.mean(growth[:10]), statistics.mean(growth[-10:])
            print(f"  {name} growth per day: first 10 {a:.2f} MB, last 10 {b:.2f} MB")
    failed = [run.day for run in runs if run.rc != 0]
    print(f"  failed runs: {len(failed)} {failed}")
    if png is not None:
        plot(runs, png, f"{n} series, model scope {scope}, {len(runs) - 1} fine-tune days")


def plot(runs: list[Run], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [run.day for run in runs]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    top.plot(days, [run.wall for run in runs], marker=".")
    top.set_ylabel("wall per run, s")
    top.set_title(f"Soak: {title}")
    bottom.plot(days, [run.service_mb for run in runs], label="service database")
    bottom.plot(days, [run.prefect_mb for run in runs], label="Prefect database")
    bottom.set_ylabel("size, MB")
    bottom.set_xlabel("day (0 = first run)")
    bottom.legend()
    figure.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=80)
    print(f"soak plot: {png}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default="8,32,96,256", help="numbers of series, comma-separated")
    parser.add_argument("--scope", default="series,timeframe", help="model scopes to run")
    parser.add_argument("--days", type=int, default=2, help="fine-tune days after the first run")
    parser.add_argument("--parallel", type=int, default=4, help="CDDF_MAX_PARALLEL_SERIES")
    parser.add_argument("--soak", type=int, default=0, help="run this many days (one N, scope)")
    parser.add_argument(
        "--warmup-periods", type=int, help="CDDF_WARMUP_PERIODS (0: first runs do not warm up)"
    )
    parser.add_argument("--csv", type=Path, default=Path("scale_soak.csv"))
    parser.add_argument("--png", type=Path, default=None, help="plot the soak here")
    parser.add_argument(
        "--replot", type=Path, help="a soak's printed output: its CSV and plot from the day lines"
    )
    args = parser.parse_args()
    if args.replot is not None:
        replot(args.replot, args.csv, args.png)
        return
    global WARMUP_PERIODS
    WARMUP_PERIODS = args.warmup_periods
    sizes = [int(n) for n in args.n.split(",")]
    scopes = args.scope.split(",")
    print(f"load: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}")
    with tempfile.TemporaryDirectory(prefix="cddf-scale-") as work:
        if args.soak:
            if len(sizes) != 1 or len(scopes) != 1:
                raise SystemExit("--soak takes one --n and one --scope")
            soak(sizes[0], scopes[0], args.soak, args.parallel, Path(work), args.csv, args.png)
            return
        for scope in scopes:
            for n in sizes:
                scenario(n, scope, args.days, args.parallel, Path(work))
    print(f"load: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}")


if __name__ == "__main__":
    main()
