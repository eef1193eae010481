"""Backfill: point-in-time forecasts for every as_of from ``start`` to ``end``, then scores.

    backfill_flow("Bitstamp_BTCUSD_d", date(2025, 6, 1), date(2025, 8, 31))

The as_of times are the series' final candles whose UTC date lies in [start, end] (a day per
step for a daily series, an hour for an hourly one). The model of each as_of sees the final
candles up to it and nothing later: it is retrained at the first as_of and on its scope's
retrain days (every ``retrain_every`` candles from the scope's offset; by default its
``retrain_after``: the days the daily run's auto policy retrains on, `flows.train_policy`), on
the newest ``train_candles`` as the daily retrain, and fine-tuned on each step in between
(forecaster.backtest's walk forward), unless the recent skill of the model's lineage is below
``retrain_below_skill`` at that step: then it retrains there, as the daily run would (the
skill of the lineage's newest scored runs, point in time; a global model's of the runs of its
lineage, which are the backfilled series' unless the block goes on from a daily version; the
summary counts those retrains). Every model is
registered and every forecast stored as a ``backfill`` run; the weights of a segment's steps
but its last are dropped when it ends (their rows, lineage and forecasts stay), so a finished
backfill keeps the weights of its newest model only and an interrupted one those of each
segment's last step (and of a segment cut short, its steps'), where a resumed run continues
from (and which it drops when it finishes: one model of the range keeps its weights).

Resumable and idempotent: an as_of that already has a forecast run is skipped unless
``force``; a resumed block fine-tunes the newest version trained up to the as_of before it.
One backfill of a series runs at a time: it holds the lease ``backfill-<series>`` (db.locks,
renewed while it runs), so the second of two overlapping backfills waits and then finds the
shared dates done; a backfill killed with kill -9 stops renewing, and a rerun takes over at
most ``CDDF_LOCK_LEASE_SECONDS`` later. The run logs show a line per as_of and the model's
per-epoch training lines.

The same wherever its retrains run: each sees the candles up to its own as_of only, so they
may run side by side in ``parallel`` processes, the flow's own included
(``CDDF_BACKFILL_PROCESSES``; by default 2 on a CPU of 2 or more cores when the backfill
retrains 3 or more times, else 1; `flows.backfill_pool`): the first retrain in the flow's
process, the next ones in the workers, one block ahead each, while the segments go on in order
in the flow's process: each segment one task run that loads its block's retrained
model from its artifact (as the daily run loads the model it fine-tunes), fine-tunes,
forecasts, registers and stores its as_ofs one after the other (the served forecast of an
as_of depends on the scores of the forecasts before it: the segment reads the series' scored
record from the tables once and keeps it current with each run it writes,
`db.aggregation.WalkRecord`, so that each as_of serves from what the tables hold at that moment
without reading them back), and drops the weights of all but its last version at its end.

A series whose timeframe has ``model_scope: "timeframe"`` walks forward with its group's global
model instead, as the daily run serves it: the group is the series of ``CDDF_SERIES`` of that
timeframe (the daily run's, `flows.scopes.global_groups`) and the series itself. At each block
start the global model is retrained on every member's final candles up to the as_of (a member
with none yet is left out, one too short is kept out of training as `flows.train` does)
and fine-tuned on their newest windows at each step in between; every version is registered as
a global version of the group (``model_group``, its members in ``model_version_series``) and
forecasts the backfilled series, with its own calibration, as a ``backfill`` run. A resumed block
fine-tunes the newest global version trained up to the as_of before it. One global backfill of
a group runs at a time (the lease ``backfill-global-<timeframe>``, taken before the series').
A global version of another member's backfill is not reused: only the newest of each range
keeps its weights, so it could seldom be loaded.
"""

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from db.candles import UnknownSeriesError, load_candles
from db.engine import get_engine
from db.forecasts import runs
from db.locks import Lease, hold, holder_name
from db.registry import ArtifactUnavailableError, VersionInfo, drop_artifacts, latest_version
from flows.backfill_plan import (
    BackfillError,
    BackfillPlan,
    Segment,
    Skip,
    check_parameters,
    minimum_history,
    plan_backfill,
)
from flows.backfill_pool import Retrained, RetrainJob, RetrainPool, default_processes
from flows.candles import scope_candles
from flows.evaluate import evaluate_flow
from flows.retry import DB_RETRY
from flows.scopes import series_config, serving_scope
from flows.served import store_forecasts, walk_record
from flows.train import TRAIN_TIMEOUT_S, recent_skills
from flows.train_policy import below_skill, pooled_skill
from flows.train_progress import training_progress
from flows.versions import load_model, register, version_record
from forecaster import ArtifactError
from forecaster.baselines import naive_forecast
from settings import SeriesConfig, get_settings
from settings.series import with_new_defaults

