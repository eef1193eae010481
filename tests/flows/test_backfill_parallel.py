"""A backfill's retrains side by side in worker processes: the same forecasts as in one."""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

import pandas as pd
import pytest

from db.forecasts import run_forecasts, runs
from db.registry import versions
from flows import backfill_pool
from flows.backfill import backfill_flow
from flows.backfill_plan import BackfillPlan
from flows.backfill_pool import RetrainJob, RetrainPool, default_processes, retrain
from forecaster import ForecasterConfig
from tests.flows.cdd_files import make_candles
from tests.flows.test_backfill import (
    FIRST_DAY,
    KEY,
    N_CANDLES,
    SERIES,
    TINY,
    day,
    get_engine_migrated,
    store,
)
from tests.flows.test_cli_ephemeral import children, command_line


def backfilled(
    url: str, processes: int, monkeypatch, interrupted_after: int | None = None
) -> tuple[list[str], pd.DataFrame]:
    """Backfill days 40..45 (three retrain blocks) on a fresh database with ``processes``
    (after a run that stopped at day ``interrupted_after``, if given, in one process); the
    steps' actions and every stored forecast, by as_of and horizon."""
    monkeypatch.setenv("CDDF_DATABASE_URL", url)
    engine = get_engine_migrated()
    store(engine, make_candles(KEY, N_CANDLES, start=str(FIRST_DAY)))
    if interrupted_after is not None:
        monkeypatch.setenv("CDDF_BACKFILL_PROCESSES", "1")
        backfill_flow(SERIES, day(40), day(interrupted_after), retrain_every=2)
    monkeypatch.setenv("CDDF_BACKFILL_PROCESSES", str(processes))
    summary = backfill_flow(SERIES, day(40), day(45), retrain_every=2)
    assert len(versions(engine, SERIES)) == 6
    stored = run_forecasts(engine, [run.id for run in runs(engine, SERIES)])
    numbers = stored.select_dtypes("number").drop(columns=["run_id", "model_version_id"])
    frame = pd.concat([stored[["as_of", "horizon"]], numbers.drop(columns="horizon")], axis=1)
    return [step.action for step in summary.steps], frame.sort_values(["as_of", "horizon"])


def test_retrains_in_worker_processes_store_what_one_process_stores(
    tmp_path, monkeypatch, prefect_harness
):
    monkeypatch.setenv("CDDF_FORECASTER", TINY)
    one_actions, one = backfilled(f"sqlite:///{tmp_path / 'one.sqlite'}", 1, monkeypatch)
    two_actions, two = backfilled(f"sqlite:///{tmp_path / 'two.sqlite'}", 2, monkeypatch)
    assert one_actions == two_actions == ["retrain", "finetune"] * 3
    assert len(one) == 6 * ForecasterConfig.from_dict(json.loads(TINY)).horizon
    assert list(one.columns) == list(two.columns) and "value" in one.columns
    pd.testing.assert_frame_equal(one.reset_index(drop=True), two.reset_index(drop=True))


def test_a_resumed_backfill_with_a_worker_stores_what_one_uninterrupted_process_stores(
    tmp_path, monkeypatch, prefect_harness
):
    # stopped at day 42, the first of the second block: the resumed run goes on from it in
    # its own process and hands the third block's retrain to its worker
    monkeypatch.setenv("CDDF_FORECASTER", TINY)
    _, one = backfilled(f"sqlite:///{tmp_path / 'one.sqlite'}", 1, monkeypatch)
    actions, two = backfilled(
        f"sqlite:///{tmp_path / 'two.sqlite'}", 2, monkeypatch, interrupted_after=42
    )
    assert actions == ["finetune", "retrain", "finetune"]
    pd.testing.assert_frame_equal(one.reset_index(drop=True), two.reset_index(drop=True))


def test_a_worker_hands_back_the_artifact_and_its_epoch_lines():
    config = ForecasterConfig.from_dict(json.loads(TINY))
    candles = make_candles(KEY, N_CANDLES, start=str(FIRST_DAY))
    job = RetrainJob(config, candles, train_candles=40)
    with RetrainPool(2) as pool:
        done = pool.submit(job).result(timeout=300)
    here = retrain(job)
    assert [line.split()[:2] for line in done.log][:1] == [["fit", "epoch"]]
    model = done.model("the test's retrain")
    assert model.n_windows_ == here.model("here").n_windows_
    assert model.training_range_[0] == candles.index[-40]  # the newest 40 candles only
    pd.testing.assert_frame_equal(model.predict(candles), here.model("here").predict(candles))


def test_a_pool_needs_a_process():
    with pytest.raises(ValueError, match="integer >= 1 of processes, got 0"):
        RetrainPool(0)


