"""The backfill flow: point in time, resumable, idempotent, one at a time per series."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from cdd.series_key import SeriesKey
from db.candles import upsert_candles
from db.engine import get_engine
from db.forecast_tables import ForecastRun, ModelVersion
from db.forecasts import run_forecasts, runs
from db.registry import versions
from flows.backfill import backfill_flow
from flows.backfill_plan import BackfillError, BackfillPlan, Segment, minimum_history
from flows.cli import app
from flows.forecast import forecast_flow
from flows.train import train_flow
from forecaster import ForecasterConfig
from tests.flows.cdd_files import make_candles

SERIES = "Bitstamp_BTCUSD_d"
KEY = SeriesKey.parse(SERIES)
TINY = '{"units": 4, "max_epochs": 2, "patience": 1, "window": 5, "horizon": 3, "batch_size": 32}'
FIRST_DAY = dt.date(2020, 1, 1)
N_CANDLES = 60  # 2020-01-01 .. 2020-02-29


def day(n: int) -> dt.date:
    """The date of candle ``n`` (0 = the first)."""
    return FIRST_DAY + dt.timedelta(days=n)


def at(n: int) -> pd.Timestamp:
    return pd.Timestamp(day(n), tz="UTC")


@pytest.fixture
def service(service_database, monkeypatch, prefect_harness):
    """A fresh service database (SQLite and PostgreSQL) holding 60 daily candles."""
    monkeypatch.setenv("CDDF_FORECASTER", TINY)
    engine = get_engine_migrated()
    store(engine, make_candles(KEY, N_CANDLES, start=str(FIRST_DAY)))
    return engine


@pytest.fixture
def sqlite_service(sqlite_url, monkeypatch, prefect_harness):
    """As ``service``, on SQLite only (for the tests that do not depend on the database)."""
    monkeypatch.setenv("CDDF_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("CDDF_FORECASTER", TINY)
    engine = get_engine_migrated()
    store(engine, make_candles(KEY, N_CANDLES, start=str(FIRST_DAY)))
    return engine


def get_engine_migrated():
    from db.engine import make_engine, migrate
    from settings import get_settings

    migrate(make_engine(get_settings().database_url.get_secret_value()))
    return get_engine()


def store(engine, candles: pd.DataFrame) -> None:
    with Session(engine) as session, session.begin():
        upsert_candles(session, KEY, candles)


def runs_by_as_of(engine) -> dict[pd.Timestamp, list[int]]:
    found: dict[pd.Timestamp, list[int]] = {}
    for run in runs(engine, SERIES):
        found.setdefault(pd.Timestamp(run.as_of), []).append(run.id)
    return found


def version_of(engine, as_of: pd.Timestamp) -> int:
    """The model version of the one run as of ``as_of``."""
    (version,) = [r.model_version_id for r in runs(engine, SERIES) if r.as_of == as_of]
    return version


def weights_kept(engine) -> set[int]:
    return {version.id for version in versions(engine, SERIES) if version.artifact_kept}


def forecasts_of(engine, as_of: pd.Timestamp) -> pd.DataFrame:
    """The values of the newest run as of ``as_of``."""
    newest = max(run.id for run in runs(engine, SERIES) if pd.Timestamp(run.as_of) == as_of)
    return run_forecasts(engine, [newest]).set_index("horizon")


def count(engine, table) -> int:
    with Session(engine) as session:
        return session.execute(select(func.count()).select_from(table)).scalar_one()


# point in time -------------------------------------------------------------------------


def test_changing_candles_after_as_of_leaves_its_forecast_unchanged(sqlite_service):
    engine = sqlite_service
    first = backfill_flow(SERIES, day(40), day(42), retrain_every=7)
    assert [s.action for s in first.steps] == ["retrain", "finetune", "finetune"]
    before = {n: forecasts_of(engine, at(n)) for n in (40, 41, 42)}

    # every candle after day 41 changes: prices x1.5
    candles = make_candles(KEY, N_CANDLES, start=str(FIRST_DAY))
    later = candles.index > at(41)
    for column in ("open", "high", "low", "close"):
        candles.loc[later, column] = candles.loc[later, column] * 1.5
    store(engine, candles)

    again = backfill_flow(SERIES, day(40), day(42), retrain_every=7, force=True)
    assert [s.action for s in again.steps] == ["retrain", "finetune", "finetune"]
    for n in (40, 41):  # as of day 40 and 41 nothing they may see has changed
        after = forecasts_of(engine, at(n))
        assert after["model_version_id"].iloc[0] != before[n]["model_version_id"].iloc[0]
        for column in ("value", "lower_80", "upper_95", "naive"):
            np.testing.assert_allclose(after[column], before[n][column], rtol=1e-6)
    # the control: as of day 42 the changed candle is visible, and the forecast moves with it
    after = forecasts_of(engine, at(42))
    assert after["naive"].iloc[0] == pytest.approx(before[42]["naive"].iloc[0] * 1.5)
    assert not np.allclose(after["value"], before[42]["value"], rtol=0.1)
    for version in versions(engine, SERIES):  # no model saw a candle after its as_of
        assert version.train_last <= at(42)
    with Session(engine) as session:
        pairs = session.execute(
            select(ForecastRun.as_of, ModelVersion.train_last).join(
                ModelVersion, ModelVersion.id == ForecastRun.model_version_id
            )
        ).all()
    assert pairs and all(train_last <= as_of for as_of, train_last in pairs)


def test_a_retrain_fits_on_the_newest_train_candles_as_the_daily_one(sqlite_service, monkeypatch):
    monkeypatch.setenv("CDDF_TIMEFRAME_SETTINGS", json.dumps({"d": {"train_candles": 35}}))
    backfill_flow(SERIES, day(40), day(41), retrain_every=7)
    [retrained] = [v for v in versions(sqlite_service, SERIES) if v.kind == "retrain"]
    assert pd.Timestamp(retrained.train_last) == at(40)
    assert pd.Timestamp(retrained.train_first) == at(40 - 34)  # the newest 35 candles only


def test_a_backfill_retrains_for_low_skill_where_the_daily_runs_do(sqlite_service, monkeypatch):
    """The daily run's auto policy retrains when its lineage's recent skill is below
    retrain_below_skill; a backfill of the same days takes the same steps."""
    monkeypatch.setenv("CDDF_RETRAIN_BELOW_SKILL", "1.5")  # no model reaches it: any score
    engine = sqlite_service
    days = range(40, 47)
    daily = []
    for n in days:  # the daily runs, each seeing the candles up to its day
        daily.append(train_flow(SERIES, as_of=at(n)))
        forecast_flow(SERIES, as_of=at(n))
    low = [n for n, o in zip(days, daily, strict=True) if "below retrain_below_skill" in o.reason]
    assert low == [43, 46]  # when a lineage's first run is scored (horizon 3): skill < 1.5

    backfill = backfill_flow(SERIES, day(days[0]), day(days[-1]), force=True)
    assert [s.action for s in backfill.steps] == [o.action for o in daily]
    assert [s.as_of for s in backfill.steps if s.low_skill] == [at(n) for n in low]
    assert "2 of them for low skill" in backfill.lines()[1]
    for n in days:  # and it serves what they served
        served = [r.id for r in runs(engine, SERIES) if r.as_of == at(n)]
        daily_run, backfill_run = run_forecasts(engine, served).groupby("run_id")
        for column in ("value", "lower_80", "upper_95"):
            np.testing.assert_allclose(backfill_run[1][column], daily_run[1][column], rtol=1e-5)


# resume, force, idempotence -------------------------------------------------------------


def test_resume_skips_done_dates_and_fine_tunes_from_the_last_one(sqlite_service):
    engine = sqlite_service
    backfill_flow(SERIES, day(40), day(41), retrain_every=7)
    done = runs_by_as_of(engine)
    assert weights_kept(engine) == {version_of(engine, at(41))}  # the newest model only

    resumed = backfill_flow(SERIES, day(40), day(43), retrain_every=7)
    assert resumed.skipped == 2
    assert [(s.as_of, s.action) for s in resumed.steps] == [
        (at(42), "finetune"),
        (at(43), "finetune"),
    ]
    by_id = {v.id: v for v in versions(engine, SERIES)}
    parent = by_id[by_id[resumed.steps[0].model_version_id].parent_id]
    assert parent.id == version_of(engine, at(41)) and parent.train_last == at(41)
    now = runs_by_as_of(engine)
    assert {k: v for k, v in now.items() if k in done} == done  # untouched
    assert all(len(ids) == 1 for ids in now.values())
    assert weights_kept(engine) == {version_of(engine, at(43))}  # still the newest only
    assert len(versions(engine, SERIES)) == 4  # every step's row and lineage stay

    n_versions, n_runs = count(engine, ModelVersion), count(engine, ForecastRun)
    repeat = backfill_flow(SERIES, day(40), day(43), retrain_every=7)
    assert repeat.steps == [] and repeat.skipped == 4
    assert (count(engine, ModelVersion), count(engine, ForecastRun)) == (n_versions, n_runs)


def test_force_redoes_done_dates(sqlite_service):
    engine = sqlite_service
    backfill_flow(SERIES, day(40), day(41), retrain_every=7)
    old = runs_by_as_of(engine)
    forced = backfill_flow(SERIES, day(40), day(41), retrain_every=7, force=True)
    assert forced.skipped == 0 and [s.action for s in forced.steps] == ["retrain", "finetune"]
    new = runs_by_as_of(engine)
    for as_of in (at(40), at(41)):
        assert len(new[as_of]) == 2 and new[as_of][0] == old[as_of][0]
    assert {s.model_version_id for s in forced.steps}.isdisjoint(
        {
            run.model_version_id
            for run in runs(engine, SERIES)
            if run.id in (old[at(40)][0], old[at(41)][0])
        }
    )


def test_a_corrupted_parent_artifact_falls_back_to_a_retrain(sqlite_service):
    engine = sqlite_service
    backfill_flow(SERIES, day(40), day(41), retrain_every=7)
    with Session(engine) as session, session.begin():
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.id == version_of(engine, at(41)))
            .values(artifact=b"not a model")
        )
    resumed = backfill_flow(SERIES, day(40), day(43), retrain_every=7)
    assert [(s.as_of, s.action) for s in resumed.steps] == [
        (at(42), "retrain"),
        (at(43), "finetune"),
    ]


def test_a_resumed_block_with_other_settings_retrains_and_says_why(
    sqlite_service, monkeypatch, caplog
):
    backfill_flow(SERIES, day(40), day(41), retrain_every=7)
    monkeypatch.setenv("CDDF_FORECASTER", TINY.replace('"units": 4', '"units": 5'))
    resumed = backfill_flow(SERIES, day(40), day(43), retrain_every=7)
    assert [(s.as_of, s.action) for s in resumed.steps] == [
        (at(42), "retrain"),
        (at(43), "finetune"),
    ]
    said = [
        r.getMessage() for r in caplog.records if "trained with other settings" in r.getMessage()
    ]
    assert said and "(units); retraining at 2020-02-12 00:00" in said[0], said


def test_two_overlapping_backfills_at_once_write_each_date_once(service):
    engine = service
    results: dict[str, object] = {}

    def backfill(name: str, first: int, last: int, retrain_every: int, parallel: int) -> None:
        try:
            results[name] = backfill_flow(
                SERIES, day(first), day(last), retrain_every=retrain_every, parallel=parallel
            )
        except BaseException as error:  # surfaced by the assertion below
            results[name] = error

    threads = [
        threading.Thread(target=backfill, args=("a", 40, 42, 2, 2)),  # two blocks at once
        threading.Thread(target=backfill, args=("b", 41, 43, 3, 1)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert all(not isinstance(r, BaseException) for r in results.values()), results
    a, b = results["a"], results["b"]
    assert len(a.steps) + len(b.steps) == 4  # the shared dates were done once
    assert a.skipped + b.skipped == 2
    by_as_of = runs_by_as_of(engine)
    assert sorted(by_as_of) == [at(40), at(41), at(42), at(43)]
    assert all(len(ids) == 1 for ids in by_as_of.values()), by_as_of
    assert count(engine, ModelVersion) == 4


def test_a_resumed_interrupted_backfill_keeps_one_model_with_weights(sqlite_service):
    engine = sqlite_service
    backfill_flow(SERIES, day(40), day(43), retrain_every=2)
    # as a run of 40..45 interrupted after its second block leaves them: each segment's last
    # step kept its weights (41 and 43), and 44, 45 were not done
    v41, v43 = version_of(engine, at(41)), version_of(engine, at(43))
    weights = select(ModelVersion.artifact).where(ModelVersion.id == v43).scalar_subquery()
    size = select(ModelVersion.artifact_size).where(ModelVersion.id == v43).scalar_subquery()
    with Session(engine) as session, session.begin():
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.id == v41)
            .values(artifact=weights, artifact_size=size)
        )
    assert weights_kept(engine) == {v41, v43}

    resumed = backfill_flow(SERIES, day(40), day(45), retrain_every=2)
    assert [s.as_of for s in resumed.steps] == [at(44), at(45)]
    assert weights_kept(engine) == {version_of(engine, at(45))}


def test_a_killed_backfill_is_rerun_after_its_lease(sqlite_service, monkeypatch, caplog):
    """A backfill killed with kill -9 holding the series' lock: the rerun waits, then runs."""
    from prefect.settings import PREFECT_API_URL

    monkeypatch.setenv("CDDF_LOCK_LEASE_SECONDS", "2")
    holder = subprocess.Popen(
        [sys.executable, "-c", KILLED_BACKFILL, SERIES],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_API_URL": PREFECT_API_URL.value()},
    )
    try:
        assert holder.stdout.readline().strip() == "holding", "the killed backfill never started"
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()

    finished: list[object] = []
    rerun = threading.Thread(
        target=lambda: finished.append(backfill_flow(SERIES, day(40), day(41), retrain_every=7))
    )
    started = time.monotonic()
    rerun.start()
    rerun.join(timeout=120)
    assert finished, "the rerun still waits for the killed backfill's lock"
    assert time.monotonic() - started < 100
    assert len(finished[0].steps) == 2
    waits = [r.getMessage() for r in caplog.records if "waiting for backfill-" in r.getMessage()]
    assert waits and f"pid {holder.pid}" in waits[0]