__all__ = [
    "BackfillError",
    "BackfillPlan",
    "BackfillSummary",
    "backfill_flow",
    "check_backfill",
    "minimum_history",
]


@dataclass
class StepRecord:
    as_of: pd.Timestamp
    action: str  # retrain | finetune
    model_version_id: int
    run_id: int
    seconds: float
    low_skill: str | None = None  # a retrain off the retrain days: why (the daily's rule)


@dataclass
class BackfillSummary:
    """What a backfill did; ``lines()`` renders it for the CLI."""

    series: str
    start: dt.date
    end: dt.date
    as_ofs: int
    skipped: int
    steps: list[StepRecord]
    scored_runs: int
    seconds: float
    holes: tuple[Skip, ...] = ()  # times without a forecast because of a hole, and why
    group: str | None = None  # the timeframe of the global model it walked forward with
    members: tuple[str, ...] = ()  # that model's series (with final candles)

    @property
    def retrained(self) -> int:
        return sum(step.action == "retrain" for step in self.steps)

    @property
    def finetuned(self) -> int:
        return sum(step.action == "finetune" for step in self.steps)

    def lines(self) -> list[str]:
        per_step = (
            f", {sum(s.seconds for s in self.steps) / len(self.steps):.2f}s per as_of"
            if self.steps
            else ""
        )
        scope = f" (global {self.group} model of {', '.join(self.members)})" if self.group else ""
        low = sum(step.low_skill is not None for step in self.steps)
        why = f" ({low} of them for low skill, below retrain_below_skill)" if low else ""
        return [
            f"backfill {self.series} {self.start}..{self.end}: {self.as_ofs} as_of times, "
            f"{len(self.steps)} forecast, {self.skipped} already done (skipped)",
            f"models{scope}: {self.retrained} retrained{why}, {self.finetuned} fine-tuned"
            f"{per_step}",
            f"scored runs: {self.scored_runs}; {self.seconds:.1f}s in all",
            *(f"skipped {skip}" for skip in self.holes),
        ]


@task(cache_policy=NO_CACHE, **DB_RETRY)
def stored_candles(series: str) -> pd.DataFrame:
    """Every final candle of ``series``; BackfillError for a series never ingested."""
    try:
        return load_candles(get_engine(), series)
    except UnknownSeriesError as error:
        raise BackfillError(f"unknown series {series}: {error}") from None


@task(cache_policy=NO_CACHE, **DB_RETRY)
def done_as_ofs(series: str) -> set[pd.Timestamp]:
    """The as_of times of ``series`` that already have a forecast run (of any kind)."""
    return {pd.Timestamp(run.as_of).tz_convert("UTC") for run in runs(get_engine(), series)}


@task(cache_policy=NO_CACHE, **DB_RETRY)
def version_before(plan: BackfillPlan, as_of: pd.Timestamp) -> VersionInfo | None:
    """The newest version of the plan's model trained on data up to ``as_of``: a resumed
    block's parent."""
    return latest_version(get_engine(), plan.scope, trained_until=as_of.to_pydatetime())


