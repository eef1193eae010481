"""Pipeline benchmark (issue 3) on the full ../shared/data/Bitstamp_BTCUSD_d.csv, CPU.

    nice .venv/bin/python bench/pipeline.py [--days 30,90] [--retrain-every 7[,90]]
        [--forecast-rows 1000000] [--skip-daily] [--skip-backfill] [--skip-query]

1. Daily runs (ingest -> train -> forecast -> evaluate, in-process, SQLite): a first run on
   the file without its last two final days (retrain), then one more day on the fine-tune
   path, then one more day forced onto the retrain path (CDDF_RETRAIN_AFTER_DAYS=0).
   Target: the fine-tune run takes at most 25 % of the retrain run.
2. Backfills of N days ending a week before the last final candle, on fresh SQLite
   databases holding the candles: seconds per as_of against one fine-tune + forecast, both
   as the daily flow runs them (train_flow(mode="finetune") + forecast_flow, the next day)
   and as bare compute (the median update + predict of the backfill's fine-tune steps).
   Targets: at most 2x; linear in N.
3. ``db.forecasts.latest_forecasts`` for one series with 1,000,000 forecast rows in
   PostgreSQL (CDDF_TEST_POSTGRES_URL, a schema of its own, dropped after): median of 30
   calls and the EXPLAIN ANALYZE of its statement. Target: under 10 ms, index used.

The forecaster runs with the service's config (the package defaults unless CDDF_FORECASTER).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))
from _data import DATA, load_daily  # noqa: E402
from _postgres import scratch_schema  # noqa: E402

SERIES = "Bitstamp_BTCUSD_d"


def use_database(url: str, **settings: str) -> None:
    """Point the service at ``url`` (and other CDDF_ settings) for the next flow runs."""
    from db.engine import clear_engine_cache
    from settings import get_settings

    os.environ["CDDF_DATABASE_URL"] = url
    for name in ("CDDF_RETRAIN_AFTER_DAYS",):
        os.environ.pop(name, None)
    os.environ.update(settings)
    get_settings.cache_clear()
    clear_engine_cache()


def timed(action):
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


# 1. daily runs --------------------------------------------------------------------------


def cdd_file_without(folder: Path, newest_rows: int) -> Path:
    """The CDD file without its ``newest_rows`` newest rows (row 1 is the partial day)."""
    lines = DATA.read_text().splitlines(keepends=True)
    path = folder / f"minus{newest_rows}" / f"{SERIES}.csv"
    path.parent.mkdir(parents=True)
    path.write_text("".join(lines[:2] + lines[2 + newest_rows :]))
    return path


def daily_run(source: Path) -> tuple[float, str, float]:
    """Wall seconds, training action and the model's train seconds of one daily run."""
    from flows.daily import daily_flow

    seconds, outcomes = timed(lambda: daily_flow([SERIES], source=str(source)))
    (outcome,) = outcomes
    return seconds, outcome.trained.action, outcome.trained.version.train_seconds


def bench_daily(folder: Path) -> None:
    print("\n== 1. daily run: fine-tune path vs retrain path (in-process, SQLite) ==")
    url = f"sqlite:///{folder / 'daily.sqlite'}"
    runs = [
        ("first run (no model)", 3, {}),
        ("next day, fine-tune path", 2, {}),
        ("next day, retrain path", 1, {"CDDF_RETRAIN_AFTER_DAYS": "0"}),
    ]
    walls: dict[str, float] = {}
    for label, drop, settings in runs:
        use_database(url, **settings)
        wall, action, train = daily_run(cdd_file_without(folder, drop))
        walls[action if label.startswith("next") else "first"] = wall
        print(f"  {label:28s} {wall:7.1f}s wall   training: {action} {train:6.1f}s")
    if {"finetune", "retrain"} <= set(walls):
        ratio = walls["finetune"] / walls["retrain"]
        print(f"  fine-tune / retrain: {ratio:.1%}   (target <= 25 %)")
    else:
        print("  the auto policy did not take the expected paths; no ratio")


# 2. backfills ---------------------------------------------------------------------------


def service_finetune_forecast() -> float:
    """Wall seconds of one fine-tune and one forecast as the daily flow runs them."""
    from flows.forecast import forecast_flow
    from flows.train import train_flow

    start = time.perf_counter()
    outcome = train_flow(SERIES, mode="finetune")
    assert outcome.action == "finetune", outcome
    forecast_flow(SERIES)
    return time.perf_counter() - start


