"""Fuzz the CDD parser: generated files, each checked against the reference parser.

    nice .venv/bin/python bench/fuzz_parser.py [--files 100000] [--seed 0] [--jobs 1]
    .venv/bin/python bench/fuzz_parser.py --replay 123456 [--write file.csv]

File ``i`` of a run is ``case_from_seed(seed * 10**9 + i)`` (tests/flows/cdd_strategies.py:
every catalogue layout, its seams and damage); it is parsed on one of the parser's fast paths
in turn (``FAST_PATHS``: default, fast_dates off, row search forced) and compared with
``reference_parse`` (tests/flows/reference_parser.py). A failure is the parser raising anything
but ``CDDFormatError``, disagreeing with the reference, or killing its process (each batch runs
in a child process; a file that kills it is reported and the batch goes on after it). Prints
files/s, the file-level outcomes and each failure with its replay command.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.flows.cdd_strategies import case_from_seed  # noqa: E402
from tests.flows.reference_parser import (  # noqa: E402
    FAST_PATHS,
    differences,
    parse_with,
    reference_parse,
)

BATCH = 2_000
PATHS = list(FAST_PATHS)


def check(file_seed: int) -> dict:
    """One file: its outcome (the reference's error class or "stored") and any failure."""
    case = case_from_seed(file_seed)
    path = PATHS[file_seed % len(PATHS)]
    try:
        expected = reference_parse(case.data, case.key, case.now.value)
    except Exception as crash:  # the reference's own bug: report it, go on
        failure = f"the reference raised {type(crash).__name__}: {crash}"[:2000]
        return {"seed": file_seed, "outcome": "?", "path": path, "failures": [failure]}
    try:
        parsed, error = parse_with(case.data, case.key, case.now, path)
        found = differences(expected, parsed, error)
    except Exception as crash:  # an undocumented exception: a failure, never the end of a run
        found = [f"raised {type(crash).__name__}: {crash}"[:2000]]
    outcome = expected.error or "stored"
    return {"seed": file_seed, "outcome": outcome, "path": path, "failures": found}


def run_batch(first: int, count: int) -> None:
    """Child process: one JSON line per file, a "start" line before each (to name a killer)."""
    warnings.simplefilter("ignore")
    for file_seed in range(first, first + count):
        print(json.dumps({"start": file_seed}), flush=True)
        print(json.dumps(check(file_seed)), flush=True)


def fuzz(files: int, seed: int, jobs: int) -> int:
    first = seed * 10**9
    outcomes: collections.Counter[str] = collections.Counter()
    failures: list[dict] = []
    started = time.perf_counter()
    pending = [
        (start, min(BATCH, first + files - start)) for start in range(first, first + files, BATCH)
    ]
    running: list[tuple[subprocess.Popen, int, int, Any]] = []
    done = 0
    while pending or running:
        while pending and len(running) < jobs:
            start, count = pending.pop(0)
            output = tempfile.TemporaryFile("w+")  # a pipe would stall a child nobody reads
            child = subprocess.Popen(
                [sys.executable, __file__, "--batch", str(start), str(count)],
                stdout=output,
                text=True,
                cwd=ROOT,
            )
            running.append((child, start, count, output))
        finished = next((job for job in running if job[0].poll() is not None), None)
        if finished is None:
            time.sleep(0.2)
            continue
        running.remove(finished)
        child, start, count, output = finished
        output.seek(0)
        last_started, seen = None, 0
        for line in output:
            record = json.loads(line)
            if "start" in record:
                last_started = record["start"]
                continue
            seen += 1
            outcomes[record["outcome"]] += 1
            if record["failures"]:
                failures.append(record)
                print(f"  failure: file {record['seed']}: {record['failures'][0][:300]}")
        output.close()
        done += seen
        if child.returncode != 0:  # the file it had started killed it: a failure; go on after it
            killer = last_started if last_started is not None else start
            failures.append(
                {"seed": killer, "path": "?", "failures": [f"process died ({child.returncode})"]}
            )
            done += 1
            rest = start + count - killer - 1
            if rest > 0:
                pending.insert(0, (killer + 1, rest))
        elapsed = time.perf_counter() - started
        print(
            f"  {done:,} files, {done / elapsed:,.0f} files/s, {len(failures)} failures", flush=True
        )
    elapsed = time.perf_counter() - started
    print(f"\nfiles: {done:,} in {elapsed:,.0f} s = {done / elapsed:,.0f} files/s (seed {seed})")
    print("reference outcomes: " + ", ".join(f"{k} {v:,}" for k, v in outcomes.most_common()))
    print(f"failures: {len(failures)}")
    for failure in failures:
        print(f"- file {failure['seed']} ({failure['path']}): {failure['failures'][0][:500]}")
        print(f"  replay: .venv/bin/python bench/fuzz_parser.py --replay {failure['seed']}")
    return 1 if failures else 0


def replay(file_seed: int, write: Path | None) -> None:
    case = case_from_seed(file_seed)
    print(case.story)
    if write is not None:
        write.write_bytes(case.data)
        print(f"written to {write} (series {case.key}, now {case.now.isoformat()})")
    for path in PATHS:
        expected = reference_parse(case.data, case.key, case.now.value)
        parsed, error = parse_with(case.data, case.key, case.now, path)
        print(f"{path}: {differences(expected, parsed, error) or 'agrees with the reference'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="child processes at once")
    parser.add_argument("--replay", type=int, help="show one file's story and comparison")
    parser.add_argument("--write", type=Path, help="with --replay: write the file there")
    parser.add_argument("--batch", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch:
        run_batch(*args.batch)
    elif args.replay is not None:
        replay(args.replay, args.write)
    else:
        sys.exit(fuzz(args.files, args.seed, args.jobs))


if __name__ == "__main__":
    main()