@task(cache_policy=NO_CACHE, task_run_name="backfill {plan.series} {segment}")
def backfill_segment(
    plan: BackfillPlan,
    segment: Segment,
    config: SeriesConfig,
    retrained: Future | None,
    pool: RetrainPool,
    progress: Callable[[StepRecord], None],
) -> list[StepRecord]:
    """Walk forward over one segment (one task run): its retrain (``retrained``, from the
    pool) or the version before it, then fine-tune, forecast, register and store each as_of."""
    series, first = plan.series, segment.as_ofs[0]
    parent, model = (None, None) if segment.block_start else resumed_model(plan, first, config)
    if model is None and retrained is None:  # a resumed block with no parent to go on from
        retrained = pool.submit(retrain_job(plan, first, config), here=True)
    own = {} if plan.group is None else {"series": series}  # the global model's series
    scored = walk_record(series, first)  # the scored record, read once for the segment
    records: list[StepRecord] = []
    for as_of in segment.as_ofs:
        started = time.perf_counter()
        seen = plan.visible(as_of)  # nothing after as_of, of any series
        trained = model.train_seconds_ if model is not None else 0.0
        low = None if model is None else low_skill(plan, parent, seen)
        if low is not None:  # as the daily's auto policy: retrain now, on what it would
            retrained = pool.submit(retrain_job(plan, as_of, config), here=True)
            model = None
        if model is None:
            assert retrained is not None
            model, action = retrained_model(plan, as_of, retrained), "retrain"
        else:
            model.update(fit_input(plan, seen))  # config.finetune_epochs, as the daily
            action = "finetune"
        forecast = model.predict(seen[series], **own)
        forecast["naive"] = naive_forecast(seen[series])
        seconds = time.perf_counter() - started
        # plain calls, not task runs: the segment is the task run of its as_ofs
        version = register.fn(
            version_record(
                plan.scope,
                action,
                model,
                seen,
                parent,
                model.train_seconds_ - trained,
                config.version_config(),  # as the daily's: it goes on from this version
            )
        )
        written = store_forecasts.fn(series, version, forecast, "backfill", scored)
        record = StepRecord(as_of, action, version.id, written.run.id, seconds, low)
        progress(record)
        records.append(record)
        parent = version
    # the model lives on in the segment's last version: nothing will load the others' weights
    # (a segment cut short keeps them until the rerun's keep_newest_weights)
    drop_weights.fn([record.model_version_id for record in records[:-1]])
    return records


def low_skill(
    plan: BackfillPlan, parent: VersionInfo | None, seen: dict[str, pd.DataFrame]
) -> str | None:
    """Why the model of ``parent``'s lineage retrains at this as_of for low skill, as the daily
    run's auto policy would (`flows.train_policy.below_skill` of the lineage's recent skill,
    point in time: scored on ``seen``), or None. A walk with one block (a warm-up) does not."""
    if not plan.retrain_days or parent is None:
        return None
    return below_skill(pooled_skill(recent_skills.fn(parent, seen)))


def fit_input(
    plan: BackfillPlan, seen: dict[str, pd.DataFrame]
) -> pd.DataFrame | dict[str, pd.DataFrame]:
    """What the model trains on: the series' own candles, or every member's of a global one."""
    return seen[plan.series] if plan.group is None else seen


def retrain_job(plan: BackfillPlan, as_of: pd.Timestamp, config: SeriesConfig) -> RetrainJob:
    """The retrain of the block that opens at ``as_of``: on what the daily one would fit on."""
    return RetrainJob(
        config.forecaster,
        fit_input(plan, plan.visible(as_of)),
        config.train_candles,
        config.group_train_candles,  # applies to a group's candles only
    )


# the longest wait for a worker's retrain, the daily train's limit on one fit: past it (a hung
# worker, a mis-sized fit) the backfill fails and its rerun resumes; the caller's own retrains
# are its work, not a wait
RETRAIN_WAIT_S = TRAIN_TIMEOUT_S


