"""A CLI killed with kill -9, or stopped by SIGTERM past its grace, leaves no process behind:
neither its temporary Prefect API server nor a backfill's retrain worker."""

from __future__ import annotations

import os
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def command_line(pid: int) -> str:
    """The command line of ``pid``; "" once it has exited."""
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@contextmanager
def command_waiting_for_its_source(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    """A ``cdd-forecast run`` waiting for the answer of its source (a socket that never
    answers) and its temporary API server's pid; the command is killed (-9) on exit."""
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "CDDF_DATABASE_URL": f"sqlite:///{tmp_path / 'cddf.sqlite'}",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("PREFECT_API_URL", None)  # as an operator runs it: Prefect's temporary local API
    with socket.create_server(("127.0.0.1", 0)) as source:
        source.settimeout(240)
        url = f"http://127.0.0.1:{source.getsockname()[1]}/Bitstamp_BTCUSD_d.csv"
        cli = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "run", "--series", "Bitstamp_BTCUSD_d"]
            + ["--source", url],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            connection, _ = source.accept()  # the command runs: the API server is up
            with connection:  # held open, unanswered: the command waits
                servers = [pid for pid in children(cli.pid) if "uvicorn" in command_line(pid)]
                assert len(servers) == 1, [command_line(pid) for pid in children(cli.pid)]
                yield cli, servers[0]
        finally:
            os.kill(cli.pid, signal.SIGKILL)
            cli.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (from /proc)."""
    fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_temporary_api_server_dies_with_a_killed_cli(tmp_path):
    with command_waiting_for_its_source(tmp_path) as (_, pid):
        server = os.pidfd_open(pid)
    try:
        exited, _, _ = select.select([server], [], [], 20)
        assert exited, f"the temporary API server (pid {pid}) outlived the killed CLI"
    finally:
        os.close(server)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_the_temporary_api_server_idles_while_the_command_waits(tmp_path):
    """Its task-run recorder flushed every int(0.5) = 0 seconds: a core spun for as long as
    the server lived, under every command."""
    with command_waiting_for_its_source(tmp_path) as (_, pid):
        time.sleep(2)  # its services started
        before = cpu_seconds(pid)
        time.sleep(4)
        spent = cpu_seconds(pid) - before
    assert spent < 1.0, f"the idle temporary API server spent {spent:.2f} CPU s in 4 s"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="start_ephemeral_api is Linux's")
def test_a_command_s_task_runs_are_all_recorded_before_the_temporary_api_stops(tmp_path):
    """Stopped at once at exit, the server cancelled its task-run recorder mid-write: ERROR
    tracebacks after a successful run, and 67 of these 300 task runs recorded."""
    home = tmp_path / "prefect"
    env = {**os.environ, "PREFECT_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"  # as flows/cli.py sets it: no network
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "tests.flows.many_task_runs", "300"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "44850" in done.stdout, output
    assert "Error flushing" not in output and "ERROR" not in output, output
    with sqlite3.connect(home / "prefect.db") as prefect_db:
        states = dict(prefect_db.execute("SELECT state_type, count(*) FROM task_run GROUP BY 1"))
    assert states == {"COMPLETED": 300}, states


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="start_ephemeral_api is Linux's")
def test_a_daily_run_from_cron_keeps_its_temporary_api_s_history_bounded(tmp_path):
    """Nothing else prunes the temporary API's database (PREFECT_HOME): each `run` deletes the
    flow runs that ended over CDDF_PREFECT_RETENTION_DAYS ago, as a server's deployment does."""
    from tests.flows.cdd_files import make_candles, make_cdd_csv
    from tests.flows.forecast_service import KEY, SERIES, TINY

    source = tmp_path / f"{SERIES}.csv"
    source.write_bytes(make_cdd_csv(KEY, make_candles(KEY, 120, start="2020-01-01")))
    home = tmp_path / "prefect"
    env = {**os.environ, "PREFECT_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env |= {"CDDF_DATABASE_URL": f"sqlite:///{tmp_path / 'cddf.sqlite'}", "CDDF_FORECASTER": TINY}
    env.pop("PREFECT_API_URL", None)
    argv = [sys.executable, "-m", "flows.cli", "run", "--source", str(source)]

    def run() -> str:
        done = subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stderr

    assert "Prefect's history: deleted" not in run()
    with sqlite3.connect(home / "prefect.db") as prefect_db:  # the first run ended 40 days ago
        (first, ended), *others = prefect_db.execute("SELECT id, end_time FROM flow_run").fetchall()
        assert not others and ended is not None
        aged = str(pd.Timestamp(ended) - pd.Timedelta(days=40))
        prefect_db.execute("UPDATE flow_run SET end_time = ? WHERE id = ?", (aged, first))
    said = run()
    assert "Prefect's history: deleted 1 flow runs" in said, said
    with sqlite3.connect(home / "prefect.db") as prefect_db:
        ids = [row[0] for row in prefect_db.execute("SELECT id FROM flow_run")]
    assert len(ids) == 1 and first not in ids


@pytest.mark.parametrize(
    ("set_to", "server_gets", "warned"),
    [(None, "1", False), ("0.5", "1", True), ("-3", "1", True), ("2", "2", False)],
)
def test_a_flush_interval_under_a_second_is_raised_to_one_and_said(
    set_to, server_gets, warned, caplog
):
    from flows.ephemeral_api import FLUSH_INTERVAL, server_environment

    environ = {"PATH": "/bin"} | ({FLUSH_INTERVAL: set_to} if set_to else {})
    with caplog.at_level("WARNING", logger="flows.ephemeral_api"):
        server = server_environment(environ)
    assert server[FLUSH_INTERVAL] == server_gets and server["PATH"] == "/bin"
    assert (FLUSH_INTERVAL in caplog.text and "spin" in caplog.text) == warned


# retrains that outlast the CLI's SIGTERM grace many times over (~50 windows, a batch of 1)
LONG_FIT = (
    '{"units": 64, "max_epochs": 10000, "patience": 10000, "window": 5, "horizon": 3, '
    '"batch_size": 1}'
)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_a_backfill_stopped_by_sigterm_leaves_no_retrain_worker_behind(tmp_path):
    """A backfill stopped mid-retrain once exited 143 with its worker still fitting: the worker
    lived on under init, idle, holding ~800 MB. Every process the CLI started must end with it."""
    from db.engine import make_engine, migrate
    from flows.cli import TERM_EXIT_CODE, TERM_GRACE_S
    from tests.flows.cdd_files import make_candles
    from tests.flows.test_backfill import FIRST_DAY, KEY, N_CANDLES, SERIES, day, store

    url = f"sqlite:///{tmp_path / 'cddf.sqlite'}"
    engine = make_engine(url)
    migrate(engine)
    store(engine, make_candles(KEY, N_CANDLES, start=str(FIRST_DAY)))
    engine.dispose()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONPATH": str(ROOT)}
    env |= {"CDDF_DATABASE_URL": url, "CDDF_FORECASTER": LONG_FIT}
    env.pop("PREFECT_API_URL", None)
    said = tmp_path / "stderr"  # a file: a surviving worker would hold a pipe open
    with said.open("w") as stderr:
        cli = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "backfill", "--series", SERIES]
            + ["--start", str(day(40)), "--end", str(day(45)), "--retrain-every", "2"]
            + ["--parallel", "2"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    left: dict[int, int] = {}  # pid: its pidfd, for every process the CLI started
    try:
        deadline = time.monotonic() + 300
        while not any("spawn_main" in command_line(pid) for pid in children(cli.pid)):
            assert cli.poll() is None, said.read_text()
            assert time.monotonic() < deadline, "no retrain worker started in 300 s"
            time.sleep(0.2)
        for pid in children(cli.pid):
            try:
                left[pid] = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
        names = {pid: command_line(pid) for pid in left}
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=TERM_GRACE_S + 30) == TERM_EXIT_CODE, said.read_text()
        running, ended = set(left.values()), time.monotonic() + 20
        while running and time.monotonic() < ended:
            exited, _, _ = select.select(list(running), [], [], ended - time.monotonic())
            running -= set(exited)
        survivors = [names[pid] for pid, fd in left.items() if fd in running]
        assert not survivors, f"still running 20 s after the CLI ended: {survivors}"
    finally:
        for pid, fd in left.items():
            os.close(fd)
            if command_line(pid):
                os.kill(pid, signal.SIGKILL)
        if cli.poll() is None:
            cli.kill()
            cli.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="start_ephemeral_api is Linux's")
