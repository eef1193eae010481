"""Model versions in and out of the registry: their records, registering them, loading their
models (and the few kept loaded for serving)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from db.engine import get_engine
from db.registry import ModelScope, NewVersion, VersionInfo, load_artifact, register_version
from flows.retry import DB_RETRY
from forecaster import LSTMForecaster


@task(cache_policy=NO_CACHE, **DB_RETRY)
def load_model(version: VersionInfo) -> LSTMForecaster:
    """The model of ``version``, a copy of its own for the caller to train;
    ArtifactUnavailableError or ArtifactError when it is unusable."""
    blob = load_artifact(get_engine(), version.id)
    return _from_bytes(blob, version)


def _from_bytes(blob: bytes, version: VersionInfo) -> LSTMForecaster:
    return LSTMForecaster.from_bytes(blob, source=f"model version {version.id} of {version.series}")


# Rebuilding a model from its artifact and tracing its first forecast cost ~0.2 s, as much as
# the rest of a series' forecast; a global model serves every series of its group, so each
# process keeps the models it served last (by artifact checksum) and loads one once per run.
SERVED_MODELS_KEPT = 4


@dataclass(frozen=True)
class ServingModel:
    """A loaded model that forecasts, shared by the series it serves: one forecast at a time."""

    model: LSTMForecaster
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def predict(self, candles: pd.DataFrame, series: str) -> pd.DataFrame:
        with self.lock:  # Keras builds a model's predict function on its first call
            return self.model.predict(candles, series=series)


_served: OrderedDict[str, ServingModel] = OrderedDict()


_served_lock = threading.Lock()


@task(cache_policy=NO_CACHE, **DB_RETRY)
def serving_model(version: VersionInfo) -> ServingModel:
    """The model of ``version`` to forecast with, loaded once per process for all its series.

    The artifact is read and checked every time (ArtifactUnavailableError or ArtifactError as
    in `load_model`); only rebuilding it is saved. Never train the returned model: it is shared.
    """
    blob = load_artifact(get_engine(), version.id)
    digest = sha256(blob).hexdigest()  # the bytes' own: the same model whatever database
    with _served_lock:  # series forecast side by side wait for the one that loads it
        served = _served.get(digest)
        if served is None:
            served = _served[digest] = ServingModel(_from_bytes(blob, version))
        _served.move_to_end(digest)
        while len(_served) > SERVED_MODELS_KEPT:
            _served.popitem(last=False)
    return served


def version_record(
    scope: ModelScope,
    action: str,
    model: LSTMForecaster,
    candles: dict[str, pd.DataFrame],
    parent: VersionInfo | None,
    seconds: float,
    config: dict[str, Any],
) -> NewVersion:
    """The registry row of ``scope``'s model, just retrained or fine-tuned on ``candles`` (each
    member's final candles up to the same time: the daily's, or a backfill's as_of).

    ``config`` is what the version stores as its settings. A global model's row also names
    the members it trained on (``members``; ``series``: the first of them, see 0006), those it
    kept out (``skipped_series``) and how each was calibrated.
    """
    metrics = dict(model.validation_metrics_)
    trained = set(scope.members)
    if scope.group is not None:
        trained = set(model.series_ if action == "retrain" else model.update_series_)
        metrics |= {"skipped_series": model.skipped_series_, "calibration": model.calibration_}
    if action == "finetune":
        metrics["validated_version"] = parent.retrain_id if parent else None
        metrics["finetune_loss"] = model.last_update_loss_
        n_windows = model.update_windows_
    else:
        n_windows, seconds = model.n_windows_, model.train_seconds_
    return NewVersion(
        series=min(trained),
        kind=action,  # type: ignore[arg-type]
        parent_id=parent.id if parent is not None and action == "finetune" else None,
        config=config,
        train_first=pd.Timestamp(model.training_range_[0]).to_pydatetime(),
        train_last=max(frame.index[-1] for frame in candles.values()).to_pydatetime(),
        n_windows=int(n_windows),
        validation_metrics=metrics,
        artifact=model.to_bytes(),
        device=model.device_,
        train_seconds=float(seconds),
        flow_run_id=str(flow_run.id) if flow_run.id else None,
        model_group=scope.group,
        members={}
        if scope.group is None
        else {key: key in trained for key in scope.members if key in candles},
    )


@task(cache_policy=NO_CACHE, **DB_RETRY)
def register(version: NewVersion) -> VersionInfo:
    """Store the new version and its artifact in one transaction."""
    registered = register_version(get_engine(), version)
    get_run_logger().info(
        "%s: registered model version %d (%s, %s, trained up to %s)",
        version.series,
        registered.id,
        registered.kind,
        registered.device,
        registered.train_last,
    )
    return registered
