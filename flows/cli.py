"""The ``cdd-forecast`` command line: every command, side by side; what they print is in
``flows/cli_render.py``.

    cdd-forecast db upgrade && cdd-forecast ingest --series Bitstamp_BTCUSD_d
    cdd-forecast run                    # the daily pipeline, in this process
    cdd-forecast forecasts -s Bitstamp_BTCUSD_d

Commands import what they run when they run, so that ``--help`` stays quick.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from flows import cli_render as render
from flows.deployments import BACKFILL_DEFAULTS, DEPLOYMENTS

if TYPE_CHECKING:
    from prefect.client.schemas.responses import DeploymentResponse
    from prefect.deployments.runner import RunnerDeployment
    from sqlalchemy import Engine

    from flows.ingest import IngestResult, SeriesPlan

# Prefect's local ephemeral API (the default, no server to start) gives up after 20 s; a busy
# 2-core machine that also imports TensorFlow can need longer. An explicit setting wins.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# training progress (the ``forecaster`` logger) in the flow run logs
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "forecaster")
# The ephemeral server's telemetry heartbeat writes its first session into a fresh Prefect
# database; when the run ends within seconds (a source that cannot be reached), the server
# stops under it and prints "database is locked" after our error. It has nowhere to send to
# on an offline machine either. An explicit setting wins; a server of your own is unaffected.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

app = typer.Typer(
    name="cdd-forecast",
    help="Download CryptoDataDownload candles, train the LSTM, forecast and score, into SQL.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
db_app = typer.Typer(help="Database schema and roles.", no_args_is_help=True)
app.add_typer(db_app, name="db")


# SIGTERM ends every command but `serve` within this many seconds, even one whose threads are
# blocked in a socket read that no timeout ends (a PostgreSQL that stopped answering): a
# one-line message, TERM_GRACE_S for the work to unwind (Prefect marks its flow run crashed,
# an ingest run is left `running` and closed as `interrupted` by the next ingest once its lease
# lapses), then the process exits with 143 (128 + SIGTERM) whatever still waits.
TERM_GRACE_S = 5.0
TERM_EXIT_CODE = 128 + signal.SIGTERM
_watching: list[threading.Thread] = []
_said: list[bool] = []
_SAID_LOCK = threading.Lock()


@app.callback()
def _commands(ctx: typer.Context) -> None:
    """Download CryptoDataDownload candles, train the LSTM, forecast and score, into SQL."""
    if ctx.invoked_subcommand != "serve":  # serve stops its deployments on SIGTERM itself
        end_on_sigterm()


def end_on_sigterm() -> None:
    """From now on SIGTERM ends this process within TERM_GRACE_S (once per process).

    The signal raises SystemExit in the main thread, or Prefect's handler, during a flow run,
    marks the run crashed; either may wait forever on a thread blocked in a read, so a thread
    of our own, woken by the signal itself (``signal.set_wakeup_fd``, whatever Python handler
    is installed then), ends the process after the grace. Only from the main thread.
    """
    if _watching or threading.current_thread() is not threading.main_thread():
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.signal(signal.SIGTERM, _exit_now)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    watch = threading.Thread(target=_exit_after_sigterm, args=(read_end,), daemon=True)
    watch.name = "sigterm watch"
    watch.start()
    _watching.append(watch)


def _exit_now(signum: int, frame: object) -> None:
    _say_stopping()  # here too: the process may be gone before the watch thread runs
    raise SystemExit(128 + signum)


def _say_stopping() -> None:
    """The one line a SIGTERM prints, once, by whichever of the handler and the watch is first."""
    with _SAID_LOCK:
        if _said:
            return
        _said.append(True)
    print(
        f"cdd-forecast: SIGTERM received: stopping; this process ends within {TERM_GRACE_S:g} s",
        file=sys.stderr,
        flush=True,
    )


def _exit_after_sigterm(read_end: int) -> None:
    while signal.SIGTERM not in os.read(read_end, 512):
        pass
    _say_stopping()
    threading.Event().wait(TERM_GRACE_S)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(TERM_EXIT_CODE)


def _flow_api() -> bool:
    """Start Prefect's temporary API tied to this CLI's life, for a command that runs flows
    (not `serve`: it registers deployments, which only a running Prefect server keeps); whether
    it did (False: ``PREFECT_API_URL`` names a server)."""
    from flows.ephemeral_api import EphemeralApiError, start_ephemeral_api

    try:
        return start_ephemeral_api() is not None  # dies with this process, even after kill -9
    except EphemeralApiError as error:
        _fail(f"{error}")


def _prefect_retention() -> None:
    """Prefect's history kept ``CDDF_PREFECT_RETENTION_DAYS`` in the temporary API's database
    (under PREFECT_HOME), which nothing else prunes: a server has its prefect-retention
    deployment, a daily ``run`` from cron has this. A failure is a warning, not the run's."""
    import datetime as dt

    from flows.prefect_retention import delete_older_than
    from settings import get_settings

    days = get_settings().prefect_retention_days
    try:
        gone = delete_older_than(dt.datetime.now(dt.UTC) - dt.timedelta(days=days))
    except Exception as error:  # the forecasts are stored: say it, do not fail the run
        render.labelled(
            render.stderr(), "yellow", "warning:", f"Prefect's history was not pruned: {error}"
        )
        return
    if gone.flow_runs:
        render.stderr().print(
            f"Prefect's history: deleted {gone.flow_runs} flow runs (and {gone.artifacts} "
            f"artifacts) that ended over {days} days ago (CDDF_PREFECT_RETENTION_DAYS)",
            soft_wrap=True,
            markup=False,
        )