# the killed process takes the series' backfill lock as the flow does, then stops responding
KILLED_BACKFILL = """
import sys, time
from flows.backfill import one_backfill_per_series
with one_backfill_per_series(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(600)
"""
ROOT = Path(__file__).resolve().parents[2]


# bad parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("series", "start", "end", "retrain_every", "message"),
    [
        (SERIES, day(45), day(44), 7, "end 2020-02-14 is before start 2020-02-15"),
        ("Bitstamp_ETHUSD_d", day(40), day(41), 7, "unknown series Bitstamp_ETHUSD_d"),
        ("bitstamp-btc", day(40), day(41), 7, "invalid series key 'bitstamp-btc'"),
        (SERIES, day(58), day(60), 7, "end 2020-03-01 is after the last final candle"),
        (SERIES, day(-30), day(41), 7, "start 2019-12-02 leaves too little history"),
        (SERIES, day(2), day(41), 7, "the first possible as_of is"),
        (SERIES, day(40), day(41), 0, "retrain_every must be an integer >= 1"),
    ],
)
def test_bad_parameters_fail_before_any_work(
    sqlite_service, series, start, end, retrain_every, message
):
    with pytest.raises(BackfillError, match=message):
        backfill_flow(series, start, end, retrain_every=retrain_every)
    assert count(sqlite_service, ModelVersion) == 0
    assert count(sqlite_service, ForecastRun) == 0


