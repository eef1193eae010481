"""The model registry: versions of each model, their artifacts in the database.

A model belongs to a `ModelScope`: one series' own model is the model of a group of one; a
timeframe's global model (``model_scope: "timeframe"``) that of its group. For example::

    version = register_version(engine, NewVersion(series="Bitstamp_BTCUSD_d", kind="retrain",
        parent_id=None, config=config.to_dict(), train_first=t0, train_last=t1, n_windows=1000,
        validation_metrics={}, artifact=model.to_bytes(), device="CPU", train_seconds=42.0))
    latest = latest_version(engine, ModelScope.of_series("Bitstamp_BTCUSD_d"))
    blob = load_artifact(engine, latest.id)     # ArtifactChecksumError when it was altered

A version is written in one transaction, after its model was trained: a crash before that
registers nothing and the previous version keeps serving. ``drop_artifacts`` deletes the
weights of versions nobody will load again (a backfill's intermediate steps) and keeps their
rows; such a version has ``artifact_size`` 0, and ``latest_version`` passes over it.

A train flow run records its outcome, the version it registered or kept, under its flow run id
(``record_train_outcome``): what a dispatching run serves (``train_outcome``), never "the
latest", which another run may have registered meanwhile.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from db.forecast_tables import MODEL_KINDS, ModelVersion, ModelVersionSeries, TrainOutcomeRow

ModelKind = Literal["retrain", "finetune"]
TrainAction = Literal["retrain", "finetune", "keep"]


@dataclass(frozen=True)
class ModelScope:
    """Whose model: the series' own (``group`` None, ``members`` that one series) or the global
    model of timeframe ``group`` trained on ``members`` (in key order).

    >>> ModelScope.of_series("Bitstamp_BTCUSD_d").label
    'Bitstamp_BTCUSD_d'
    >>> ModelScope.of_group("d", ["Bitstamp_ETHUSD_d", "Bitstamp_BTCUSD_d"]).members
    ('Bitstamp_BTCUSD_d', 'Bitstamp_ETHUSD_d')
    """

    members: tuple[str, ...]
    group: str | None = None

    @classmethod
    def of_series(cls, series: str) -> ModelScope:
        return cls((series,))

    @classmethod
    def of_group(cls, timeframe: str, members: list[str] | tuple[str, ...]) -> ModelScope:
        return cls(tuple(sorted(members)), timeframe)

    @property
    def name(self) -> str:
        """The series key, or ``global <timeframe>``."""
        return self.members[0] if self.group is None else f"global {self.group}"

    @property
    def label(self) -> str:
        """What its log lines and errors begin with: the series key, or ``global d model``."""
        return self.name if self.group is None else f"global {self.group} model"


class ArtifactUnavailableError(RuntimeError):
    """A version's artifact cannot be loaded: altered or deleted."""


class ArtifactChecksumError(ArtifactUnavailableError):
    """A stored artifact whose bytes no longer match the sha256 recorded with them."""


class ArtifactNotKeptError(ArtifactUnavailableError):
    """A version whose weights were deleted (``drop_artifacts``); its row stays."""


class UnknownModelVersionError(LookupError):
    """No model version has this id."""


@dataclass(frozen=True)
class NewVersion:
    """What ``register_version`` stores for a freshly trained model."""

    series: str
    kind: ModelKind
    parent_id: int | None
    config: dict[str, Any]
    train_first: dt.datetime
    train_last: dt.datetime
    n_windows: int
    validation_metrics: dict[str, Any]
    artifact: bytes = field(repr=False)
    device: str
    train_seconds: float
    flow_run_id: str | None = None
    # a global model: its timeframe group and {series: trained on (False: kept out)};
    # ``series`` is then the group's first series in key order
    model_group: str | None = None
    members: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class VersionInfo:
    """A registered model version, without its artifact (``load_artifact`` reads that)."""

    id: int
    series: str
    created_at: dt.datetime
    kind: ModelKind
    parent_id: int | None
    retrain_id: int
    config: dict[str, Any]
    train_first: dt.datetime
    train_last: dt.datetime
    n_windows: int
    validation_metrics: dict[str, Any]
    artifact_sha256: str
    artifact_size: int  # 0 once the weights were dropped
    device: str
    train_seconds: float
    flow_run_id: str | None
    model_group: str | None = None  # a global model of this timeframe group
    members: tuple[str, ...] = ()  # the series a global model trained on

    @property
    def artifact_kept(self) -> bool:
        return self.artifact_size > 0

    @property
    def label(self) -> str:
        """``version 12 of Bitstamp_BTCUSD_d`` or ``version 12 (global d model)``."""
        if self.model_group:
            return f"version {self.id} (global {self.model_group} model)"
        return f"version {self.id} of {self.series}"


