"""Each series' config and the model that serves it: its own, or its timeframe's global model.

A series' config is the package's defaults, the defaults of its timeframe and the overrides of
``CDDF_FORECASTER``, ``CDDF_TIMEFRAME_SETTINGS`` and ``CDDF_SERIES_SETTINGS`` (see
`settings.series`), e.g. ``CDDF_FORECASTER='{"units": 64, "max_epochs": 50}'``.

>>> forecaster_config("Bitstamp_BTCUSD_d").horizon
7
>>> forecaster_config("Binance_ADAUSDT_1h").horizon
24
"""

from __future__ import annotations

from db.registry import ModelScope
from flows.ingest import configured_keys
from forecaster import ForecasterConfig
from settings import SeriesConfig, get_settings

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
    daily run's group (the series of ``CDDF_SERIES`` of that timeframe, a pattern's among the
    stored series) and ``series`` itself.

    With ``CDDF_SERIES=Bitstamp_BTCUSD_d,Bitstamp_ETHUSD_d`` and
    ``CDDF_TIMEFRAME_SETTINGS='{"d": {"model_scope": "timeframe"}}'``,
    ``serving_scope("Bitstamp_ETHUSD_d").members`` is both of them.
    """
    group = series_config(series).group
    if group is None:
        return ModelScope.of_series(series)
    keys = list(dict.fromkeys([*configured_keys(), series]))
    return ModelScope.of_group(group, global_groups(keys)[group])
