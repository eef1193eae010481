"""The daily flow end to end, its isolation of failing series, the CLI, database outages."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from prefect import flow, get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterId,
)
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from typer.testing import CliRunner

import flows.candles
import flows.pipeline as pipeline_module
import flows.train as train_module
import flows.versions
from cdd.series_key import SeriesKey
from db.engine import make_engine
from db.forecast_tables import ForecastMetric, ForecastRun, ModelVersion
from db.forecasts import latest_forecasts
from db.models import IngestRun
from db.registry import versions
from flows.cli import app
from flows.daily import DailyRunFailed, daily_flow
from flows.dispatch import DispatchError, DispatchFailed, DispatchTimeout, dispatch
from flows.forecast import forecast_flow
from flows.summary import series_artifact_key
from flows.train import train_flow
from settings import SettingsError, get_settings
from tests.flows.cdd_files import make_cdd_csv
from tests.flows.forecast_service import (
    HORIZON,
    KEY,
    N_CANDLES,
    SERIES,
    candles_until,
    start_service,
)
from tests.flows.test_charts import images_in

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
POSTGRES_ONLY = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@pytest.fixture
def service(service_database, monkeypatch, prefect_harness, tmp_path):
    monkeypatch.setenv("CDDF_CHART_DIR", str(tmp_path / "charts"))
    return start_service(monkeypatch)


def count(engine, table) -> int:
    with Session(engine) as session:
        return session.execute(select(func.count()).select_from(table)).scalar_one()


def artifacts_of(flow_run_id) -> dict[str, object]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {artifact.key: artifact.data for artifact in found}


@SQLITE_ONLY
def test_daily_ingests_trains_forecasts_scores_and_reports(service, cdd, tmp_path):
    cdd(N_CANDLES + 5)
    state = daily_flow(return_state=True)  # the configured series: CDDF_SERIES' default
    assert state.is_completed()
    [outcome] = state.result()
    assert outcome.ingest.inserted == 5 and outcome.trained.action == "retrain"
    assert outcome.forecast.as_of == candles_until(N_CANDLES + 5).index[-1]
    assert outcome.chart.parent == tmp_path / "charts"
    assert outcome.chart.read_bytes().startswith(b"\x89PNG")
    artifacts = artifacts_of(state.state_details.flow_run_id)
    summary = artifacts["daily-summary"]
    assert f"| {SERIES} | ok | 5 | {outcome.trained.version.id} (retrain)" in summary
    # the chart as an image any browser shows, in the series' own artifact with its
    # forecasts, read back from the API: no file:// link
    chart = artifacts[series_artifact_key(SERIES)]
    assert "file://" not in chart
    assert images_in(chart) == {f"{SERIES} chart": outcome.chart.read_bytes()}
    assert f"model version {outcome.trained.version.id}" in chart.lower()

    cdd(N_CANDLES + 5 + HORIZON)  # the next days: the first run's targets are final
    [second] = daily_flow()
    assert second.trained.action == "finetune" and second.ingest.inserted == HORIZON
    assert second.evaluate.runs_scored == 1 and second.evaluate.recent_skill is not None
    assert count(service, ForecastRun) == 2 and count(service, ModelVersion) == 2
    assert count(service, ForecastMetric) == 2 * (HORIZON + 1)  # run and version rows
    shown = latest_forecasts(service, SERIES)
    assert shown["run_id"].unique().tolist() == [second.forecast.run_id]


def test_two_runs_of_a_series_at_once_write_one_version_and_one_forecast_run(service, cdd):
    """Two runs at once once trained two versions and wrote two forecast runs of one as_of:
    the second now waits for the lease daily-<series>, then finds the work done."""
    cdd(N_CANDLES)
    start = threading.Barrier(2)
    outcomes: list = []

    def one_run() -> None:
        start.wait()
        outcomes.extend(daily_flow([SERIES]))

    runs = [threading.Thread(target=one_run) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    assert [o.failed_step for o in outcomes] == [None, None], [o.error for o in outcomes]
    assert sorted(o.trained.action for o in outcomes) == ["keep", "retrain"]
    assert count(service, ModelVersion) == 1 and count(service, ForecastRun) == 1
    assert outcomes[0].forecast.as_of == outcomes[1].forecast.as_of


@SQLITE_ONLY
def test_a_run_that_waits_too_long_for_another_fails_its_series_naming_it(
    service, cdd, monkeypatch
):
    from db.locks import hold

    cdd(N_CANDLES)
    monkeypatch.setenv("CDDF_SERIES_LOCK_WAIT", "0.5")
    with hold(service, f"daily-{SERIES}", lease=dt.timedelta(seconds=60), holder="the other run"):
        state = daily_flow([SERIES], return_state=True)
    (outcome,) = state.result(raise_on_failure=False).outcomes
    assert outcome.failed_step == "train" and outcome.ingest is not None
    assert f"daily-{SERIES} is still held by the other run" in str(outcome.error)
    assert count(service, ModelVersion) == 0 and count(service, ForecastRun) == 0


@SQLITE_ONLY
def test_a_failing_series_does_not_stop_the_others(service, cdd):
    cdd(N_CANDLES)  # ETH answers 404
    state = daily_flow(["Bitstamp_ETHUSD_d", SERIES], return_state=True)
    assert state.is_failed()
    failure = state.result(raise_on_failure=False)
    assert isinstance(failure, DailyRunFailed)
    assert "1 of 2 series failed: Bitstamp_ETHUSD_d at ingest" in str(failure)
    eth, btc = failure.outcomes
    assert eth.failed_step == "ingest" and eth.trained is None
    assert btc.failed_step is None and btc.forecast is not None
    assert not latest_forecasts(service, SERIES).empty
    summary = artifacts_of(state.state_details.flow_run_id)["daily-summary"]
    assert "| Bitstamp_ETHUSD_d | **failed at ingest** |" in summary


@SQLITE_ONLY
def test_a_bad_setting_fails_the_run_before_any_work(service, cdd, httpserver, monkeypatch):
    cdd(N_CANDLES)
    monkeypatch.setenv("CDDF_SERIES_SETTINGS", '{"Kraken_ETHUSD_d": {"horizon": 2}}')
    state = daily_flow(return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, SettingsError) and "CDDF_SERIES_SETTINGS" in str(error)
    assert httpserver.log == [] and count(service, IngestRun) == 0


@SQLITE_ONLY
@pytest.mark.parametrize("parallel", [1, 2])
def test_series_run_side_by_side_bounded_by_max_parallel_series(
    service, httpserver, monkeypatch, parallel
):
    eth = SeriesKey.parse("Bitstamp_ETHUSD_d")
    monkeypatch.setenv("CDDF_CDD_BASE_URL", httpserver.url_for("/cdd/"))
    monkeypatch.setenv("CDDF_MAX_PARALLEL_SERIES", str(parallel))
    for key in (KEY, eth):
        body = make_cdd_csv(key, candles_until(N_CANDLES))
        httpserver.expect_request(f"/cdd/{key.key}.csv").respond_with_data(body)
    state = daily_flow([SERIES, eth.key], return_state=True)
    assert state.is_completed()
    assert [o.forecast is not None for o in state.result()] == [True, True]
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    spans = sorted((r.start_time, r.end_time) for r in task_runs if r.name.startswith("series "))
    assert len(spans) == 2
    (_, first_end), (second_start, _) = spans
    assert (second_start < first_end) == (parallel == 2)  # overlapping only when allowed


@SQLITE_ONLY
def test_daily_forecasts_with_the_version_its_training_step_handed_over(service, cdd, monkeypatch):
    handed_over = pipeline_module.train

    def train_then_another_run_registers_a_newer_version(scope, candles):
        trained = handed_over(scope, candles)
        train_flow(scope.members[0], mode="retrain")  # e.g. a backfill finishing right now
        return trained

    monkeypatch.setattr(pipeline_module, "train", train_then_another_run_registers_a_newer_version)
    cdd(N_CANDLES)
    [outcome] = daily_flow()
    assert outcome.forecast.model_version_id == outcome.trained.version.id
    assert versions(service, SERIES)[-1].id != outcome.trained.version.id


@SQLITE_ONLY
def test_a_series_daily_run_reads_its_final_candles_and_its_model_once(service, cdd, monkeypatch):
    """Read once after the ingest and handed to train, forecast, evaluate and the chart (they
    read them four times); the forecast uses the model the training step holds (it loaded the
    version's artifact again)."""
    reads: list[str] = []
    for module, name in ((flows.candles, "load_candles"), (flows.versions, "load_artifact")):
        real = getattr(module, name)

        def counting(engine, what, *args, _real=real, _name=name, **kwargs):
            reads.append(_name)
            return _real(engine, what, *args, **kwargs)

        monkeypatch.setattr(module, name, counting)
    cdd(N_CANDLES)
    [first] = daily_flow()
    assert first.trained.action == "retrain" and first.failed_step is None
    assert reads == ["load_candles"]  # the model just trained forecasts: no artifact read
    rebuilt = forecast_flow(SERIES, version_id=first.trained.version.id)  # from its artifact
    assert rebuilt.forecasts.equals(first.forecast.forecasts)  # the same forecast, to the bit
    reads.clear()
    cdd(N_CANDLES + HORIZON)
    [second] = daily_flow()
    assert second.trained.action == "finetune" and second.failed_step is None
    assert reads == ["load_candles", "load_artifact"]  # the artifact once: to fine-tune it
    assert second.forecast.model_version_id == second.trained.version.id


@SQLITE_ONLY
def test_a_dispatched_train_run_that_keeps_is_served_though_a_newer_version_came_after(
    service, cdd, monkeypatch
):
    """The daily serves what its train run did, not the latest version of the registry."""
    cdd(N_CANDLES)
    first = daily_flow()[0].trained.version
    kept = {}

    def train_on_a_worker_then_another_run_registers(deployment, parameters, **_):
        # the train deployment's run as its worker runs it: a flow run of its own
        state = train_flow(**parameters, return_state=True)
        kept["outcome"] = state.result()
        train_flow(parameters["series"], mode="retrain")  # e.g. a backfill finishing now
        with get_client(sync_client=True) as client:
            return client.read_flow_run(state.state_details.flow_run_id)

    monkeypatch.setenv("CDDF_TRAIN_DEPLOYMENT", "train/train")
    monkeypatch.setattr(pipeline_module, "dispatch", train_on_a_worker_then_another_run_registers)
    [outcome] = daily_flow()  # no new candle: the train run keeps its model
    assert (kept["outcome"].action, kept["outcome"].version.id) == ("keep", first.id)
    assert versions(service, SERIES)[-1].id != first.id  # a newer one was registered after it
    assert (outcome.trained.action, outcome.trained.version.id) == ("keep", first.id)
    assert outcome.trained.where.startswith("train/train run ")
    assert outcome.forecast.model_version_id == first.id


@SQLITE_ONLY
def test_cli_run_on_a_downloaded_file_then_forecasts(service, tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    path = tmp_path / f"{SERIES}.csv"
    path.write_bytes(make_cdd_csv(KEY, candles_until(N_CANDLES + 1)))
    runner = CliRunner()
    ran = runner.invoke(app, ["run", "--source", str(path)])
    assert ran.exit_code == 0, ran.output
    assert "daily run" in ran.output and f"{SERIES} forecast as of" in ran.output
    shown = runner.invoke(app, ["forecasts", "--series", SERIES])
    assert shown.exit_code == 0, shown.output
    as_of = candles_until(N_CANDLES + 1).index[-1]
    assert f"{SERIES} forecast as of {as_of:%Y-%m-%d %H:%M} UTC" in shown.output
    assert shown.output.count("–") == 2 * HORIZON  # an 80 and a 95 % interval per horizon
    none = runner.invoke(app, ["forecasts", "--series", "Bitstamp_ETHUSD_d"])
    assert none.exit_code == 1 and "no forecasts of Bitstamp_ETHUSD_d yet" in none.output


@SQLITE_ONLY
def test_cli_run_prints_cells_that_look_like_markup_as_they_are(service, tmp_path):
    """More bad rows than allowed, with [/red] in a cell, once crashed `run` (MarkupError)."""
    csv = make_cdd_csv(KEY, candles_until(10)).decode().splitlines()
    for n in range(2, 7):  # five rows' open: [/red], [bold], ... (the header first)
        cells = csv[n].split(",")
        cells[3] = ["[/red]", "[bold]", "[/]", "[red]", "[/red]"][n - 2]
        csv[n] = ",".join(cells)
    path = tmp_path / f"{SERIES}.csv"
    path.write_text("\n".join(csv) + "\n")
    ran = CliRunner().invoke(app, ["run", "--source", str(path)])
    assert ran.exit_code == 1 and not isinstance(ran.exception, Exception), ran.exception
    said = " ".join(ran.stderr.split())
    assert f"{SERIES} failed at ingest:" in said
    assert "open is '[/red]', not a number" in said and "open is '[bold]'" in said


@SQLITE_ONLY
def test_cli_run_names_an_unreachable_host_and_shows_source(service, monkeypatch):
    with socket.socket() as unused:  # a port that nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    monkeypatch.setenv("CDDF_CDD_BASE_URL", f"http://127.0.0.1:{port}/cdd/")
    ran = CliRunner().invoke(app, ["run"])
    assert ran.exit_code == 1
    assert "cannot reach 127.0.0.1" in ran.output
    assert f"cdd-forecast run --series {SERIES} --source ./{SERIES}.csv" in ran.output
    assert count(service, ModelVersion) == 0


@SQLITE_ONLY
def test_a_source_with_credentials_never_reaches_prefects_database(service, httpserver):
    """``run --source`` with user:password@ once stored the password in the flow run's
    parameters (the output and ingest_runs mask it): it is refused before any flow run."""
    httpserver.expect_request("/cdd/").respond_with_data("Not Found", status=404)
    netloc = httpserver.url_for("/cdd/").split("//", 1)[1]
    source = f"http://reader:s3cret-pw@{netloc}"
    ran = CliRunner().invoke(app, ["run", "--series", SERIES, "--source", source])
    assert ran.exit_code == 2, ran.output
    said = " ".join(ran.output.split())
    assert "holds credentials" in said and "~/.netrc" in said and "s3cret-pw" not in said
    with get_client(sync_client=True) as client:
        stored = [str(run.parameters) for run in client.read_flow_runs(limit=200)]
    assert not [parameters for parameters in stored if "s3cret-pw" in parameters]
    with pytest.raises(ValueError, match="holds credentials"):
        daily_flow.fn([SERIES], source)  # a deployment's run stops at its first line
    assert count(service, IngestRun) == 0


def test_a_first_run_on_a_fresh_machine_that_cannot_download_prints_only_its_error(tmp_path):
    """A new Prefect home, the ephemeral API, an unreachable source: our error, no traceback.

    The ephemeral server's telemetry once wrote its first session as the server stopped and
    printed "database is locked" after the error (flows/cli.py turns it off).
    """
    with socket.socket() as unused:  # a port that nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CDDF_"))}
    env |= {
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "CDDF_DATABASE_URL": f"sqlite:///{tmp_path / 'cddf.sqlite'}",
        "CDDF_CDD_BASE_URL": f"http://127.0.0.1:{port}/cdd/",
        "CDDF_HTTP_RETRIES": "0",
    }
    ran = subprocess.run(
        [str(Path(sys.executable).with_name("cdd-forecast")), "run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = ran.stdout + ran.stderr
    assert ran.returncode == 1, output
    assert "cannot reach 127.0.0.1" in output and "--source" in output
    assert "Traceback" not in output and "database is locked" not in output, output


@SQLITE_ONLY
def test_training_runs_in_the_train_deployment_when_one_is_configured(service, cdd, monkeypatch):
    """A served ``train`` deployment (as a gpu worker would run it) trains; daily waits."""
    from prefect.settings import PREFECT_API_URL

    environment = os.environ | {
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PYTHONUNBUFFERED": "1",
    }
    worker = subprocess.Popen(
        [sys.executable, "-c", "from flows.train import train_flow; train_flow.serve('train')"],
        cwd=Path(__file__).parents[2],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watchdog = threading.Timer(300, worker.kill)  # a hung worker fails the test
    watchdog.start()
    try:
        seen = []
        for line in worker.stdout:  # the deployment exists once this is printed
            seen.append(line)
            if "is being served" in line:
                break
        else:
            pytest.fail("the train deployment was not served:\n" + "".join(seen[-30:]))
        threading.Thread(target=worker.stdout.read, daemon=True).start()  # keep the pipe flowing
        monkeypatch.setenv("CDDF_TRAIN_DEPLOYMENT", "train/train")
        cdd(N_CANDLES)
        [outcome] = daily_flow()
    finally:
        watchdog.cancel()
        worker.terminate()
        worker.wait(timeout=60)
    version = outcome.trained.version
    assert outcome.trained.action == "retrain"
    assert outcome.trained.where == f"train/train run {version.flow_run_id}"
    with get_client(sync_client=True) as client:
        child = client.read_flow_run(version.flow_run_id)
    assert child.deployment_id is not None and child.state.is_completed()
    assert outcome.forecast.model_version_id == version.id


# database outages -------------------------------------------------------------------------


def no_retry_wait(monkeypatch, *names: str) -> None:
    """The train flow's database tasks retry at once (the retries are kept, not the wait)."""
    for name in names:
        task = getattr(train_module, name)
        monkeypatch.setattr(train_module, name, task.with_options(retry_delay_seconds=0))


def attempts(flow_run_id, task_prefix: str) -> list[int]:
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return [run.run_count for run in task_runs if run.name.startswith(task_prefix)]


def use_database(monkeypatch, url: str) -> None:
    monkeypatch.setenv("CDDF_DATABASE_URL", url)


@POSTGRES_ONLY
def test_database_unreachable_at_start_retries_fails_cleanly_then_next_run_completes(
    service, service_database, monkeypatch
):
    no_retry_wait(monkeypatch, "scope_candles")
    parts = urlsplit(service_database)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    use_database(monkeypatch, urlunsplit(parts._replace(netloc=f"postgres@127.0.0.1:{port}")))
    state = train_flow(SERIES, return_state=True)
    assert state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), OperationalError)
    assert attempts(state.state_details.flow_run_id, "scope_candles") == [4]  # 1 + 3 retries

    use_database(monkeypatch, service_database)
    assert versions(service, SERIES) == []
    assert train_flow(SERIES).action == "retrain"
    assert len(versions(service, SERIES)) == 1


@POSTGRES_ONLY
def test_database_lost_mid_run_registers_nothing_then_next_run_completes(
    service, service_database, monkeypatch
):
    parts = urlsplit(service_database)
    proxy = TcpProxy(parts.hostname, parts.port or 5432)
    original = train_module.fit
    try:
        use_database(
            monkeypatch,
            urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}")),
        )
        no_retry_wait(monkeypatch, "register")
        cut = original.with_options(on_completion=[lambda *_: proxy.close()])
        monkeypatch.setattr(train_module, "fit", cut)  # the database goes once trained
        state = train_flow(SERIES, return_state=True)
    finally:
        proxy.close()
    assert state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), OperationalError)
    assert attempts(state.state_details.flow_run_id, "register") == [4]

    use_database(monkeypatch, service_database)
    direct = make_engine(service_database)
    assert count(direct, ModelVersion) == 0  # nothing half-written
    monkeypatch.setattr(train_module, "fit", original)
    assert train_flow(SERIES).action == "retrain"
    assert count(direct, ModelVersion) == 1
    direct.dispose()


