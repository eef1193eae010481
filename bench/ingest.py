"""Ingest benchmark: parse a 1,000,000-row minute CDD file, store it twice in each database.

    nice .venv/bin/python bench/ingest.py [--rows 1000000] [--repeat 3] [--skip-sqlite]

Prints parse rows/s, first-ingest and unchanged re-ingest rows/s into PostgreSQL and SQLite, a
plain binary COPY of the same rows into a fresh keyed table (the limit) in the same run, and
the peak memory of the process. Each figure is the best of ``--repeat`` runs (each on a fresh
schema / file): on a shared machine other processes only ever add time; every run is shown.
PostgreSQL is ``CDDF_TEST_POSTGRES_URL`` (default: the local server, database ``test``); the
benchmark works in a schema of its own and drops it.

Targets (issue 2): first ingest into PostgreSQL >= 45 % of the COPY rows/s; unchanged
re-ingest >= 2x faster than the first ingest; peak memory < 2 GiB.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from _postgres import scratch_schema  # bench/, the script's folder, is on sys.path
from sqlalchemy.orm import Session

from cdd.parser import parse_cdd
from cdd.series_key import SeriesKey
from db.candle_frames import unix_micros
from db.candles import UpsertCounts, load_candles, upsert_candles
from db.candles_postgresql import ROW_FIELDS
from db.engine import make_engine, migrate
from db.pg_binary import encode_rows

KEY = SeriesKey.parse("Bitstamp_BTCUSD_minute")
BANNER = "https://www.CryptoDataDownload.com"
HEADER = "unix,date,symbol,open,high,low,close,Volume BTC,Volume USD"


def cdd_file(rows: int, now: pd.Timestamp, seed: int = 0) -> bytes:
    """A current-format CDD minute file of ``rows`` candles ending at ``now``, newest first."""
    rng = np.random.default_rng(seed)
    end = now.floor("min")
    times = pd.date_range(end=end, periods=rows, freq="min", tz="UTC")
    close = np.round(30_000 * np.exp(np.cumsum(rng.normal(0, 5e-4, rows))), 2)
    open_ = np.round(np.r_[close[0], close[:-1]], 2)
    high = np.round(np.maximum(open_, close) + rng.random(rows) * 20, 2)
    low = np.round(np.minimum(open_, close) - rng.random(rows) * 20, 2)
    volume = np.round(rng.gamma(2.0, 0.5, rows), 8)
    table = pd.DataFrame(
        {
            "unix": times.as_unit("s").asi8,
            "date": times.strftime("%Y-%m-%d %H:%M:%S"),
            "symbol": "BTC/USD",
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "Volume BTC": volume,
            "Volume USD": np.round(volume * close, 8),
        }
    ).iloc[::-1]
    body = table.to_csv(index=False, header=False, lineterminator="\n")
    return f"{BANNER}\n{HEADER}\n{body}".encode()


class Clock:
    """Wall seconds and CPU seconds (this process plus, on PostgreSQL, its server backend).

    Wall time is what the targets are about; CPU time is the work done, which other processes
    on a shared machine do not inflate. The backend's CPU comes from /proc (local server only).
    ``settle`` runs, untimed, before each measurement: a checkpoint, so that a phase does not
    pay for writing out the dirty pages the phase before it left behind.
    """

    def __init__(
        self, backend_pid: int | None = None, settle: Callable[[], None] | None = None
    ) -> None:
        self.backend_pid = backend_pid
        self.settle = settle

    def _backend_cpu(self) -> float:
        if self.backend_pid is None:
            return 0.0
        fields = Path(f"/proc/{self.backend_pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def run(self, action: Callable[[], object]) -> tuple[tuple[float, float], object]:
        if self.settle is not None:
            self.settle()
        wall, cpu, backend = time.perf_counter(), time.process_time(), self._backend_cpu()
        result = action()
        cpu = time.process_time() - cpu + self._backend_cpu() - backend
        return (time.perf_counter() - wall, cpu), result


def upsert(engine: sa.Engine, candles: pd.DataFrame) -> UpsertCounts:
    with Session(engine) as session, session.begin():
        return upsert_candles(session, KEY, candles)


def ingest_twice(engine: sa.Engine, candles: pd.DataFrame, clock: Clock) -> dict[str, tuple]:
    """(wall, CPU) seconds of the first ingest, the unchanged re-ingest and a load."""
    n = len(candles)
    first, counts = clock.run(lambda: upsert(engine, candles))
    assert counts == UpsertCounts(n, 0, 0), counts
    again, counts = clock.run(lambda: upsert(engine, candles))
    assert counts == UpsertCounts(0, 0, n), counts
    load, loaded = clock.run(lambda: load_candles(engine, KEY.key, final_only=False))
    assert len(loaded) == n
    return {"first": first, "again": again, "load": load}


def postgres_copy(engine: sa.Engine, candles: pd.DataFrame, clock: Clock) -> tuple:
    """(wall, CPU) seconds of a binary COPY of the rows into a fresh table keyed like candles."""
    stamp = pd.Timestamp.now(tz="UTC").value // 1000
    columns = {name: candles[name].to_numpy() for name in candles.columns}
    columns |= {
        "time": unix_micros(candles.index),
        "series_id": np.full(len(candles), 1, dtype=np.int32),
        "first_seen_at": np.full(len(candles), stamp),
        "updated_at": np.full(len(candles), stamp),
    }
    data = b"".join(encode_rows(ROW_FIELDS, columns))  # encoded before the clock starts
    del columns
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE copy_limit (LIKE candles INCLUDING ALL)"))
    statement = f"COPY copy_limit ({', '.join(ROW_FIELDS)}) FROM STDIN (FORMAT BINARY)"

    def copy_rows() -> None:
        with engine.begin() as connection:
            with connection.connection.driver_connection.cursor() as cursor:
                with cursor.copy(statement) as copy:
                    copy.write(data)

    return clock.run(copy_rows)[0]


def backend_pid(engine: sa.Engine) -> int | None:
    """The server process of the engine's one pooled connection, when the server is local."""
    with engine.connect() as connection:
        pid = connection.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    return pid if Path(f"/proc/{pid}/stat").exists() else None


