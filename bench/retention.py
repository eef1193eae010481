"""Service database growth per simulated day, with the retention prune and without (issue 26).

    nice .venv/bin/python bench/retention.py [--days 9] [--n 9] [--keep 3]

The daily flow, one model per series, on N real daily CryptoDataDownload files (the files of
bench/many_series.py: Bitstamp BTC/USD, then ../shared/data/multi/*_d.csv), on a fresh SQLite
database, once per simulated day: day 0 sees the files without their ``days - 1`` newest rows
(every series retrains), each later day one row more (fine-tunes; a retrain when the lineage is
``retrain_after`` old). ``--keep`` is CDDF_KEEP_VERSIONS; a very large one (``--keep 1000000``)
keeps every version's weights: the service before the retention. After each run: the
database file (checkpointed), its growth that day, the versions with weights and their bytes.
Run the two sides in two processes (``--keep 3`` and ``--keep 1000000``) to compare.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from many_series import daily_files, daily_run, warm_up, write_source  # noqa: E402


def stored(database: Path) -> tuple[int, int, int]:
    """The database file's bytes after a checkpoint, the versions with weights and their bytes."""
    with sqlite3.connect(database) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        kept, weights = connection.execute(
            "SELECT count(*), coalesce(sum(artifact_size), 0) FROM model_versions "
            "WHERE artifact_size > 0"
        ).fetchone()
    return database.stat().st_size, kept, weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=9, help="simulated daily runs")
    parser.add_argument("--n", type=int, default=9, help="series (at most the files found)")
    parser.add_argument("--keep", type=int, default=3, help="CDDF_KEEP_VERSIONS")
    parser.add_argument("--parallel", type=int, default=4, help="CDDF_MAX_PARALLEL_SERIES")
    args = parser.parse_args()
    files = daily_files()[: args.n]
    keys = [path.stem for path in files]
    folder = Path(tempfile.mkdtemp(prefix="cddf-retention-"))
    database = folder / "service.sqlite"
    os.environ.update(
        CDDF_DATABASE_URL=f"sqlite:///{database}",
        CDDF_MAX_PARALLEL_SERIES=str(args.parallel),
        CDDF_KEEP_VERSIONS=str(args.keep),
        CDDF_CHART_DIR=str(folder / "charts"),
        PREFECT_HOME=str(folder / "prefect"),  # a Prefect database of its own: sides in parallel
    )
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    warm_up()
    print(f"N={len(keys)} CDDF_KEEP_VERSIONS={args.keep} {database}")
    print("day | actions | wall s | file MB | growth MB | versions with weights | weights MB")
    previous = 0
    for day in range(args.days):
        source = write_source(folder / f"day{day}", files, args.days - 1 - day)
        measured = daily_run(keys, source)
        size, kept, weights = stored(database)
        print(
            f"{day} | {','.join(measured.actions)} | {measured.wall:.0f} | {size / 1e6:.1f} | "
            f"{(size - previous) / 1e6:+.1f} | {kept} | {weights / 1e6:.1f}"
            + (f" | failed: {'; '.join(measured.failed)}" if measured.failed else ""),
            flush=True,
        )
        previous = size


if __name__ == "__main__":
    main()