class TcpProxy:
    """Forwards a local port to the database; ``close`` cuts every connection for good."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.closed:
                client.close()
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.closed = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        except OSError:
            pass
        self.listener.close()
        for end in self.sockets:
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()


# dispatching to deployments: never an endless wait, never a second child -----------------


def runs_of(deployment_id) -> list:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )


@SQLITE_ONLY
def test_a_train_run_nobody_picks_up_fails_its_series_in_time_and_is_cancelled(
    service, cdd, monkeypatch
):
    deployment_id = train_flow.to_deployment(name="unserved").apply()
    monkeypatch.setenv("CDDF_TRAIN_DEPLOYMENT", "train/unserved")
    monkeypatch.setenv("CDDF_TRAIN_DISPATCH_TIMEOUT", "2")
    cdd(N_CANDLES)
    started = time.monotonic()
    state = daily_flow(return_state=True)
    assert state.is_failed() and time.monotonic() - started < 60
    [outcome] = state.result(raise_on_failure=False).outcomes
    assert outcome.failed_step == "train" and isinstance(outcome.error, DispatchTimeout)
    [child] = runs_of(deployment_id)
    assert str(child.id) in str(outcome.error)
    assert "did not end within 2 s (CDDF_TRAIN_DISPATCH_TIMEOUT) and was cancelled" in str(
        outcome.error
    )
    assert child.state.is_cancelled() and count(service, ModelVersion) == 0


def test_a_retried_dispatcher_gets_back_the_child_it_started(prefect_harness):
    """The idempotency key (calling flow run id + key): the second call finds the first child."""
    deployment_id = train_flow.to_deployment(name="unserved-twice").apply()

    @flow
    def dispatching_twice() -> list[DispatchError]:
        errors = []
        for _ in range(2):
            try:
                dispatch(
                    "train/unserved-twice",
                    {"series": SERIES},
                    key=f"train {SERIES}",
                    timeout=1,
                    via="CDDF_TRAIN_DEPLOYMENT",
                    timeout_setting="CDDF_TRAIN_DISPATCH_TIMEOUT",
                )
            except DispatchError as error:
                errors.append(error)
        return errors

    first, second = dispatching_twice()
    [child] = runs_of(deployment_id)
    assert isinstance(first, DispatchTimeout) and str(child.id) in str(first)
    assert isinstance(second, DispatchFailed)
    assert f"({child.id}) ended Cancelled" in str(second)


@SQLITE_ONLY
def test_series_sent_to_a_series_deployment_nobody_serves_fail_in_time_named(
    service, httpserver, monkeypatch
):
    from flows.series import series_flow

    deployment_id = series_flow.to_deployment(name="unserved").apply()
    monkeypatch.setenv("CDDF_SERIES_DEPLOYMENT", "series/unserved")
    monkeypatch.setenv("CDDF_SERIES_DISPATCH_TIMEOUT", "2")
    state = daily_flow([SERIES, "Bitstamp_ETHUSD_d"], return_state=True)
    assert state.is_failed()
    failure = state.result(raise_on_failure=False)
    assert str(failure).startswith("2 of 2 series failed: Bitstamp_BTCUSD_d at series run")
    assert [o.failed_step for o in failure.outcomes] == ["series run", "series run"]
    children = runs_of(deployment_id)
    assert sorted(c.parameters["series"] for c in children) == [SERIES, "Bitstamp_ETHUSD_d"]
    assert all(child.state.is_cancelled() for child in children)
    assert httpserver.log == [] and count(service, IngestRun) == 0  # nothing ran in-process


@SQLITE_ONLY
def test_the_series_flow_runs_one_series_and_fails_naming_its_step(service, cdd):
    from flows.series import SeriesRunFailed, series_flow

    cdd(N_CANDLES)
    outcome = series_flow(SERIES)
    assert outcome.forecast.model_version_id == outcome.trained.version.id
    state = series_flow("Bitstamp_ETHUSD_d", return_state=True)  # it answers 404
    error = state.result(raise_on_failure=False)
    assert isinstance(error, SeriesRunFailed)
    assert str(error).startswith("Bitstamp_ETHUSD_d failed at ingest: ")
    summary = artifacts_of(state.state_details.flow_run_id)["daily-summary"]
    assert "| Bitstamp_ETHUSD_d | **failed at ingest** |" in summary


def test_a_series_dispatch_timeout_not_above_the_train_one_is_refused(monkeypatch):
    monkeypatch.setenv("CDDF_SERIES_DEPLOYMENT", "series/series")
    monkeypatch.setenv("CDDF_TRAIN_DEPLOYMENT", "train/train")
    monkeypatch.setenv("CDDF_SERIES_DISPATCH_TIMEOUT", "600")
    monkeypatch.setenv("CDDF_TRAIN_DISPATCH_TIMEOUT", "600")
    with pytest.raises(SettingsError, match="CDDF_SERIES_DISPATCH_TIMEOUT=600 must be above"):
        get_settings()


def test_a_series_key_is_parsed_once_per_run_and_passed_on(service, cdd, monkeypatch):
    """Parsed where it enters (the run's plan) and handed on as a `SeriesKey`: no step parses
    it again (the ingest, model_scope, served_forecast and, on PostgreSQL, load_candles did;
    a run started by the CLI parsed it in the CLI's plan and again in the flow's)."""
    parsed: list[str] = []
    real = SeriesKey.parse.__func__

    def counting(cls, key):
        parsed.append(key)
        return real(cls, key)

    monkeypatch.setattr(SeriesKey, "parse", classmethod(counting))
    cdd(N_CANDLES)
    [first] = daily_flow()
    assert first.failed_step is None
    assert parsed == [SERIES]
    parsed.clear()
    cdd(N_CANDLES + HORIZON)
    ran = CliRunner().invoke(app, ["run"])
    assert ran.exit_code == 0, ran.output
    assert parsed == [SERIES]  # by the CLI's plan; the flow takes its SeriesKey as it is