@pytest.mark.parametrize(
    ("cores", "device", "retrains", "processes"),
    [
        (2, "CPU", 88, 2),  # BTC 2019 -> 2025: a worker retrains the blocks ahead
        (2, "CPU", 3, 2),
        (2, "CPU", 2, 1),  # the worker's start would not pay back
        (1, "CPU", 88, 1),  # no second core
        (16, "GPU", 88, 1),  # a second TensorFlow process would claim the GPU's memory
    ],
)
def test_a_backfill_takes_a_worker_where_a_second_core_pays_for_it(
    cores, device, retrains, processes, monkeypatch
):
    monkeypatch.setattr(backfill_pool, "usable_cores", lambda: cores)
    monkeypatch.setattr("forecaster.network.device", lambda: device)
    assert default_processes(retrains) == processes


def test_the_cores_counted_are_those_this_process_may_run_on():
    assert 1 <= backfill_pool.usable_cores() <= (backfill_pool.os.cpu_count() or 1)


def test_a_retrain_asked_for_here_runs_in_the_caller_s_process(monkeypatch):
    config = ForecasterConfig.from_dict(json.loads(TINY))
    job = RetrainJob(config, make_candles(KEY, N_CANDLES, start=str(FIRST_DAY)), train_candles=40)
    ran = []
    monkeypatch.setattr(backfill_pool, "retrain", lambda job, capture: ran.append(job) or "done")
    with RetrainPool(2) as pool:
        pending = pool.submit(job, here=True)
        assert ran == [] and pool._executor is None  # no worker started for it
        assert pending.result() == "done" and ran == [job]


# a fit of about a minute here (~50 windows, a batch of 1): long enough to show a shutdown
# that waits for it, short enough to end should it wait
MINUTE_FIT = (
    '{"units": 64, "max_epochs": 400, "patience": 400, "window": 5, "horizon": 3, "batch_size": 1}'
)


def spawned_children() -> set[int]:
    """This process's `spawn` children now (from /proc): the pools' workers."""
    return {pid for pid in children(os.getpid()) if "spawn_main" in command_line(pid)}


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_a_pool_left_by_an_error_ends_its_worker_without_waiting_for_its_fit():
    """Its shutdown waited for the worker's fit, which nobody would use: a backfill stopped by
    SIGTERM outlived the CLI's grace and exited with the worker still fitting."""
    config = ForecasterConfig.from_dict(json.loads(MINUTE_FIT))
    job = RetrainJob(config, make_candles(KEY, N_CANDLES, start=str(FIRST_DAY)))
    before = spawned_children()
    with pytest.raises(KeyboardInterrupt):
        with RetrainPool(2) as pool:
            pending = pool.submit(job)
            deadline = time.monotonic() + 120
            while not (workers := spawned_children() - before):
                assert time.monotonic() < deadline, "no worker started in 120 s"
                time.sleep(0.1)
            time.sleep(3)  # importing TensorFlow or fitting: either outlasts the 10 s below
            assert not pending.done()
            left = time.monotonic()
            raise KeyboardInterrupt  # as Ctrl-C, or SIGTERM's SystemExit, in the flow
    assert time.monotonic() - left < 10
    ended = time.monotonic() + 10
    while workers & spawned_children() and time.monotonic() < ended:
        time.sleep(0.1)
    assert not workers & spawned_children()
    assert pending.cancelled() or isinstance(pending.exception(timeout=0), BrokenProcessPool)


def test_a_worker_s_retrain_is_waited_for_at_most_the_daily_train_s_limit(monkeypatch):
    """A worker that hung (or a fit past the limit) held the backfill, and its lease, forever."""
    from flows import backfill

    assert backfill.RETRAIN_WAIT_S == backfill.TRAIN_TIMEOUT_S
    monkeypatch.setattr(backfill, "RETRAIN_WAIT_S", 0.2)
    as_of = pd.Timestamp("2024-03-01", tz="UTC")
    plan = BackfillPlan(SERIES, pd.DatetimeIndex([as_of]), 3, pd.DataFrame())
    never_done: Future = Future()  # a retrain that does not come back
    with pytest.raises(TimeoutError) as raised:
        backfill.retrained_model(plan, as_of, never_done)
    assert str(raised.value) == (
        "Bitstamp_BTCUSD_d: the retrain of Bitstamp_BTCUSD_d as of 2024-03-01 00:00 did not "
        "come back from its worker process within 0.2 s (the daily train's limit, "
        "flows.train.TRAIN_TIMEOUT_S); rerun the backfill, which resumes; if a retrain really "
        "takes that long, cap it with train_candles or max_epochs (CDDF_TIMEFRAME_SETTINGS, "
        "CDDF_SERIES_SETTINGS)"
    )