def bench_backfill(folder: Path, days: list[int], retrain_every: int) -> None:
    import pandas as pd
    from sqlalchemy.orm import Session

    from cdd.series_key import SeriesKey
    from db.candles import upsert_candles
    from db.engine import get_engine
    from flows.backfill import backfill_flow

    print(f"\n== 2. backfill: seconds per as_of (retrain every {retrain_every}, SQLite) ==")
    candles = load_daily()
    end = (candles.index[-1] - pd.Timedelta(days=7)).date()
    rows = []
    for n in days:
        use_database(f"sqlite:///{folder / f'backfill{n}_{retrain_every}.sqlite'}")
        with Session(get_engine()) as session, session.begin():
            upsert_candles(session, SeriesKey.parse(SERIES), candles)
        start = end - pd.Timedelta(days=n - 1).to_pytimedelta()
        wall, summary = timed(lambda s=start: backfill_flow(SERIES, s, end, retrain_every))
        retrains = [s.seconds for s in summary.steps if s.action == "retrain"]
        compute = statistics.median(s.seconds for s in summary.steps if s.action == "finetune")
        service = service_finetune_forecast()  # on the backfilled database, the next day
        per_as_of = wall / len(summary.steps)
        steady = (wall - sum(retrains)) / len(summary.steps)
        rows.append((n, per_as_of))
        print(
            f"  {n:3d} days {start}..{end}: {wall:6.1f}s wall = {per_as_of:5.2f}s per as_of; "
            f"{summary.retrained} retrains ({sum(retrains):.1f}s), {summary.finetuned} "
            f"fine-tunes; without the retrains {steady:.2f}s per as_of"
        )
        print(
            f"       one fine-tune + forecast: {service:.2f}s as the daily flow runs them "
            f"(train_flow + forecast_flow), {compute:.2f}s of it update + predict"
        )
        print(
            f"       per as_of / service fine-tune + forecast = {per_as_of / service:.1f}x, "
            f"/ compute = {per_as_of / compute:.1f}x (target <= 2x)"
        )
    if len(rows) > 1:
        (n0, s0), (n1, s1) = rows[0], rows[-1]
        print(
            f"  linearity: {n1} days took {s1 * n1 / (s0 * n0):.2f}x the time of {n0} days "
            f"for {n1 / n0:.2f}x the dates (per as_of {s0:.2f}s vs {s1:.2f}s)"
        )


# 3. latest_forecasts on 1,000,000 rows ----------------------------------------------------


def fill_forecasts(engine, series: str, timeframe: str, n_rows: int, horizon: int = 7) -> None:
    """``n_rows`` forecasts of ``series`` (hourly as_of times, one run each), COPYed in."""
    import numpy as np
    import pandas as pd
    from sqlalchemy.orm import Session

    from cdd.series_key import SeriesKey
    from db.forecast_tables import ModelVersion
    from db.models import Series

    key = SeriesKey.parse(series)
    now = pd.Timestamp.now(tz="UTC").floor("h")
    with Session(engine) as session, session.begin():
        session.add(Series(key=series, exchange=key.exchange, pair=key.pair, timeframe=timeframe))
        session.flush()
        version = ModelVersion(
            series=series,
            created_at=now,
            kind="retrain",
            config={},
            train_first=now,
            train_last=now,
            n_windows=1,
            validation_metrics={},
            artifact=b"-",
            artifact_sha256="-" * 64,
            artifact_size=1,
            device="CPU",
            train_seconds=0.0,
        )
        session.add(version)
        session.flush()
        version_id = version.id
    n_runs = -(-n_rows // horizon)
    as_of = pd.date_range(end=now, periods=n_runs, freq=key.period)
    with engine.begin() as connection:
        first_id = (
            connection.exec_driver_sql("SELECT COALESCE(MAX(id), 0) FROM forecast_runs").scalar()
            + 1
        )
    run_ids = np.arange(first_id, first_id + n_runs)
    runs = pd.DataFrame(
        {
            "id": run_ids,
            "series": series,
            "as_of": as_of,
            "model_version_id": version_id,
            "created_at": as_of,
            "kind": "backfill",
        }
    )
    extra = n_runs * horizon - n_rows  # left out of the oldest run, so the newest is whole
    steps = np.tile(np.arange(1, horizon + 1), n_runs)[extra:]
    run_of = np.repeat(np.arange(n_runs), horizon)[extra:]
    value = 30_000 + np.random.default_rng(0).normal(0, 500, n_rows)
    forecasts = pd.DataFrame(
        {
            "run_id": run_ids[run_of],
            "horizon": steps,
            "series": series,
            "as_of": as_of[run_of],
            "target_time": as_of[run_of] + pd.to_timedelta(steps * key.period.value, unit="ns"),
            "value": value,
            "lower_80": value - 400,
            "upper_80": value + 400,
            "lower_95": value - 700,
            "upper_95": value + 700,
            "naive": value,
        }
    )
    with engine.begin() as connection:
        cursor = connection.connection.driver_connection.cursor()
        for table, frame in (("forecast_runs", runs), ("forecasts", forecasts)):
            text = io.StringIO()
            frame.to_csv(text, index=False, header=False, date_format="%Y-%m-%d %H:%M:%S+00")
            with cursor.copy(
                f"COPY {table} ({', '.join(frame.columns)}) FROM STDIN (FORMAT CSV)"
            ) as copy:
                copy.write(text.getvalue())
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
            "ANALYZE forecast_runs; ANALYZE forecasts"
        )


