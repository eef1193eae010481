"""A backfill's retrains, side by side in worker processes while its fine-tunes go on in order.

    with RetrainPool(processes=2) as pool:      # this process and one worker
        pending = pool.submit(RetrainJob(config, candles_up_to_as_of, train_candles=None))
        ...
        retrained = pending.result()  # Retrained: the artifact, the fit's seconds, its log

A retrain sees only the final candles up to its own as_of, so the retrains of a backfill do
not depend on each other and can run at once; TensorFlow does not scale across threads of one
process, so they run in processes (``spawn``: a forked TensorFlow can hang). ``processes``
counts the caller's: with 2, one worker retrains the blocks ahead while the caller walks the
block before them, two cores busy; a retrain the caller would only wait for (``here=True``:
the first block's, or a resumed block's) runs in the caller. The model comes back as its
artifact (`LSTMForecaster.to_bytes`), the bytes the backfill registers, and is loaded from them
as the daily run loads the model it fine-tunes. With ``processes=1`` every retrain runs in the
caller's process when its result is asked for: the same function, the same artifact. The
worker's per-epoch lines come back with the model for the backfill's run logs. A spawned
worker imports the main module: a script that backfills keeps its work under
``if __name__ == "__main__":`` (the CLI and Prefect's engine do).

A worker ends with the backfill: a pool left by an error (a failed step, SIGTERM, Ctrl-C) ends
its workers at once rather than wait for their fits, which nobody will use. A process killed
before that runs (``kill -9``, or the CLI's ``os._exit`` past its SIGTERM grace) never shuts
its pool down, and a worker left so lived on, idle, under init, holding ~800 MB: each worker
watches its parent's sentinel (a pipe the parent holds open until it exits) and exits as soon
as it closes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from types import TracebackType

import pandas as pd

from forecaster import ForecasterConfig, LSTMForecaster
from forecaster.backtest import newest_candles
from forecaster.network import CompiledNetworks


@dataclass(frozen=True)
class RetrainJob:
    """A retrain from scratch on ``candles`` (each series' final candles up to the as_of; a
    global model's ``{series: candles}``), on the newest ``train_candles`` as the daily's."""

    config: ForecasterConfig
    candles: pd.DataFrame | Mapping[str, pd.DataFrame] = field(repr=False)
    train_candles: int | None = None
    group_train_candles: int | None = None


@dataclass(frozen=True)
class Retrained:
    """A retrained model as its artifact, the fit's seconds and its log lines (per epoch)."""

    artifact: bytes = field(repr=False)
    seconds: float
    log: tuple[str, ...] = ()

    def model(self, source: str) -> LSTMForecaster:
        """The model, loaded from the artifact (ArtifactError names ``source``)."""
        return LSTMForecaster.from_bytes(self.artifact, source=source)


# the retrains a backfill must have for a worker's start (a process that imports TensorFlow
# anew, ~5 s) to pay back: the first runs in the backfill's own process, the worker takes
# the rest
WORKER_PAYS_FROM = 3


def default_processes(retrains: int) -> int:
    """The processes a backfill of ``retrains`` retrains uses when nobody said: 2 (one worker
    beside the backfill) on a CPU of 2 or more cores where it retrains at least
    ``WORKER_PAYS_FROM`` times, else 1. A GPU retrains in the backfill's process: a second
    TensorFlow process would claim the GPU's memory again (docs/benchmarks.md)."""
    from forecaster.network import device

    return 2 if usable_cores() >= 2 and retrains >= WORKER_PAYS_FROM and device() == "CPU" else 1


def usable_cores() -> int:
    """The cores this process may run on (a container's cpuset, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# a worker's exit status when its parent died first (the parent is gone: nobody reads it)
ORPHANED_EXIT = 70


def _end_with_parent() -> None:
    """A worker's initializer: exit (``ORPHANED_EXIT``) once the process that started it is
    gone, from a thread that waits on its sentinel, whatever the worker is doing then."""
    parent = multiprocessing.parent_process()
    if parent is None:  # not a multiprocessing child: nothing to watch
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(ORPHANED_EXIT)

    threading.Thread(target=watch, name="parent watch", daemon=True).start()


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


# each thread's compiled network, reset for its next retrain: a retrain's model leaves here as
# its artifact only, so the next one may reuse its network (the same fit, without tracing anew)
_networks = threading.local()


def retrain(job: RetrainJob, capture: bool = True) -> Retrained:
    """Fit a new model on the job's newest candles; the artifact and (``capture``) the lines
    the fit logged, for a worker process to hand back (the caller's own process logs them)."""
    part = newest_candles(
        job.candles, job.train_candles, job.group_train_candles, job.config.min_history
    )
    if not hasattr(_networks, "kept"):
        _networks.kept = CompiledNetworks()
    if not capture:
        model = LSTMForecaster(job.config).fit(part, networks=_networks.kept)
        return Retrained(model.to_bytes(), model.train_seconds_)
    log = logging.getLogger("forecaster")
    lines, level = _Lines(), log.level
    log.addHandler(lines)
    if not log.isEnabledFor(logging.INFO):
        log.setLevel(logging.INFO)
    try:
        model = LSTMForecaster(job.config).fit(part, networks=_networks.kept)
    finally:
        log.removeHandler(lines)
        log.setLevel(level)
    return Retrained(model.to_bytes(), model.train_seconds_, tuple(lines.lines))


class _InProcess(Future):
    """A retrain run in the caller's process, when its result is first asked for."""

    def __init__(self, job: RetrainJob) -> None:
        super().__init__()
        self.job = job

    def result(self, timeout: float | None = None) -> Retrained:
        if not self.done():
            try:
                self.set_result(retrain(self.job, capture=False))
            except BaseException as error:
                self.set_exception(error)
        return super().result(timeout)


class RetrainPool:
    """Retrains in ``processes`` processes in all: the caller's own and ``processes - 1``
    workers (1: the caller's alone)."""

    def __init__(self, processes: int) -> None:
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ValueError(
                f"a retrain pool needs an integer >= 1 of processes, got {processes!r}"
            )
        self.processes = processes
        self.workers = processes - 1
        self._executor: ProcessPoolExecutor | None = None

    def submit(self, job: RetrainJob, here: bool = False) -> Future:
        """The retrain of ``job``: started now on a free worker (or queued for one), or, with
        ``here`` or no worker, run in the caller's process when its result is asked for."""
        if here or not self.workers:
            return _InProcess(job)
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_end_with_parent,
            )
        return self._executor.submit(retrain, job)

    def __enter__(self) -> RetrainPool:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Wait for the workers to finish; left by an error (a failed step, SIGTERM, Ctrl-C),
        end them at once: nobody uses the retrains they run (a rerun redoes them), and
        waiting for a fit held a stopped backfill past the CLI's grace."""
        if self._executor is None:
            return
        executor, self._executor = self._executor, None
        if kind is not None:
            for process in list((executor._processes or {}).values()):  # 3.11: no other handle
                process.terminate()
        executor.shutdown(wait=True, cancel_futures=True)
