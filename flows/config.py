"""What the flows share: each series' forecaster config and the retry policy.

A series' config is the package's defaults, the defaults of its timeframe and the overrides of
``CDDF_FORECASTER``, ``CDDF_TIMEFRAME_SETTINGS`` and ``CDDF_SERIES_SETTINGS`` (see
`settings.series`), e.g. ``CDDF_FORECASTER='{"units": 64, "max_epochs": 50}'``.

>>> forecaster_config("Bitstamp_BTCUSD_d").horizon
7
>>> forecaster_config("Binance_ADAUSDT_1h").horizon
24
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from sqlalchemy.exc import DisconnectionError, OperationalError

from db.registry import ModelScope
from forecaster import ForecasterConfig
from settings import SeriesConfig, get_settings
from settings.series import REQUIRED_LEVELS

__all__ = [
    "REQUIRED_LEVELS",
    "RECENT_RUNS",
    "DB_RETRY",
    "forecaster_config",
    "series_config",
    "serving_scope",
]

# "recent skill" pools the newest scored runs, this many
RECENT_RUNS = 14


def series_config(series: str) -> SeriesConfig:
    """What ``series`` trains and forecasts with (its timeframe's defaults plus overrides)."""
    return get_settings().series_config(series)


def forecaster_config(series: str) -> ForecasterConfig:
    """The forecaster config of ``series``."""
    return series_config(series).forecaster


def global_groups(keys: list[str]) -> dict[str, list[str]]:
    """The series of ``keys`` that a global model serves, by timeframe (model_scope)."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        if group := series_config(key).group:
            groups.setdefault(group, []).append(key)
    return groups


def serving_scope(series: str) -> ModelScope:
    """The model that serves ``series``: its own, or its timeframe's global model over the
    daily run's group (the series of ``CDDF_SERIES`` of that timeframe) and ``series`` itself.

    With ``CDDF_SERIES=Bitstamp_BTCUSD_d,Bitstamp_ETHUSD_d`` and
    ``CDDF_TIMEFRAME_SETTINGS='{"d": {"model_scope": "timeframe"}}'``,
    ``serving_scope("Bitstamp_ETHUSD_d").members`` is both of them.
    """
    group = series_config(series).group
    if group is None:
        return ModelScope.of_series(series)
    keys = list(dict.fromkeys([*get_settings().series, series]))
    return ModelScope.of_group(group, global_groups(keys)[group])


# What a later attempt of a task can fix: the database unreachable or the connection dropped.
# A download is not retried here: the CDD client retries it itself (CDDF_HTTP_RETRIES, one
# layer, so its error counts every request); a bad file or a constraint violation never is.
OUTAGES = (OperationalError, DisconnectionError)


def outage(task: Any, task_run: TaskRun, state: State) -> bool:
    """Retry a task only when it failed on an outage (OUTAGES), never on bad input."""
    return isinstance(state.result(raise_on_failure=False), OUTAGES)


# For tasks that read or write the database: three retries with backoff, only on an outage.
DB_RETRY: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": [2, 8, 30],
    "retry_jitter_factor": 0.2,
    "retry_condition_fn": outage,
}


# trainings in progress (series train side by side in threads) and the level before the first
_progress_lock = threading.Lock()
_progress: dict[str, int] = {"active": 0, "previous": logging.NOTSET}


@contextmanager
def training_progress() -> Iterator[None]:
    """Let the model's per-epoch lines (``forecaster`` logger, INFO) through while it trains.

    They reach the flow run logs where PREFECT_LOGGING_EXTRA_LOGGERS=forecaster (the CLI and
    prefect.yaml set it). Counted across threads: the level is restored when the last of the
    trainings running side by side ends, not when the first does (or the logger stays at INFO).
    """
    log = logging.getLogger("forecaster")
    with _progress_lock:
        if _progress["active"] == 0:
            _progress["previous"] = log.level
            log.setLevel(logging.INFO)
        _progress["active"] += 1
    try:
        yield
    finally:
        with _progress_lock:
            _progress["active"] -= 1
            if _progress["active"] == 0:
                log.setLevel(_progress["previous"])