def bench_latest_forecasts(n_rows: int) -> None:
    from sqlalchemy import event

    from db.forecasts import latest_forecasts

    print(f"\n== 3. latest_forecasts of one series among {n_rows:,} forecast rows (PostgreSQL) ==")
    with scratch_schema() as (engine, _admin):
        target = "Bitstamp_BTCUSD_1h"
        seconds, _ = timed(lambda: fill_forecasts(engine, target, "1h", n_rows))
        fill_forecasts(engine, "Bitstamp_ETHUSD_1h", "1h", n_rows // 10)  # a neighbour
        print(
            f"  loaded {n_rows:,} rows of {target} (+{n_rows // 10:,} of another) in {seconds:.1f}s"
        )
        statements: list[tuple[str, object]] = []

        def capture(conn, cursor, statement, parameters, context, executemany):
            statements.append((statement, parameters))

        latest_forecasts(engine, target)  # warm the connection pool and the caches
        event.listen(engine, "before_cursor_execute", capture)
        frame = latest_forecasts(engine, target)
        event.remove(engine, "before_cursor_execute", capture)
        times = [timed(lambda: latest_forecasts(engine, target))[0] * 1000 for _ in range(30)]
        print(
            f"  {len(frame)} rows returned; median {statistics.median(times):.2f} ms, "
            f"best {min(times):.2f} ms, worst {max(times):.2f} ms over 30 calls "
            "(target < 10 ms)"
        )
        statement, parameters = statements[-1]
        with engine.connect() as connection:
            plan = (
                connection.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
                .scalars()
                .all()
            )
        print("  EXPLAIN (ANALYZE, BUFFERS):")
        for line in plan:
            print("    " + line)
        used = "ix_forecasts_series_target_time" in "\n".join(plan)
        print(f"  index ix_forecasts_series_target_time used: {'yes' if used else 'NO'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", default="30,90", help="backfill lengths, comma-separated")
    parser.add_argument(
        "--retrain-every", default="7", help="backfill retrain_every values, comma-separated"
    )
    parser.add_argument("--forecast-rows", type=int, default=1_000_000)
    for part in ("daily", "backfill", "query"):
        parser.add_argument(f"--skip-{part}", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="cddf-bench-"))
    os.environ.setdefault("PREFECT_HOME", str(folder / "prefect"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["CDDF_CHART_DIR"] = str(folder / "charts")
    print(f"data: {DATA}; work folder {folder}; {os.cpu_count()} CPUs")
    try:
        if not args.skip_daily:
            bench_daily(folder)
        if not args.skip_backfill:
            days = [int(n) for n in args.days.split(",")]
            for retrain_every in (int(n) for n in args.retrain_every.split(",")):
                bench_backfill(folder, days, retrain_every)
        if not args.skip_query:
            bench_latest_forecasts(args.forecast_rows)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