def run_postgres(candles: pd.DataFrame) -> dict[str, tuple]:
    with scratch_schema() as (engine, admin):
        pid = backend_pid(engine)

        def checkpoint() -> None:
            with admin.connect() as connection:
                connection.execute(sa.text("CHECKPOINT"))

        clock = Clock(pid, checkpoint)
        results = {"copy": postgres_copy(engine, candles, clock)}
        results |= ingest_twice(engine, candles, clock)
        assert backend_pid(engine) == pid, "the pool changed connections; CPU figures are off"
        return results


def run_sqlite(candles: pd.DataFrame) -> dict[str, tuple]:
    with tempfile.TemporaryDirectory() as folder:
        engine = make_engine(f"sqlite:///{Path(folder) / 'bench.sqlite'}")
        try:
            migrate(engine)

            def checkpoint() -> None:
                with engine.connect() as connection:
                    connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

            return ingest_twice(engine, candles, Clock(settle=checkpoint))
        finally:
            engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best is the figure")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()

    now = pd.Timestamp("2026-01-01 00:00:30", tz="UTC")  # the newest candle is still open
    data = cdd_file(args.rows, now)
    print(f"CDD file: {args.rows:,} minute rows, {len(data) / 2**20:.0f} MiB, current format")
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    runs: dict[str, list[dict[str, tuple]]] = {"parse": [], "postgresql": [], "sqlite": []}
    for _ in range(args.repeat):
        parse_time, parsed = Clock().run(lambda: parse_cdd(data, source="b", key=KEY, now=now))
        runs["parse"].append({"parse": parse_time})
        candles = parsed.candles
        del parsed
        assert len(candles) == args.rows and not candles["is_final"].iloc[-1]
        runs["postgresql"].append(run_postgres(candles))
        if not args.skip_sqlite:
            runs["sqlite"].append(run_sqlite(candles))
    print(f"load average after:  {' '.join(f'{x:.1f}' for x in os.getloadavg())}")

    n = args.rows
    labels = {
        "parse": "parse",
        "copy": "plain COPY (limit)",
        "first": "first ingest",
        "again": "unchanged re-ingest",
        "load": "load_candles",
    }
    print(f"\n{'':<30} {'best rows/s':>12} {'wall s':>7} {'CPU s':>7}   every run, rows/s")
    wall: dict[str, dict[str, float]] = {}
    cpu: dict[str, dict[str, float]] = {}
    for database, results in runs.items():
        if not results:
            continue
        wall[database] = {name: min(r[name][0] for r in results) for name in results[0]}
        cpu[database] = {name: min(r[name][1] for r in results) for name in results[0]}
        for name, seconds in wall[database].items():
            every = ", ".join(f"{n / r[name][0]:,.0f}" for r in results)
            label = labels[name] if database == "parse" else f"{database} {labels[name]}"
            work = cpu[database][name]
            print(f"{label:<30} {n / seconds:>12,.0f} {seconds:>7.2f} {work:>7.2f}   {every}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(f"peak memory (max RSS) {peak:.2f} GiB")
    print("CPU s: this process plus its PostgreSQL backend; the targets below are on wall time")
    print("each phase starts after a checkpoint (untimed), on a table not vacuumed since\n")

    pg, pg_cpu = wall["postgresql"], cpu["postgresql"]
    checks = [
        ("PostgreSQL first ingest >= 45 % of COPY", pg["copy"] / pg["first"], 0.45, "{:.0%}"),
        ("PostgreSQL re-ingest >= 2x first", pg["first"] / pg["again"], 2.0, "{:.2f}x"),
    ]
    if "sqlite" in wall:
        lite = wall["sqlite"]
        checks.append(
            ("SQLite re-ingest >= 2x first", lite["first"] / lite["again"], 2.0, "{:.2f}x")
        )
    checks.append(("peak memory < 2 GiB", peak, 2.0, "{:.2f} GiB"))
    for label, value, target, shown in checks:
        met = value < target if "memory" in label else value >= target
        print(f"target {label:<42} {shown.format(value):>10}  {'met' if met else 'MISSED'}")
    print(
        f"(in CPU time: first ingest {pg_cpu['copy'] / pg_cpu['first']:.0%} of COPY, "
        f"re-ingest {pg_cpu['first'] / pg_cpu['again']:.2f}x faster than first)"
    )


if __name__ == "__main__":
    main()
