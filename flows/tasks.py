"""The tasks several flows use: final candles, model versions in and out, storing forecasts."""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from hashlib import sha256
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from db.candles import UnknownSeriesError, load_candles
from db.engine import get_engine
from db.forecasts import RunKind, write_forecast_run
from db.locks import Lease, hold, holder_name
from db.registry import ModelScope, NewVersion, VersionInfo, load_artifact, register_version
from flows.aggregate import ServedRun, served_forecast
from flows.config import DB_RETRY
from forecaster import LSTMForecaster
from settings import get_settings


@contextmanager
def one_run_at_a_time(name: str) -> Iterator[Lease]:
    """Hold the lease ``daily-<name>`` (a series key, or ``global-<timeframe>``) while a run
    trains, forecasts and evaluates it.

    A second run of the same series waits (at most ``CDDF_SERIES_LOCK_WAIT``, logging whom for)
    and then finds the work done: the policy keeps the version just trained and the forecast
    of the same as_of and version replaces the run, so one version and one forecast run come
    of both. Past the wait, `LockTimeoutError` names the holder; a holder killed with kill -9
    stops renewing and its lease ends within ``CDDF_LOCK_LEASE_SECONDS``.
    """
    settings = get_settings()
    logger = get_run_logger()

    def waiting(other: Lease) -> None:
        logger.warning(
            "%s: another run is training or forecasting it: waiting for the lease daily-%s, "
            "held by %s (at most %g s, CDDF_SERIES_LOCK_WAIT)",
            name,
            name,
            other.holder,
            settings.series_lock_wait,
        )

    with hold(
        get_engine(),
        f"daily-{name}",
        lease=dt.timedelta(seconds=settings.lock_lease_seconds),
        holder=holder_name(flow_run.id),
        timeout=settings.series_lock_wait,
        on_wait=waiting,
    ) as lease:
        yield lease


def as_utc(as_of: datetime | None) -> datetime | None:
    """``as_of`` as a tz-aware UTC datetime; a naive one (``--param as_of=2024-06-30``) is UTC."""
    if as_of is None:
        return None
    stamp = pd.Timestamp(as_of)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


@task(cache_policy=NO_CACHE, **DB_RETRY)
def final_candles(series: str, as_of: datetime | None) -> pd.DataFrame:
    """The final candles of ``series`` up to ``as_of`` (all when None)."""
    candles = load_candles(get_engine(), series, until=as_utc(as_of))
    if candles.empty:
        until = "" if as_of is None else f" up to {as_of:%Y-%m-%d %H:%M}"
        raise ValueError(f"{series} has no final candle{until}: ingest the series first")
    return candles


@task(cache_policy=NO_CACHE, **DB_RETRY)
def scope_candles(
    scope: ModelScope,
    as_of: datetime | None,
    loaded: dict[str, pd.DataFrame] | None = None,
    logger: Any = None,
) -> dict[str, pd.DataFrame]:
    """Each member's final candles up to ``as_of`` (all when None), in key order; ``loaded``:
    members' candles read already.

    A member never ingested (its ingest failed: a 404, an unreadable file) or without a final
    candle is left out and named in the log (``logger``, by default the run's); when none is
    left the error says to ingest: a series' own model is trained on its candles or fails.
    """
    until = "" if as_of is None else f" up to {as_of:%Y-%m-%d %H:%M}"
    frames, absent = dict(loaded or {}), {}
    for key in scope.members:
        if key not in frames:
            try:
                frames[key] = load_candles(get_engine(), key, until=as_utc(as_of))
            except UnknownSeriesError as error:
                absent[key] = error
                continue
        if frames[key].empty:
            absent[key] = ValueError(f"{key} has no final candle{until}: ingest the series first")
    if len(absent) == len(scope.members) == 1:
        raise next(iter(absent.values()))
    if len(absent) == len(scope.members):
        raise ValueError(f"no series of the {scope.label} has a final candle{until}: ingest")
    if absent:
        (logger or get_run_logger()).warning(
            "%s: %s have no final candle%s (never ingested, or none yet): left out of its "
            "training (ingest them)",
            scope.label,
            ", ".join(absent),
            until,
        )
    return {key: frames[key] for key in scope.members if key not in absent}


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


@task(cache_policy=NO_CACHE, **DB_RETRY)
def store_forecasts(
    series: str, version: VersionInfo, forecasts: pd.DataFrame, kind: RunKind
) -> ServedRun:
    """Serve the aggregate of the LSTM's ``forecasts`` (flows/aggregate.py) and write the run
    with its weights, replacing an earlier run of the same as_of and version."""
    run_id = str(flow_run.id) if flow_run.id else None
    served = served_forecast(series, forecasts)
    written = write_forecast_run(
        get_engine(),
        series,
        version.id,
        served.forecasts,
        kind=kind,
        flow_run_id=run_id,
        weights=served.weights,
    )
    logger = get_run_logger()
    (logger.warning if served.from_prior else logger.info)(
        "%s as of %s: served forecast: %s", series, written.run.as_of, served.summary()
    )
    logger.info(
        "%s: %s run %d as of %s with model version %d (%d forecasts)",
        series,
        "replaced" if written.replaced else "wrote",
        written.run.id,
        written.run.as_of,
        version.id,
        written.n_forecasts,
    )
    return ServedRun(written.run, written.replaced, written.n_forecasts, served)