def test_cli_backfill_reports_and_fails_clearly(sqlite_service):
    runner = CliRunner()
    result = runner.invoke(
        app, ["backfill", "--series", SERIES, "--start", "2020-02-10", "--end", "2020-02-09"]
    )
    assert result.exit_code == 1
    assert "end 2020-02-09 is before start 2020-02-10" in result.output

    result = runner.invoke(
        app,
        [
            "backfill",
            "--series",
            SERIES,
            "--start",
            str(day(45)),
            "--end",
            str(day(46)),
            "--retrain-every",
            "7",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "2 as_of times, 2 forecast, 0 already done" in result.output
    assert "1 retrained, 1 fine-tuned" in result.output
    result = runner.invoke(
        app, ["backfill", "--series", SERIES, "--start", str(day(45)), "--end", str(day(46))]
    )
    assert result.exit_code == 0, result.output
    assert "2 as_of times, 0 forecast, 2 already done (skipped)" in result.output


@pytest.mark.parametrize(
    ("series", "start", "end", "message"),
    [
        (SERIES, day(45), day(44), "end 2020-02-14 is before start 2020-02-15"),
        ("Bitstamp_ETHUSD_d", day(40), day(41), "unknown series Bitstamp_ETHUSD_d"),
        ("bitstamp-btc", day(40), day(41), "invalid series key 'bitstamp-btc'"),
        (SERIES, day(58), day(60), "end 2020-03-01 is after the last final candle"),
        (SERIES, day(2), day(41), "the first possible as_of is"),
    ],
)
def test_cli_backfill_refuses_bad_parameters_before_prefect_starts(
    sqlite_url, monkeypatch, series, start, end, message
):
    """A bad parameter is one line and exit 1, before Prefect's API starts (it took ~35 s)
    and without the flow's traceback: starting the API or the flow here fails the test."""
    monkeypatch.setenv("CDDF_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("CDDF_FORECASTER", TINY)
    store(get_engine_migrated(), make_candles(KEY, N_CANDLES, start=str(FIRST_DAY)))

    def started(*args, **kwargs):
        raise AssertionError("Prefect started for a backfill with bad parameters")

    monkeypatch.setattr("flows.ephemeral_api.start_ephemeral_api", started)
    monkeypatch.setattr("flows.backfill.backfill_flow", started)
    result = CliRunner().invoke(
        app, ["backfill", "--series", series, "--start", str(start), "--end", str(end)]
    )
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, AssertionError), result.exception
    (line,) = result.output.splitlines()
    assert line.startswith("error: ") and message in line
    assert "Traceback" not in result.output


def test_a_backfill_run_logs_each_training_epoch(sqlite_service):
    """The CLI's backfill, as an operator runs it: its flow run logs on the Prefect API hold
    the model's per-epoch lines, of the retrain and of the fine-tune, like the daily's."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.client.schemas.sorting import LogSort
    from prefect.settings import PREFECT_API_URL

    name = f"backfill {SERIES} {day(47)}..{day(48)}"
    runs_named = FlowRunFilter(name=FlowRunFilterName(any_=[name]))
    with get_client(sync_client=True) as client:
        before = {run.id for run in client.read_flow_runs(flow_run_filter=runs_named)}
    # the CLI, not this test, turns the forecaster logger on for the run logs
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_LOGGING_EXTRA_LOGGERS"}
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("cdd-forecast")),
            "backfill",
            "--series",
            SERIES,
            "--start",
            str(day(47)),
            "--end",
            str(day(48)),
            "--retrain-every",
            "7",
        ],
        cwd=ROOT,
        env={**env, "PREFECT_API_URL": PREFECT_API_URL.value()},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 retrained, 1 fine-tuned" in result.stdout
    with get_client(sync_client=True) as client:
        [run] = [r for r in client.read_flow_runs(flow_run_filter=runs_named) if r.id not in before]
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])),
            sort=LogSort.TIMESTAMP_ASC,
        )
    messages = [log.message for log in logs]
    config = ForecasterConfig.from_dict(json.loads(TINY))
    epochs, finetune_epochs = config.max_epochs, config.finetune_epochs
    fit_lines = [m for m in messages if m.startswith("fit epoch ")]
    update_lines = [m for m in messages if m.startswith("update epoch ")]
    assert fit_lines and fit_lines[0].startswith(f"fit epoch 1/{epochs} loss "), messages
    assert [m.split()[2] for m in update_lines] == [
        f"{n}/{finetune_epochs}" for n in range(1, finetune_epochs + 1)
    ], messages


# the plan -------------------------------------------------------------------------------


def test_segments_cut_at_block_starts_and_done_dates():
    as_ofs = pd.date_range("2024-01-01", periods=8, freq="D", tz="UTC")
    plan = BackfillPlan(SERIES, as_ofs, 3, pd.DataFrame())
    done = {as_ofs[1], as_ofs[6]}
    segments = plan.segments([t for t in as_ofs if t not in done])
    assert [(len(s.as_ofs), s.block_start) for s in segments] == [
        (1, True),
        (1, False),
        (3, True),
        (1, False),
    ]
    assert segments[0] == Segment((as_ofs[0],), True)
    assert segments[2].as_ofs == tuple(as_ofs[3:6]) and segments[3].as_ofs == (as_ofs[7],)


def test_minimum_history_is_the_shortest_fittable_series():
    config = ForecasterConfig(window=5, horizon=3)
    n = minimum_history(config)
    windows = n - 5 - 3 + 1
    assert windows - max(1, round(windows * config.validation_fraction)) - 2 == 1