# options several commands share
SeriesKeys = Annotated[
    list[str] | None,
    typer.Option(
        "--series",
        "-s",
        help="Series key such as Bitstamp_BTCUSD_d, or a pattern such as 'Binance_*USDT_d' "
        "(* any characters, ? one; repeatable; default: CDDF_SERIES).",
    ),
]
Source = Annotated[
    str | None,
    typer.Option(
        help="Where the files come from instead of CryptoDataDownload: a local path, a file:// "
        "URL or any http(s) URL. A single file serves one series (its key defaults to the file "
        "name, e.g. Bitstamp_BTCUSD_d.csv); with several --series give a directory, or a base "
        "URL ending in /, holding <series>.csv files."
    ),
]
_DATE = ["%Y-%m-%d"]


def _engine() -> Engine:
    """The configured database's engine; exit 1 saying why when it cannot be had."""
    from db.engine import get_engine

    try:
        return get_engine()
    except Exception as error:  # unreachable server or schema behind: say so, no traceback
        render.error(f"{error}")
        raise typer.Exit(1) from None


def _fail(message: str) -> NoReturn:
    """``error: message`` on stderr, exit 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@app.command("ingest")
def ingest(
    series: SeriesKeys = None,
    source: Source = None,
    accept_revisions: Annotated[
        bool,
        typer.Option(
            help="Store revisions of final candles already stored even beyond CDDF_MAX_REVISIONS "
            "and CDDF_REVISION_MAX_AGE_PERIODS (e.g. CryptoDataDownload restated its history). "
            "Each revision is kept in candle_revisions and the forecasts it touches are re-scored."
        ),
    ] = False,
) -> None:
    """Download, check and store the candles of each series (exit 1 if any failed).

    Re-running writes only what changed; a file unchanged since the last run (same ETag or
    Last-Modified) is not downloaded again. A file that changes more final candles, or older
    ones, than the limits allow is refused unless --accept-revisions.
    """
    from flows.ingest import ingest_each, joining, plan

    try:
        planned = plan(series, source)
    except ValueError as error:
        render.error(f"{error}")
        raise typer.Exit(2) from None
    keys = planned.keys
    engine = _engine()
    _say_plan(planned, joining(keys, engine), every=False)
    console = render.stderr()
    results: list[IngestResult] = []
    with render.IngestProgress(console) as progress:
        for result in ingest_each(
            keys,
            source,
            engine=engine,
            accept_revisions=accept_revisions,
            progress_for=progress.track,
        ):
            progress.done(result)
            results.append(result)
    render.stdout().print(render.ingest_summary(results))
    not_stored = render.rows_not_stored(results)
    if not_stored is not None:
        render.stdout().print(not_stored)
    for result in results:
        if result.rejected_rows:
            render.labelled(
                console,
                "yellow",
                f"{result.series}:",
                f"{result.rejected_rows:,} bad rows were not stored; their lines and reasons are "
                f"in ingest_rejects (ingest run {result.run_id}, query in docs/sql.md)",
            )
    failed = [result for result in results if result.status == "failed"]
    for result in failed:
        render.labelled(console, "red", f"{result.series} failed:", f"{result.error}")
    if failed:
        raise typer.Exit(1)


@app.command("series")
def list_series() -> None:
    """List the stored series: first and last candle, number of candles, missing candles,
    then the holes (missing candle times) of each series that has some."""
    from db.candles import series_summary
    from db.holes import series_holes

    engine = _engine()
    summaries = series_summary(engine)
    if not summaries:
        typer.echo("no series stored yet: run `cdd-forecast ingest --series <key>`")
        return
    render.stdout().print(render.series_table(summaries))
    for summary in summaries:
        holes = series_holes(engine, summary.key) if summary.gaps else []
        if holes:
            typer.echo(render.holes_text(summary.key, holes))


@app.command("backfill")
def backfill(
    series: Annotated[str, typer.Option(help="Series key, e.g. Bitstamp_BTCUSD_d.")],
    start: Annotated[dt.datetime, typer.Option(formats=_DATE, help="First as_of date (UTC).")],
    end: Annotated[dt.datetime, typer.Option(formats=_DATE, help="Last as_of date (UTC).")],
    retrain_every: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Retrain from scratch every N candles, on the model's retrain days, and "
            "fine-tune between (default: the series' retrain_after, as its daily runs).",
        ),
    ] = BACKFILL_DEFAULTS["retrain_every"],
    force: Annotated[
        bool, typer.Option("--force", help="Redo as_of dates that already have forecasts.")
    ] = BACKFILL_DEFAULTS["force"],
    parallel: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Processes the retrains run in, this one included: 2 retrains the blocks "
            "ahead in a worker while this one walks (default: CDDF_BACKFILL_PROCESSES; unset: "
            "2 on a CPU of 2 or more cores when it retrains 3 or more times, else 1).",
        ),
    ] = None,
) -> None:
    """Point-in-time forecasts for every as_of from START to END, then their scores.

    Resumable: dates already forecast are skipped unless --force. Runs in this process;
    on a Prefect server use `prefect deployment run 'backfill/backfill' --param ...` instead.
    """
    from flows.backfill import BackfillError, backfill_flow, check_backfill

    _engine()
    try:  # a bad parameter is one line, at once: before Prefect's API starts
        check_backfill(series, start.date(), end.date(), retrain_every, parallel)
    except (BackfillError, ValueError) as error:
        _fail(f"{error}")
    _flow_api()
    try:
        summary = backfill_flow(
            series=series,
            start=start.date(),
            end=end.date(),
            retrain_every=retrain_every,
            force=force,
            parallel=parallel,
        )
    except (BackfillError, ValueError) as error:
        _fail(f"{error}")
    for line in summary.lines():
        typer.echo(line)


@app.command("run")
def run(
    series: SeriesKeys = None,
    source: Source = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the series the run would take (each pattern and what it selects; the "
            "series not stored yet join this run) and stop.",
        ),
    ] = False,
    no_warmup: Annotated[
        bool,
        typer.Option(
            "--no-warmup",
            help="A series' first run forecasts at once, without first walking forward over "
            "its newest periods (CDDF_WARMUP_PERIODS=0 for this run).",
        ),
    ] = False,
) -> None:
    """Run the daily pipeline now, in this process: ingest, train or fine-tune, forecast, score.

    Uses the settings (CDDF_*) or their defaults: a SQLite file cdd_forecast.sqlite in the
    current directory and Prefect's local ephemeral API. Exits 1 if any series failed.
    A series' first run warms up first (flows/warmup.py) unless --no-warmup.
    """
    from cdd.client import refuse_credentials
    from flows.ingest import joining, plan

    if no_warmup:  # the flow runs in this process and reads the setting there
        os.environ["CDDF_WARMUP_PERIODS"] = "0"
        from settings import get_settings

        get_settings.cache_clear()
    try:
        refuse_credentials(source)  # before the flow run that would store it is created
        planned = plan(series, source)
    except ValueError as error:
        render.error(f"{error}")
        raise typer.Exit(2) from None
    keys = planned.keys
    _say_plan(planned, joining(keys, _engine()), every=dry_run)
    if dry_run:
        return
    temporary_api = _flow_api()
    unreachable = unreachable_source(keys, source)
    if unreachable is not None:
        render.error(unreachable)
        raise typer.Exit(1)

    from cdd.errors import CDDNetworkError
    from flows.daily import DailyRunFailed, daily_flow

    try:
        outcomes = daily_flow(keys, source)
    except DailyRunFailed as failed:
        outcomes = failed.outcomes
    if temporary_api:
        _prefect_retention()
    render.stdout().print(render.outcome_table(outcomes))
    for outcome in render.forecasts_shown(outcomes):
        render.stdout().print(render.forecasts_table(outcome.series, outcome.forecast.forecasts))
    console = render.stderr()
    for outcome in outcomes:
        if outcome.error is None:
            continue
        render.labelled(
            console,
            "red",
            f"{outcome.series} failed at {outcome.failed_step}:",
            f"{type(outcome.error).__name__}: {outcome.error}",
        )
        if isinstance(outcome.error, CDDNetworkError):
            console.print(source_hint(outcome.series), soft_wrap=True, markup=False)
    if any(outcome.error is not None for outcome in outcomes):
        raise typer.Exit(1)


def _say_plan(planned: SeriesPlan, new: list[str], *, every: bool) -> None:
    """The series a command takes (every one with ``every``, on stdout; else a line on
    stderr), then the plan's notes."""
    console = render.stdout() if every else render.stderr()
    for line in render.plan_lines(planned, new, every=every):
        console.print(line, soft_wrap=True, markup=False)
    for note in planned.notes:
        render.labelled(render.stderr(), "yellow", "note:", note)


