"""Retention: the weights of model versions that can still serve or be rolled back, no more.

    report = prune(engine, keep_versions=3)        # CDDF_KEEP_VERSIONS
    report.summary()   # '12 versions' weights dropped (38.4 MB) in 4 model scopes; ...'

Every model scope (a series' own model, a timeframe's global model) keeps the bytes of

- its **serving** version: the newest one whose weights are kept, by training data (what
  `db.registry.latest_version` returns, which a daily run fine-tunes and serves);
- the **retrain** its lineage started from (``retrain_id``): the model the fine-tunes
  descend from and whose validation they quote;
- the ``keep_versions`` newest versions after the serving one (one a day with daily runs).

Rollback means serving an earlier version: drop a bad version's weights (or let a checksum
failure do it) and `latest_version` passes over it to the next kept one, the day before's;
or retrain. A fine-tune between the retrain and those recent versions is never loaded again
(the next fine-tune starts from the newest version), so its weights go. Every older version
keeps its row, lineage, metrics, checksum and forecasts; loading it raises
`db.registry.ArtifactNotKeptError`. A point-in-time run (``train`` with ``as_of``, a backfill
continued later) whose version lost its weights uses the newest kept one trained up to then,
or retrains.

Safe beside a running daily run: a scope is pruned only while its leases are held
(``daily-<name>`` and ``backfill-<name>``, `db.locks`), the ones a run holds from training to
forecasting; a scope some run holds is skipped (``busy``) and pruned next time. So the
version a run is about to load (the one it trained, kept, or a train run recorded in
``train_outcomes`` for it) is never dropped under it.

Bookkeeping that grows per run without being the product is bounded too:

- ``train_outcomes`` (one row per scope per run; read only by the run that dispatched the
  training, under the scope's lease) whose version was registered more than ``outcome_days``
  ago (the row has no time of its own; a ``keep`` row goes with the version it kept);
- ``series_locks`` rows whose lease expired a day or more ago (a holder killed with kill -9;
  an expired lease is free anyway).

Forecast, metric, candle, reject, revision and ingest-run rows stay: they are the product and
its history (an ingest run is ~300 bytes per series a run, and its rejects hang on it).

SQLite reuses the freed pages for the next versions' weights (a daily prune frees about one
day's: the next day's fill them); when they are half the file or more (the first prune of a
database that grew without one), ``VACUUM`` returns them to the operating system. PostgreSQL
stores an artifact out of line (TOAST): autovacuum makes the space of the dropped weights
reusable, and ``VACUUM FULL model_versions`` returns it to the operating system (it locks the
table: run it when no run is due).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field

from sqlalchemy import Engine, delete, select, text

from db.forecast_tables import ModelVersion, TrainOutcomeRow
from db.locks import current, holder_name, release, try_acquire
from db.models import SeriesLock
from db.registry import drop_artifacts

# train_outcomes rows older than this (by their version's registration) are deleted
OUTCOME_DAYS = 30
# an expired lease is deleted this long after it expired
EXPIRED_LEASE_AGE = dt.timedelta(days=1)
# SQLite: VACUUM when the free pages are at least this share of the file; a daily prune at
# steady state frees a sixth to a third (a retrain day): the next day reuses those pages, and a
# VACUUM of the whole file for them came back the next day (bench/retention.py, a quarter)
VACUUM_SHARE = 0.5
# how long a prune may hold a scope's leases (a scope's prune is one UPDATE)
PRUNE_LEASE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Scope:
    """A model scope as the registry stores it: ``series`` alone, or the global model of the
    timeframe ``group``."""

    series: str | None
    group: str | None

    @property
    def label(self) -> str:
        return self.series if self.group is None else f"global {self.group} model"

    @property
    def leases(self) -> tuple[str, str]:
        """The leases a run holds while it trains or forecasts this scope (flows.leases,
        flows.backfill)."""
        name = self.series if self.group is None else f"global-{self.group}"
        return f"daily-{name}", f"backfill-{name}"


@dataclass(frozen=True)
class ScopePrune:
    """What the prune kept and dropped of one scope's weights."""

    scope: str
    serving: int
    kept: tuple[int, ...]
    dropped: tuple[int, ...]
    freed_bytes: int
    outcomes: int = 0  # train_outcomes rows deleted