def retrained_model(plan: BackfillPlan, as_of: pd.Timestamp, retrained: Future) -> Any:
    """The model of a retrain from the pool (waiting for it), its epoch lines in the logs."""
    try:
        done: Retrained = retrained.result(timeout=RETRAIN_WAIT_S)
    except BrokenProcessPool as error:  # a worker killed (out of memory, kill -9)
        raise RuntimeError(
            f"{plan.series}: the process retraining {plan.scope.label} as of "
            f"{as_of:%Y-%m-%d %H:%M} died ({error}); rerun the backfill, which resumes, with "
            "fewer processes (--parallel, CDDF_BACKFILL_PROCESSES) if memory is short"
        ) from error
    except FutureTimeout as error:  # the worker is ended as the backfill fails (RetrainPool)
        raise TimeoutError(
            f"{plan.series}: the retrain of {plan.scope.label} as of {as_of:%Y-%m-%d %H:%M} "
            f"did not come back from its worker process within {RETRAIN_WAIT_S:g} s (the "
            "daily train's limit, flows.train.TRAIN_TIMEOUT_S); rerun the backfill, which "
            "resumes; if a retrain really takes that long, cap it with train_candles or "
            "max_epochs (CDDF_TIMEFRAME_SETTINGS, CDDF_SERIES_SETTINGS)"
        ) from error
    log = logging.getLogger("forecaster")
    for line in done.log:
        log.info("%s", line)
    return done.model(f"the retrain of {plan.scope.label} as of {as_of:%Y-%m-%d %H:%M}")


def resumed_model(
    plan: BackfillPlan, first: pd.Timestamp, config: SeriesConfig
) -> tuple[VersionInfo | None, Any]:
    """The version a resumed block goes on from (the newest trained up to the as_of before
    ``first``) and its model; (None, None) when there is none of this config or it does not
    load, and the block retrains at ``first``."""
    parent = version_before(plan, plan.previous(first))
    if parent is None:
        return None, None
    ours = config.version_config()
    theirs = with_new_defaults(parent.config)
    if theirs != ours:  # trained with another config: start afresh
        changed = sorted(
            key for key in theirs.keys() | ours.keys() if theirs.get(key) != ours.get(key)
        )
        get_run_logger().info(
            "%s: %s was trained with other settings (%s); retraining at %s",
            plan.series,
            parent.label,
            ", ".join(changed),
            f"{first:%Y-%m-%d %H:%M}",
        )
        return None, None
    try:
        return parent, load_model(parent)
    except (ArtifactUnavailableError, ArtifactError) as error:
        get_run_logger().error("%s: %s; retraining at %s instead", plan.series, error, first)
        return None, None


@task(cache_policy=NO_CACHE, **DB_RETRY)
def drop_weights(version_ids: list[int]) -> int:
    """Drop the artifacts of these backfill versions (their rows and forecasts stay)."""
    return drop_artifacts(get_engine(), version_ids)


@task(cache_policy=NO_CACHE, **DB_RETRY)
def keep_newest_weights(
    series: str, first: pd.Timestamp, last: pd.Timestamp, members: tuple[str, ...] = ()
) -> int:
    """Drop the weights of every backfill model of as_of ``first``..``last`` but the newest
    (and but those a run other than a backfill's used: of a global model's ``members`` too)."""
    engine = get_engine()
    every = runs(engine, series)
    in_range = [
        run
        for run in every
        if run.kind == "backfill" and first <= pd.Timestamp(run.as_of).tz_convert("UTC") <= last
    ]
    if not in_range:
        return 0
    others = [run for member in members if member != series for run in runs(engine, member)]
    served = {run.model_version_id for run in every + others if run.kind != "backfill"}
    newest = max(in_range, key=lambda run: (run.as_of, run.id)).model_version_id
    return drop_artifacts(
        engine, sorted({run.model_version_id for run in in_range} - served - {newest})
    )