@app.command("forecasts")
def forecasts(series: SeriesKeys = None) -> None:
    """Print the latest forecast of each series: every horizon with its 80/95 % intervals."""
    from db.forecasts import latest_forecasts

    engine, keys = _stored_selection(series)
    missing = []
    for key in keys:
        frame = latest_forecasts(engine, key)
        if frame.empty:
            missing.append(key)
        else:
            render.stdout().print(render.forecasts_table(key, frame))
    for key in missing:
        render.stderr().print(
            f"no forecasts of {key} yet: run `cdd-forecast run --series {key}`", markup=False
        )
    if len(missing) == len(keys):  # none shown (or no series selected)
        raise typer.Exit(1)


@app.command("scores")
def scores(
    series: SeriesKeys = None,
    days: Annotated[
        int,
        typer.Option(
            min=1,
            max=36_600,
            help="Score the forecasts served in this many days up to each series' newest "
            "final candle (at most 36,600: a century, every forecast stored).",
        ),
    ] = 365,
) -> None:
    """How the served forecasts did against naive over each series' last DAYS days, and over
    the series together: Diebold–Mariano p-values adjusted by Holm for how many were tested."""
    from flows.served_scores import served_scores, summary_lines

    engine, keys = _stored_selection(series)
    scored = served_scores(engine, keys, days=days)
    if scored.series:
        render.stdout().print(render.served_scores_table(scored))
        for line in summary_lines(scored):
            typer.echo(line)
    for key in scored.unscored:
        render.stderr().print(
            f"no scored forecasts of {key} in its last {days} days: its forecasts are scored "
            "once their targets have final candles (`cdd-forecast run`, or `cdd-forecast "
            f"backfill --series {key}` for past days)",
            markup=False,
        )
    if not scored.series:
        raise typer.Exit(1)