def test_a_temporary_api_that_does_not_start_is_tried_again_then_named(tmp_path):
    """Prefect's own RuntimeError once ended a backfill with its traceback; a 1 s startup
    timeout is shorter than the server's start on any machine, so both tries time out."""
    from tests.flows.cdd_files import make_candles, make_cdd_csv
    from tests.flows.forecast_service import KEY, SERIES

    source = tmp_path / f"{SERIES}.csv"
    source.write_bytes(make_cdd_csv(KEY, make_candles(KEY, 120, start="2020-01-01")))
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONPATH": str(ROOT)}
    env |= {"CDDF_DATABASE_URL": f"sqlite:///{tmp_path / 'cddf.sqlite'}"}
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "1"
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--source", str(source)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    said = done.stderr
    assert done.returncode == 1 and "Traceback" not in said, said
    assert said.count("Starting temporary server") == 2, said
    assert "did not start (Timed out while attempting to connect" in said, said
    assert (
        "error: Prefect's temporary local API did not start in 2 tries (Timed out while "
        "attempting to connect to ephemeral Prefect API server; each try waited "
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=1 s)" in said
    ), said
    assert "PREFECT_API_URL" in said.rsplit("error:", 1)[1]
    with sqlite3.connect(tmp_path / "cddf.sqlite") as service_db:  # nothing ran
        assert service_db.execute("SELECT count(*) FROM candles").fetchone() == (0,)