class _Progress:
    """Counts finished steps across the concurrent segments and logs one line per as_of."""

    def __init__(self, series: str, total: int, logger: Any) -> None:
        self.series, self.total, self.logger = series, total, logger
        self.done = 0
        self._lock = threading.Lock()

    def __call__(self, record: StepRecord) -> None:
        with self._lock:
            self.done += 1
            done = self.done
        self.logger.info(
            "%s as of %s: %s -> model version %d, forecast run %d in %.1fs [%d/%d]",
            self.series,
            f"{record.as_of:%Y-%m-%d %H:%M}",
            record.action if record.low_skill is None else f"retrain ({record.low_skill})",
            record.model_version_id,
            record.run_id,
            record.seconds,
            done,
            self.total,
        )


def one_backfill_per_series(series: str, logger: Any = None) -> AbstractContextManager[Lease]:
    """Hold the lease ``backfill-<series>`` (table series_locks) while the backfill runs."""
    return one_backfill_at_a_time(f"backfill-{series}", series, logger)


def one_backfill_per_group(group: str, logger: Any = None) -> AbstractContextManager[Lease]:
    """Hold the lease ``backfill-global-<timeframe>`` while a backfill of its global model runs."""
    return one_backfill_at_a_time(f"backfill-global-{group}", f"global {group} model", logger)


@contextmanager
def one_backfill_at_a_time(name: str, what: str, logger: Any = None) -> Iterator[Lease]:
    """Hold the lease ``name`` (table series_locks) while the backfill of ``what`` runs.

    The lease is renewed in the background and expires ``CDDF_LOCK_LEASE_SECONDS`` after its
    holder died (kill -9, power loss): a rerun waits at most that long, saying for whom.
    """
    logger = logger or logging.getLogger(__name__)
    seconds = get_settings().lock_lease_seconds

    def waiting(other: Lease) -> None:
        logger.warning(
            "%s: waiting for %s, held by %s until %s UTC unless renewed (a holder that died "
            "stops renewing: its lease ends within %g s)",
            what,
            name,
            other.holder,
            f"{other.expires_at:%Y-%m-%d %H:%M:%S}",
            seconds,
        )

    holder = holder_name(flow_run.id)
    lease = dt.timedelta(seconds=seconds)
    with hold(get_engine(), name, lease=lease, holder=holder, on_wait=waiting) as held:
        yield held


def walk_segments(
    plan: BackfillPlan,
    segments: list[Segment],
    config: SeriesConfig,
    pool: RetrainPool,
    progress: Callable[[StepRecord], None],
) -> list[StepRecord]:
    """The segments in order, the retrains of the next blocks running in the pool's workers
    meanwhile (one ahead per worker, and the next block's); the first segment's retrain in
    this process, which has nothing else to do until it is done."""
    opening = iter([segment for segment in segments if segment.block_start])
    ahead: dict[Segment, Future] = {}
    records: list[StepRecord] = []
    first = bool(segments) and segments[0].block_start  # else a resumed segment walks first
    for segment in segments:
        while len(ahead) <= pool.workers:
            following = next(opening, None)
            if following is None:
                break
            job = retrain_job(plan, following.as_ofs[0], config)
            ahead[following], first = pool.submit(job, here=first), False
        records += backfill_segment(plan, segment, config, ahead.pop(segment, None), pool, progress)
    return records