@dataclass(frozen=True)
class Vacuum:
    """The SQLite file before and after VACUUM (bytes, with its write-ahead log)."""

    before: int
    after: int


@dataclass
class PruneReport:
    dry_run: bool
    scopes: list[ScopePrune] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # scopes a run holds: pruned next time
    expired_leases: int = 0
    vacuum: Vacuum | None = None

    @property
    def versions_dropped(self) -> int:
        return sum(len(scope.dropped) for scope in self.scopes)

    @property
    def bytes_freed(self) -> int:
        return sum(scope.freed_bytes for scope in self.scopes)

    @property
    def outcomes_deleted(self) -> int:
        return sum(scope.outcomes for scope in self.scopes)

    def summary(self) -> str:
        """One line: what went (or would go), what was skipped, what the file did."""
        verb = "would drop" if self.dry_run else "dropped"
        line = (
            f"{verb} the weights of {self.versions_dropped} model versions "
            f"({self.bytes_freed / 1e6:.1f} MB) in {len(self.scopes)} model scopes; "
            f"{self.outcomes_deleted} train outcomes and {self.expired_leases} expired leases"
        )
        if self.busy:
            line += f"; skipped, held by a run (pruned next time): {', '.join(self.busy)}"
        if self.vacuum is not None:
            line += (
                f"; VACUUM: the database file {self.vacuum.before / 1e6:.1f} MB → "
                f"{self.vacuum.after / 1e6:.1f} MB"
            )
        return line


def retained(
    versions: list[tuple[int, dt.datetime, int | None]], keep_versions: int
) -> tuple[int, set[int]]:
    """The serving version and every version whose weights stay, of one scope's versions
    with weights (``(id, train_last, retrain_id)``).

    >>> t = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    >>> days = [(1, t, 1)] + [(n, t + dt.timedelta(days=n), 1) for n in range(2, 8)]
    >>> serving, kept = retained(days, keep_versions=2)
    >>> serving, sorted(kept)   # the newest, two before it, and the retrain (1)
    (7, [1, 5, 6, 7])
    """
    newest = sorted(versions, key=lambda row: (row[1], row[0]), reverse=True)
    serving = newest[0]
    kept = {row[0] for row in newest[: 1 + keep_versions]}
    return serving[0], kept | {serving[2] if serving[2] is not None else serving[0]}


def prune(
    engine: Engine,
    *,
    keep_versions: int,
    dry_run: bool = False,
    outcome_days: int = OUTCOME_DAYS,
    now: dt.datetime | None = None,
) -> PruneReport:
    """Drop the weights no scope can serve or roll back to, and old bookkeeping rows; with
    ``dry_run`` only report what would go. Idempotent."""
    now = now or dt.datetime.now(dt.UTC)
    report = PruneReport(dry_run)
    for scope in scopes(engine):
        if dry_run:
            if any(_held(engine, name, now) for name in scope.leases):
                report.busy.append(scope.label)
            elif pruned := _prune_scope(engine, scope, keep_versions, now, outcome_days, True):
                report.scopes.append(pruned)
            continue
        holder = holder_name()
        taken = [try_acquire(engine, name, holder, PRUNE_LEASE, now=now) for name in scope.leases]
        try:
            if None in taken:
                report.busy.append(scope.label)
            elif pruned := _prune_scope(engine, scope, keep_versions, now, outcome_days, False):
                report.scopes.append(pruned)
        finally:
            for lease in taken:
                if lease is not None:
                    release(engine, lease)
    report.expired_leases = _expired_leases(engine, now, dry_run)
    if not dry_run and report.bytes_freed:
        report.vacuum = vacuum_if_worth_it(engine)
    return report