def _stored_selection(series: list[str] | None) -> tuple[Engine, list[str]]:
    """The engine and the stored series that ``--series`` (default CDDF_SERIES) selects; each
    entry that selects none said on stderr, a malformed one ends the command (exit 2)."""
    from cdd.catalogue import check_entry, select
    from db.stored_series import stored_keys
    from settings import get_settings

    entries = series or get_settings().series
    try:
        for entry in entries:
            check_entry(entry)
    except ValueError as error:
        render.error(f"{error}")
        raise typer.Exit(2) from None
    engine = _engine()
    selected = select(entries, stored_keys(engine))  # a pattern: among the stored series
    for entry in (entry for entry, found in selected.items() if not found):
        render.stderr().print(
            f"no stored series matches {entry}: `cdd-forecast run --dry-run` shows what it "
            "selects, `cdd-forecast series` what is stored",
            markup=False,
        )
    return engine, list(dict.fromkeys(key for found in selected.values() for key in found))


def unreachable_source(keys: list[str], source: str | None) -> str | None:
    """A message naming the first HTTP host of the sources that cannot be reached, else None."""
    from urllib.parse import urlsplit

    import requests

    from cdd.client import answers, is_http, shown_url
    from cdd.series_key import SeriesKey
    from flows.ingest import resolve_source
    from settings import get_settings

    settings = get_settings()
    checked: set[str] = set()
    for key in keys:
        url = resolve_source(SeriesKey.of(key), source)
        host = urlsplit(url).netloc
        if not is_http(url) or host in checked:
            continue
        checked.add(host)
        try:  # any HTTP answer, even an error status, means the host is there
            answers(url, settings=settings)
        except (requests.RequestException, OSError) as error:
            return (
                f"cannot reach {urlsplit(url).hostname} ({type(error).__name__}: "
                f"{shown_url(str(error))}).\n" + source_hint(key, shown_url(url))
            )
    return None