def sha256(artifact: bytes) -> str:
    return hashlib.sha256(artifact).hexdigest()


def register_version(engine: Engine, version: NewVersion) -> VersionInfo:
    """Store ``version`` and its artifact in one transaction; returns the registered row.

    A fine-tune belongs to its parent's lineage (``retrain_id``); a retrain starts its own.
    """
    _check(version)
    with Session(engine, expire_on_commit=False) as session, session.begin():
        retrain_id = None
        if version.kind == "finetune":
            parent = session.get(ModelVersion, version.parent_id)
            same = (
                parent is not None
                and parent.model_group == version.model_group
                and (version.model_group is not None or parent.series == version.series)
            )
            if not same:
                raise UnknownModelVersionError(
                    f"model version {version.parent_id} of {version.series} does not exist: "
                    "a fine-tune needs its parent; retrain instead"
                )
            retrain_id = parent.retrain_id or parent.id
        row = ModelVersion(
            series=version.series,
            created_at=dt.datetime.now(dt.UTC),
            kind=version.kind,
            parent_id=version.parent_id,
            retrain_id=retrain_id,
            config=json_safe(version.config),
            train_first=version.train_first,
            train_last=version.train_last,
            n_windows=version.n_windows,
            validation_metrics=json_safe(version.validation_metrics),
            artifact=version.artifact,
            artifact_sha256=sha256(version.artifact),
            artifact_size=len(version.artifact),
            device=version.device,
            train_seconds=version.train_seconds,
            flow_run_id=version.flow_run_id,
            model_group=version.model_group,
        )
        session.add(row)
        session.flush()
        if row.retrain_id is None:
            row.retrain_id = row.id
        session.add_all(
            ModelVersionSeries(model_version_id=row.id, series=key, trained=trained)
            for key, trained in version.members.items()
        )
        return _info(row, tuple(sorted(key for key, yes in version.members.items() if yes)))


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as None (JSON has no NaN) and tuples as lists."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _check(version: NewVersion) -> None:
    where = f"model version of {version.series}"
    if version.kind not in MODEL_KINDS:
        raise ValueError(f"{where}: kind must be one of {MODEL_KINDS}, got {version.kind!r}")
    if version.kind == "finetune" and version.parent_id is None:
        raise ValueError(f"{where}: a fine-tune needs parent_id, the version it started from")
    if not isinstance(version.artifact, bytes) or not version.artifact:
        raise ValueError(f"{where}: the artifact must be non-empty bytes (model.to_bytes())")
    if version.train_last < version.train_first:
        raise ValueError(
            f"{where}: train_last {version.train_last} is before train_first {version.train_first}"
        )


def latest_version(
    engine: Engine, scope: ModelScope, *, trained_until: dt.datetime | None = None
) -> VersionInfo | None:
    """The version of ``scope`` trained on the newest data (ties: the last registered).

    With ``trained_until``, only versions whose training data ends at or before it count —
    the model a point-in-time run as of that time may use. Versions whose artifact was
    dropped never count: the answer is always a model that can be loaded.
    """
    if scope.group is None:  # the series' own models, not a global one
        whose = [ModelVersion.series == scope.members[0], ModelVersion.model_group.is_(None)]
    else:
        whose = [ModelVersion.model_group == scope.group]
    query = select(ModelVersion).where(*whose, ModelVersion.artifact_size > 0)
    if trained_until is not None:
        query = query.where(ModelVersion.train_last <= trained_until)
    query = query.order_by(ModelVersion.train_last.desc(), ModelVersion.id.desc()).limit(1)
    with Session(engine) as session:
        row = session.execute(query).scalar_one_or_none()
        return None if row is None else _info(row, _trained(session, row))


def group_members(engine: Engine, version_id: int) -> dict[str, bool]:
    """``{series: trained on}`` of a global version (empty for a model of one series)."""
    query = select(ModelVersionSeries.series, ModelVersionSeries.trained).where(
        ModelVersionSeries.model_version_id == version_id
    )
    with engine.connect() as connection:
        return {key: bool(trained) for key, trained in connection.execute(query)}


def get_version(engine: Engine, version_id: int) -> VersionInfo:
    """The version with id ``version_id``; UnknownModelVersionError when there is none."""
    with Session(engine) as session:
        row = session.get(ModelVersion, version_id)
        if row is None:
            raise UnknownModelVersionError(f"model version {version_id} does not exist")
        return _info(row, _trained(session, row))