def scopes(engine: Engine) -> list[Scope]:
    """Every model scope with a registered version: series' own models, then global ones."""
    own = (
        select(ModelVersion.series)
        .where(ModelVersion.model_group.is_(None))
        .distinct()
        .order_by(ModelVersion.series)
    )
    groups = (
        select(ModelVersion.model_group)
        .where(ModelVersion.model_group.is_not(None))
        .distinct()
        .order_by(ModelVersion.model_group)
    )
    with engine.connect() as connection:
        return [Scope(series, None) for series in connection.execute(own).scalars()] + [
            Scope(None, group) for group in connection.execute(groups).scalars()
        ]


def _prune_scope(
    engine: Engine,
    scope: Scope,
    keep_versions: int,
    now: dt.datetime,
    outcome_days: int,
    dry_run: bool,
) -> ScopePrune | None:
    """One scope's prune (its leases held, unless a dry run); None when it has no weights."""
    if scope.group is None:
        whose = [ModelVersion.series == scope.series, ModelVersion.model_group.is_(None)]
    else:
        whose = [ModelVersion.model_group == scope.group]
    query = select(
        ModelVersion.id,
        ModelVersion.train_last,
        ModelVersion.retrain_id,
        ModelVersion.artifact_size,
        ModelVersion.created_at,
    ).where(*whose)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    with_weights = [(row.id, row.train_last, row.retrain_id) for row in rows if row.artifact_size]
    if not with_weights:
        return None
    serving, kept = retained(with_weights, keep_versions)
    sizes = {row.id: row.artifact_size for row in rows}
    dropped = sorted(version for version, _, _ in with_weights if version not in kept)
    cutoff = now - dt.timedelta(days=outcome_days)
    old = [row.id for row in rows if row.created_at < cutoff]
    outcomes = _old_outcomes(engine, old, dry_run)
    if not dry_run:
        drop_artifacts(engine, dropped)
    return ScopePrune(
        scope.label,
        serving,
        tuple(sorted(kept)),
        tuple(dropped),
        sum(sizes[version] for version in dropped),
        outcomes,
    )


def _old_outcomes(engine: Engine, version_ids: list[int], dry_run: bool) -> int:
    """Delete (or count) the train outcomes naming these versions."""
    if not version_ids:
        return 0
    naming = TrainOutcomeRow.model_version_id.in_(version_ids)
    with engine.begin() as connection:
        if dry_run:
            query = select(TrainOutcomeRow.flow_run_id).where(naming)
            return len(connection.execute(query).all())
        return connection.execute(delete(TrainOutcomeRow).where(naming)).rowcount


def _held(engine: Engine, name: str, now: dt.datetime) -> bool:
    lease = current(engine, name)
    return lease is not None and lease.expires_at >= now


def _expired_leases(engine: Engine, now: dt.datetime, dry_run: bool) -> int:
    """Delete (or count) the leases that expired ``EXPIRED_LEASE_AGE`` ago or more."""
    expired = SeriesLock.expires_at < now - EXPIRED_LEASE_AGE
    with engine.begin() as connection:
        if dry_run:
            return len(connection.execute(select(SeriesLock.name).where(expired)).all())
        return connection.execute(delete(SeriesLock).where(expired)).rowcount


def vacuum_if_worth_it(engine: Engine) -> Vacuum | None:
    """SQLite: VACUUM when the free pages are ``VACUUM_SHARE`` of the file or more; the file's
    size before and after. None on PostgreSQL (autovacuum) and when not worth it."""
    if engine.dialect.name != "sqlite":
        return None
    with engine.connect() as connection:
        pages = connection.exec_driver_sql("PRAGMA page_count").scalar_one()
        free = connection.exec_driver_sql("PRAGMA freelist_count").scalar_one()
    if not pages or free < VACUUM_SHARE * pages:
        return None
    before = sqlite_file_size(engine)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM"))
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return Vacuum(before, sqlite_file_size(engine))


def sqlite_file_size(engine: Engine) -> int:
    """The bytes of a SQLite database's file and its write-ahead log (0 in memory)."""
    path = engine.url.database
    if not path or path == ":memory:":
        return 0
    return sum(os.path.getsize(f) for f in (path, f"{path}-wal") if os.path.exists(f))