def source_hint(series: str, url: str | None = None) -> str:
    """How to run with a file downloaded elsewhere."""
    where = f" from {url}" if url else ""
    return (
        f"Download {series}.csv{where} on a machine that can reach it and pass the file with "
        f"--source:\n  cdd-forecast run --series {series} --source ./{series}.csv\n"
        "(several series: --source a directory, or a base URL ending in /, holding "
        "<series>.csv files)"
    )


# `serve`: the deployments of prefect.yaml served by one process, the single-machine
# alternative to work pools and workers. It registers the daily, train, series and backfill
# deployments (prefect.yaml's names, schedule and parameters) with a running Prefect server and
# runs their flow runs itself. Deployments of the same names that `prefect deploy` made for
# work pools (a work pool, pull steps) are never replaced: serve refuses and says what to do,
# or serves under other names with --name-prefix. Deployments a previous serve made are its
# own and served again. On stop it pauses only the deployments it still serves. The deployments,
# their schedule and parameters are flows/deployments.py's table, which prefect.yaml agrees with.


@app.command("serve")
def serve(
    limit: Annotated[
        int | None, typer.Option(min=1, help="At most this many flow runs at a time.")
    ] = None,
    name_prefix: Annotated[
        str,
        typer.Option(help="Serve daily/<prefix>daily, …: beside deployments of prefect deploy."),
    ] = "",
) -> None:
    """Serve the daily (15 0 * * * UTC), train and backfill deployments from this process.

    Needs a running Prefect server: `prefect server start`, and PREFECT_API_URL=
    http://127.0.0.1:4200/api here. Never replaces deployments of the same names that
    `prefect deploy` made for work pools (use --name-prefix). Stop with Ctrl-C: the
    deployments it served are paused (their schedule too) while nothing serves them.
    """
    from prefect import serve as prefect_serve
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    if not api_url:
        _fail(
            "PREFECT_API_URL is not set: `cdd-forecast serve` registers its deployments "
            "with a Prefect server and needs it running; start one (`prefect server start`) and "
            "export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    names = served_names(name_prefix)
    try:
        in_the_way = {n: d for n, d in existing(names).items() if made_for_workers(d)}
    except ServerUnreachable as error:
        _fail(f"{error}")
    if in_the_way:
        _fail(refusal(in_the_way, api_url))
    # SIGTERM stops it like Ctrl-C, also before Prefect's runner takes the signal over
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        prefect_serve(*served_deployments(name_prefix), limit=limit, pause_on_shutdown=False)
    except KeyboardInterrupt:
        pass  # stopped while it registered the deployments
    finally:
        for name in pause_served(names):
            typer.echo(f"paused {name} (nothing serves it now)")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class ServerUnreachable(RuntimeError):
    """The Prefect server of PREFECT_API_URL did not answer."""


def served_names(name_prefix: str = "") -> list[str]:
    """The ``flow/deployment`` names ``serve`` registers.

    >>> served_names("local-")[:4]
    ['daily/local-daily', 'train/local-train', 'series/local-series', 'backfill/local-backfill']
    >>> served_names()[4:]
    ['prefect-retention/prefect-retention', 'resume/resume']
    """
    return [f"{d.name}/{name_prefix}{d.name}" for d in DEPLOYMENTS]


def existing(names: Sequence[str]) -> dict[str, DeploymentResponse]:
    """Those of the deployments ``names`` that the server has, by name."""
    import httpx
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    found = {}
    try:
        with get_client(sync_client=True) as client:
            for name in names:
                try:
                    found[name] = client.read_deployment_by_name(name)
                except ObjectNotFound:
                    pass
    except httpx.TransportError as error:
        raise ServerUnreachable(
            f"the Prefect server at {PREFECT_API_URL.value()} does not answer ({error}); "
            "start it (`prefect server start`) or fix PREFECT_API_URL"
        ) from None
    return found


def made_for_workers(deployment: DeploymentResponse) -> bool:
    """Made by `prefect deploy` (a work pool, pull steps), not by a serving process."""
    return bool(deployment.work_pool_name or deployment.pull_steps)


def refusal(in_the_way: dict[str, DeploymentResponse], api_url: str) -> str:
    """Why ``serve`` will not start, naming the deployments in the way, and what to do."""
    names = ", ".join(
        f"{name} (work pool {d.work_pool_name or 'none'})" for name, d in in_the_way.items()
    )
    return (
        f"the Prefect server at {api_url} already has {names}, made by `prefect deploy` for "
        "workers; serving would replace them (pull steps and work pools lost) and pause them "
        "on stop, so `cdd-forecast serve` leaves them alone. Either run workers for them "
        "(`prefect worker start --pool cpu`, and `--pool gpu` on the GPU machine), or serve "
        "under other names (`cdd-forecast serve --name-prefix local-` serves daily/local-daily, "
        "… — its daily schedule then runs beside theirs: pause one), or delete them first "
        "(`prefect deployment delete daily/daily`, …)."
    )


def pause_served(names: Sequence[str]) -> list[str]:
    """Pause those of the deployments ``names`` that a process serves (not one deployed for
    workers meanwhile); their names."""
    from prefect import get_client

    try:
        served = {n: d for n, d in existing(names).items() if not made_for_workers(d)}
    except ServerUnreachable:
        return []  # the server stopped first: nothing to pause
    with get_client(sync_client=True) as client:
        for deployment in served.values():
            client.pause_deployment(deployment.id)
    return list(served)


def served_deployments(name_prefix: str = "") -> list[RunnerDeployment]:
    """The deployments of prefect.yaml, as one process serves them (no work pools)."""
    return [deployment.served(name_prefix) for deployment in DEPLOYMENTS]


@app.command("gpu-check")
def gpu_check() -> None:
    """Say whether TensorFlow can train on a GPU here, and if not why (the GPU worker runs this
    as it starts). Without one: a warning, or exit 1 when CDDF_REQUIRE_GPU=1."""
    from flows.gpu import GPU_POOL, check_gpu, require_gpu_error
    from settings import get_settings

    check = check_gpu(GPU_POOL)
    what = f"this worker of pool '{GPU_POOL}'"
    if check.fallback and get_settings().require_gpu:
        _fail(str(require_gpu_error(check, what)))
    typer.echo(("WARNING: " if check.fallback else "") + check.message(what), err=check.fallback)


@db_app.command("upgrade")
def upgrade(
    revision: Annotated[
        str, typer.Option(help="Alembic revision to reach (default: the newest, head).")
    ] = "head",
) -> None:
    """Create or upgrade the tables of CDDF_DATABASE_URL (idempotent; SQLite or PostgreSQL)."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy.exc import SQLAlchemyError

    from db.engine import make_engine, masked_url, migrate
    from settings import get_settings

    url = get_settings().database_url
    shown = masked_url(url)
    engine = make_engine(url.get_secret_value())
    try:
        migrate(engine, revision)
        with engine.connect() as connection:
            reached = MigrationContext.configure(connection).get_current_heads()
    except SQLAlchemyError as error:
        cause = getattr(error, "orig", None) or error
        _fail(
            f"cannot migrate {shown}: {type(cause).__name__}: {cause}; "
            "check CDDF_DATABASE_URL and that the server is running"
        )
    finally:
        engine.dispose()
    typer.echo(f"database {shown} is at revision {', '.join(reached) or 'base'}")


@db_app.command("roles")
def roles(
    app_role: Annotated[
        str | None,
        typer.Option(
            help="Application role that owns the tables (default: CDDF_APP_ROLE, cddf_app)."
        ),
    ] = None,
    reader_role: Annotated[
        str | None,
        typer.Option(help="Read-only analyst role (default: CDDF_READER_ROLE, forecast_reader)."),
    ] = None,
    schema: Annotated[
        str | None, typer.Option(help="Schema of the tables (default: the current schema).")
    ] = None,
    confine_to: Annotated[
        list[str] | None,
        typer.Option(
            help="Another database of the server the two roles must not connect to or create "
            "temporary tables in (repeatable): revokes CONNECT, TEMPORARY there from PUBLIC "
            "and grants them back to every other existing login role."
        ),
    ] = None,
) -> None:
    """Create or update the PostgreSQL roles (idempotent); run after `db upgrade`.

    Connects with CDDF_DATABASE_URL, as a user with CREATEROLE (e.g. postgres).

    Passwords come only from the environment, CDDF_APP_PASSWORD and CDDF_READER_PASSWORD,
    never from the command line; an unset one leaves that role's password unchanged.
    """
    from db.engine import make_engine, masked_url
    from db.roles import RolesError, ensure_roles, role_summary
    from settings import get_settings

    settings = get_settings()
    url = settings.database_url
    engine = make_engine(url.get_secret_value())
    try:
        report = ensure_roles(
            engine,
            app_role=app_role or settings.app_role,
            reader_role=reader_role or settings.reader_role,
            app_password=settings.app_password,
            reader_password=settings.reader_password,
            schema=schema,
            confine_to=confine_to or (),
        )
    except RolesError as error:
        _fail(f"{error}")
    finally:
        engine.dispose()
    typer.echo(f"roles ready on {masked_url(url)}")
    for line in role_summary(report):
        typer.echo(f"  {line}")
    for role, variable in (
        (report.app_role, "CDDF_APP_PASSWORD"),
        (report.reader_role, "CDDF_READER_PASSWORD"),
    ):
        if role in report.created and role not in report.passwords_set:
            typer.echo(
                f"note: {role} has no password yet; set {variable} and rerun so it can log in",
                err=True,
            )


@db_app.command("prune")
def prune(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would go; change nothing.")
    ] = False,
) -> None:
    """Drop the weights of model versions that can no longer serve or be rolled back.

    Each model keeps its serving version, the retrain it descends from and CDDF_KEEP_VERSIONS
    recent ones; older versions keep their rows, metrics and forecasts (db/retention.py).
    A model a run is working on is skipped and pruned next time. The daily run prunes too.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from db.retention import prune as prune_database
    from settings import get_settings

    engine = _engine()
    keep = get_settings().keep_versions
    try:
        report = prune_database(engine, keep_versions=keep, dry_run=dry_run)
    except SQLAlchemyError as error:
        cause = getattr(error, "orig", None) or error
        _fail(f"cannot prune: {type(cause).__name__}: {cause}; check CDDF_DATABASE_URL")
    verb = "would drop" if dry_run else "dropped"
    for scope in report.scopes:
        if scope.dropped:
            typer.echo(
                f"{scope.scope}: {verb} versions {', '.join(map(str, scope.dropped))} "
                f"({scope.freed_bytes / 1e6:.1f} MB); kept {', '.join(map(str, scope.kept))} "
                f"(serving {scope.serving})"
            )
    typer.echo(report.summary())
    if engine.dialect.name == "postgresql" and report.bytes_freed and not dry_run:
        typer.echo(
            "autovacuum makes the space reusable; to return it to the operating system run "
            "VACUUM FULL model_versions when no run is due (it locks the table)"
        )


if __name__ == "__main__":
    app()