def versions(engine: Engine, series: str) -> list[VersionInfo]:
    """Every version of ``series``, oldest first."""
    query = select(ModelVersion).where(ModelVersion.series == series).order_by(ModelVersion.id)
    with Session(engine) as session:
        return [_info(row) for row in session.execute(query).scalars()]


def versions_of_flow_run(engine: Engine, flow_run_id: str) -> list[VersionInfo]:
    """The versions a Prefect flow run registered (a train deployment's run, for one)."""
    query = (
        select(ModelVersion)
        .where(ModelVersion.flow_run_id == str(flow_run_id))
        .order_by(ModelVersion.id)
    )
    with Session(engine) as session:
        return [_info(row) for row in session.execute(query).scalars()]


def record_train_outcome(
    engine: Engine,
    flow_run_id: str,
    scope: ModelScope,
    action: TrainAction,
    reason: str,
    version_id: int,
) -> None:
    """Record what the train flow run ``flow_run_id`` did for ``scope``: the version it
    registered or kept (a rerun of the same flow run replaces its row)."""
    values = {"action": action, "reason": reason, "model_version_id": version_id}
    with Session(engine) as session, session.begin():
        row = session.get(TrainOutcomeRow, (str(flow_run_id), scope.name))
        if row is None:
            session.add(TrainOutcomeRow(flow_run_id=str(flow_run_id), scope=scope.name, **values))
        else:
            for column, value in values.items():
                setattr(row, column, value)


def train_outcome(
    engine: Engine, flow_run_id: str, scope: ModelScope
) -> tuple[TrainAction, VersionInfo] | None:
    """What the train flow run ``flow_run_id`` recorded for ``scope``: its action and the
    version it registered or kept; None when it recorded nothing."""
    with Session(engine) as session:
        row = session.get(TrainOutcomeRow, (str(flow_run_id), scope.name))
        if row is None:
            return None
        version = session.get(ModelVersion, row.model_version_id)
        return row.action, _info(version, _trained(session, version))  # type: ignore[return-value]


def load_artifact(engine: Engine, version_id: int) -> bytes:
    """The artifact of ``version_id``, checked against its recorded sha256.

    Raises ArtifactChecksumError when the bytes were altered since registration.
    """
    query = select(ModelVersion.series, ModelVersion.artifact, ModelVersion.artifact_sha256).where(
        ModelVersion.id == version_id
    )
    with engine.connect() as connection:
        row = connection.execute(query).one_or_none()
    if row is None:
        raise UnknownModelVersionError(f"model version {version_id} does not exist")
    series, artifact, expected = row
    artifact = bytes(artifact)
    if not artifact:
        raise ArtifactNotKeptError(
            f"model version {version_id} of {series}: its weights were not kept (older "
            f"than the CDDF_KEEP_VERSIONS recent versions, pruned by db/retention.py, or an "
            f"intermediate step of a backfill); forecast with a later version, or retrain"
        )
    actual = sha256(artifact)
    if actual != expected:
        raise ArtifactChecksumError(
            f"model version {version_id} of {series}: the stored artifact is corrupted "
            f"(sha256 {actual[:12]}… of {len(artifact)} bytes, registered {expected[:12]}…); "
            f"retrain the series (cdd-forecast's train flow with mode='retrain')"
        )
    return artifact


def drop_artifacts(engine: Engine, version_ids: list[int]) -> int:
    """Delete the weights of these versions, keeping their rows; the number dropped.

    Their forecasts, metrics and lineage stay; only loading them is no longer possible.
    """
    if not version_ids:
        return 0
    statement = (
        update(ModelVersion)
        .where(ModelVersion.id.in_(version_ids), ModelVersion.artifact_size > 0)
        .values(artifact=b"", artifact_size=0)
    )
    with engine.begin() as connection:
        return connection.execute(statement).rowcount


def _trained(session: Session, row: ModelVersion) -> tuple[str, ...]:
    """The series a global version trained on, in key order (none for a one-series model)."""
    if row.model_group is None:
        return ()
    query = (
        select(ModelVersionSeries.series)
        .where(ModelVersionSeries.model_version_id == row.id, ModelVersionSeries.trained)
        .order_by(ModelVersionSeries.series)
    )
    return tuple(session.execute(query).scalars())


def _info(row: ModelVersion, members: tuple[str, ...] = ()) -> VersionInfo:
    """The VersionInfo of ``row``: every column but the artifact (a new column needs a field)."""
    values = {
        column.key: getattr(row, column.key)
        for column in ModelVersion.__table__.columns
        if column.key != "artifact"
    }
    values["retrain_id"] = values["retrain_id"] if values["retrain_id"] is not None else row.id
    values["config"], values["validation_metrics"] = dict(row.config), dict(row.validation_metrics)
    return VersionInfo(**values, members=members)