def walk_forward(
    plan: BackfillPlan, config: SeriesConfig, processes: int | None, force: bool, logger: Any
) -> tuple[list[StepRecord], int]:
    """Forecast the plan's as_ofs that have none yet (all of them when ``force``), holding its
    leases, retraining in ``processes`` processes (None: `default_processes` of its retrains);
    the steps it took and how many as_ofs were done already (skipped)."""
    group_lease = one_backfill_per_group(plan.group, logger) if plan.group else nullcontext()
    with group_lease, one_backfill_per_series(plan.series, logger):
        done = set() if force else done_as_ofs(plan.series) & set(plan.as_ofs)
        pending = [as_of for as_of in plan.as_ofs if as_of not in done]
        segments = plan.segments(pending)
        retrains = sum(segment.block_start for segment in segments)
        processes = processes or default_processes(retrains)
        logger.info(
            "%s: %d as_of times already done (skipped), %d to do in %d segments, %d retrains "
            "in %d process%s",
            plan.series,
            len(done),
            len(pending),
            len(segments),
            retrains,
            processes,
            "" if processes == 1 else "es",
        )
        progress = _Progress(plan.series, len(pending), logger)
        # the model's per-epoch lines in the run logs, like the daily's (the pool's come back
        # with its models)
        with training_progress(), RetrainPool(processes) as pool:
            records = walk_segments(plan, segments, config, pool, progress)
        # the newest model keeps its weights (the daily run may continue from it); so do
        # none of those an interrupted run of this range left behind
        keep_newest_weights(plan.series, plan.as_ofs[0], plan.as_ofs[-1], tuple(plan.members))
    return records, len(done)


def check_backfill(
    series: str,
    start: dt.date,
    end: dt.date,
    retrain_every: int | None = None,
    parallel: int | None = None,
) -> BackfillPlan:
    """The plan of a backfill, or BackfillError saying what is wrong with its parameters
    (series key, dates, their order, the range against the stored candles).

    Needs no Prefect: the CLI calls it before it starts Prefect's API, so that a bad
    parameter is one line at once; the flow checks the same again, with its own logger.
    """
    key = check_parameters(series, start, end, retrain_every, parallel)
    config, scope = series_config(key), serving_scope(key)
    candles = stored_candles.fn(key)
    members = None
    if scope.group is not None and not candles.empty:  # its group's global model walks forward
        members = scope_candles.fn(scope, None, {key: candles}, logging.getLogger(__name__))
    every = retrain_every or config.retrain_after
    return plan_backfill(candles, key, start, end, every, config.forecaster, members)


@flow(name="backfill", flow_run_name="backfill {series} {start}..{end}")
def backfill_flow(
    series: str,
    start: dt.date,
    end: dt.date,
    retrain_every: int | None = None,
    force: bool = False,
    parallel: int | None = None,
) -> BackfillSummary:
    """Point-in-time forecasts for every as_of from ``start`` to ``end``, then their scores.

    ``parallel``: processes the retrains run in, this one included (None:
    ``CDDF_BACKFILL_PROCESSES``, by default `flows.backfill_pool.default_processes`); the
    models are the same whatever it is.
    """
    started = time.perf_counter()
    logger = get_run_logger()
    key = check_parameters(series, start, end, retrain_every, parallel)
    config, scope = series_config(key), serving_scope(key)
    candles = stored_candles(key)
    members = None
    if scope.group is not None and not candles.empty:  # its group's global model walks forward
        members = scope_candles(scope, None, {key: candles})
    every = retrain_every or config.retrain_after  # None: as the daily run retrains it
    plan = plan_backfill(candles, key, start, end, every, config.forecaster, members)
    logger.info(
        "%s: %d as_of times %s .. %s, retrain every %d, force=%s%s",
        key,
        len(plan.as_ofs),
        plan.as_ofs[0],
        plan.as_ofs[-1],
        every,
        force,
        f", global {plan.group} model of {', '.join(plan.members)}" if plan.group else "",
    )
    processes = parallel or get_settings().backfill_processes
    records, done = walk_forward(plan, config, processes, force, logger)
    scored = evaluate_flow(key).runs_scored  # also what an interrupted run left unscored
    summary = BackfillSummary(
        key,
        start,
        end,
        len(plan.as_ofs),
        done,
        records,
        scored,
        time.perf_counter() - started,
        plan.skipped,
        plan.group,
        tuple(plan.members),
    )
    create_markdown_artifact(
        key=f"backfill-{key.lower().replace('_', '-')}",
        markdown="\n\n".join(["# Backfill", *summary.lines()]),
        description=f"Backfill of {key} from {start} to {end}",
    )
    for line in summary.lines():
        logger.info(line)
    return summary
