"""Model settings per timeframe and per series: defaults that suit each CDD timeframe, overrides.

Resolution, each step overriding the one before: the package's `ForecasterConfig` defaults →
``TIMEFRAME_DEFAULTS[timeframe]`` → ``CDDF_FORECASTER`` (every series) → the old
``CDDF_RETRAIN_AFTER_DAYS`` (in days, converted to candles) → ``CDDF_TIMEFRAME_SETTINGS[timeframe]``
→ ``CDDF_SERIES_SETTINGS[series]``. For example, in the environment or ``.env``::

    CDDF_TIMEFRAME_SETTINGS='{"1h": {"horizon": 48, "train_candles": 4380}}'
    CDDF_SERIES_SETTINGS='{"Bitstamp_BTCUSD_d": {"window": 14, "retrain_after": 14}}'

``model_scope`` (per timeframe only): ``"series"`` (default) trains one model per series;
``"timeframe"`` trains one global model for every series of that timeframe (its group), whose
settings are then the timeframe's alone (a series of the group may not override them)::

    CDDF_TIMEFRAME_SETTINGS='{"d": {"model_scope": "timeframe"}}'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, model_validator

from cdd.series_key import TIMEFRAMES, timeframe_of
from forecaster import ForecasterConfig

# the forecasts table has columns for these interval levels
REQUIRED_LEVELS = (0.8, 0.95)
# the length of one candle of each CryptoDataDownload timeframe (cdd.series_key.TIMEFRAMES)
CANDLE_LENGTH = {name: period.to_pytimedelta() for name, period in TIMEFRAMES.items()}
CANDLE_NAME = {"d": "day", "1h": "hour", "minute": "minute"}
_FORECASTER_FIELDS = frozenset(f.name for f in dataclasses.fields(ForecasterConfig))


class ModelSettings(BaseModel):
    """Overrides for a timeframe or a series: any `ForecasterConfig` field, plus the two below.

    - ``train_candles``: a retrain fits on this many newest final candles (None: all of them);
    - ``retrain_after``: the auto policy retrains once the last retrain is this many candles
      of the series' own timeframe old;
    - ``model_scope`` (a timeframe's only): ``series`` or ``timeframe`` (one global model);
    - ``group_train_candles`` (a timeframe's only): a global retrain fits on at most this many
      candles in all, each of its k series on its newest ``group_train_candles // k`` (never
      more than ``group_series_candles``), so that its cost does not grow with the number of
      series;
    - ``group_series_candles`` (a timeframe's only): a global retrain fits on at most this
      many newest candles of each series (None: all of them); a global model's own
      ``train_candles``, which applies to local models only;
    - ``group_retrain_after`` (a timeframe's only): a global model's ``retrain_after`` (None:
      the timeframe's);
    - ``group_validation_fraction`` (a timeframe's only): the global model's
      ``validation_fraction`` (None: the timeframe's), the share of each series' windows that
      validates and calibrates its intervals;
    - ``group_patience`` (a timeframe's only): the global model's ``patience`` (None: the
      timeframe's), the epochs early stopping waits for a better validation loss. A global
      epoch is up to k series' windows where a local one is one series', so the same wait in
      gradient steps is fewer epochs.
    - ``group_steps_per_epoch`` (a timeframe's only): the global model's ``steps_per_epoch``
      (None: every window each epoch): each epoch of its fit draws this many batches across
      every series' windows, so an epoch costs the same however many series and candles feed it.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    train_candles: PositiveInt | None = None
    retrain_after: PositiveInt | None = None
    model_scope: Literal["series", "timeframe"] | None = None
    group_train_candles: PositiveInt | None = None
    group_series_candles: PositiveInt | None = None
    group_retrain_after: PositiveInt | None = None
    group_validation_fraction: float | None = Field(default=None, gt=0, lt=1)
    group_patience: NonNegativeInt | None = None
    group_steps_per_epoch: PositiveInt | None = None

    @model_validator(mode="after")
    def _known_fields(self) -> ModelSettings:
        unknown = sorted(set(self.model_extra or {}) - _FORECASTER_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown setting(s) {unknown}: use train_candles, retrain_after, model_scope, "
                f"group_train_candles, group_series_candles, group_retrain_after, "
                f"group_validation_fraction, group_patience, group_steps_per_epoch or a "
                f"ForecasterConfig field ({', '.join(sorted(_FORECASTER_FIELDS))})"
            )
        return self

    def overrides(self) -> dict[str, Any]:
        """The fields this object sets, as one dict."""
        return {name: getattr(self, name) for name in self.model_fields_set} | dict(
            self.model_extra or {}
        )


# Defaults that suit each timeframe. A daily series keeps the package's tuned config and retrains
# every 28 days on its newest 1,000 candles, fine-tuned one epoch a day between (issue 27): the
# policy of the walk-forward whose figures docs/benchmarks.md publishes, chosen on cost and on a
# 2016-2018 development period, never on the 2019+ test years (weekly retrains on all history, the
# default before, cost ~4x as much a backfill and were never measured on those years). An hourly one
# forecasts the next 24 hours from the last 2 days with a small network and retrains weekly on its
# newest 2,000 candles (about 12 weeks); a minute one forecasts the next hour and trains on a
# bounded ~2 weeks of candles (training time stays bounded however long the file is). A global model
# (model_scope "timeframe") retrains on group_train_candles in all, shared by its series: for hourly
# and minute twice one series' train_candles, each series at most its group_series_candles (as a
# local model's train_candles). A daily one retrains weekly (group_retrain_after 7) on every series'
# whole history (no cap) in epochs of group_steps_per_epoch batches drawn across all of it, so its
# data grows with the group and its cost per epoch does not; it validates on each series' newest
# 20 % as a local model does (chosen on data before the benchmark's test years: docs/benchmarks.md,
# "A global model that learns more as the group grows"). Its early stopping waits group_patience
# epochs: about a local model's 10 in gradient steps, since a global epoch holds up to 4x (daily: 50
# x 64 windows against ~800) or 2x a local one's.
TIMEFRAME_DEFAULTS: dict[str, dict[str, Any]] = {
    "d": {
        "window": 7,
        "horizon": 7,
        "validation_fraction": 0.2,
        "finetune_windows": 64,
        "train_candles": 1_000,
        "retrain_after": 28,
        "model_scope": "series",
        "group_train_candles": None,
        "group_series_candles": None,
        "group_retrain_after": 7,
        "group_validation_fraction": None,
        "group_patience": 3,
        "group_steps_per_epoch": 50,
    },
    # Hourly (issue 27): a new hourly series' first run, ingest to stored forecast, in about a
    # minute on a 2-core CPU. Chosen with bench/hourly.py choose on the 336 hours ending 24
    # hours before the last 720 of both shared hourly files (never on those 720): 32 units on
    # the newest 2,000 candles, batch 128, at most 30 epochs with patience 3, served RMSE /
    # naive 1.0000 on both, the LSTM alone 0.990, first fit ~30 s under load ~25; 256 units
    # on 8,760 (before) took 398.5 s, and 64 units on 4,000 fitted 2-4x slower with a worse
    # LSTM (1.088). The group_* values keep the "twice train_candles" rule; they were not
    # re-chosen (docs/benchmarks.md, "Hourly in a minute").
    "1h": {
        "window": 48,
        "horizon": 24,
        "validation_fraction": 0.1,
        "finetune_windows": 168,
        "units": 32,
        "batch_size": 128,
        "max_epochs": 30,
        "patience": 3,
        "train_candles": 2_000,
        "retrain_after": 24 * 7,
        "model_scope": "series",
        "group_train_candles": 2 * 2_000,
        "group_series_candles": 2_000,
        "group_retrain_after": None,
        "group_validation_fraction": None,
        "group_patience": 5,
    },
    "minute": {
        "window": 60,
        "horizon": 60,
        "validation_fraction": 0.1,
        "finetune_windows": 720,
        "train_candles": 20_000,
        "retrain_after": 24 * 60,
        "model_scope": "series",
        "group_train_candles": 2 * 20_000,
        "group_series_candles": 20_000,
        "group_retrain_after": None,
        "group_validation_fraction": None,
        "group_patience": 5,
    },
}


# the group settings that are a global model's own value of a ForecasterConfig field
GROUP_FORECASTER = {
    "group_validation_fraction": "validation_fraction",
    "group_patience": "patience",
    "group_steps_per_epoch": "steps_per_epoch",
}
# settings of a timeframe only, never of one series
GROUP_SETTINGS = (
    "model_scope",
    "group_train_candles",
    "group_series_candles",
    "group_retrain_after",
    *GROUP_FORECASTER,
)


@dataclass(frozen=True)
class SeriesConfig:
    """Everything one series trains and forecasts with."""

    series: str
    forecaster: ForecasterConfig
    train_candles: int | None  # a retrain uses this many newest candles (None: all)
    retrain_after: int  # candles of the series' timeframe between retrains
    model_scope: str = "series"  # or "timeframe": one global model of the timeframe's group
    group_train_candles: int | None = None  # a global retrain's candles, all series together

    @property
    def group(self) -> str | None:
        """The timeframe whose global model serves this series, or None (its own model)."""
        return timeframe_of(self.series) if self.model_scope == "timeframe" else None

    @property
    def candle(self) -> timedelta:
        return CANDLE_LENGTH[timeframe_of(self.series)]

    def candles(self, n: int) -> str:
        """``n`` candles in words: ``3 days``, ``1 hour``."""
        name = CANDLE_NAME[timeframe_of(self.series)]
        return f"{n} {name}{'' if n == 1 else 's'}"

    def version_config(self) -> dict[str, Any]:
        """What a model version stores as its config; a change of it means a retrain."""
        extra = {} if self.train_candles is None else {"train_candles": self.train_candles}
        if self.group is not None and self.group_train_candles is not None:
            extra["group_train_candles"] = self.group_train_candles
        return self.forecaster.to_dict() | extra


def with_new_defaults(stored: dict[str, Any]) -> dict[str, Any]:
    """A model version's stored config, each `ForecasterConfig` field added since at its default.

    Compared with `SeriesConfig.version_config`: an upgrade that adds a field must not read
    as "the settings changed" and retrain every series; the new field's default applies
    from the next fine-tune (a field's default that changes a trained model's forecasts
    would need a retrain: none does so far).
    """
    return ForecasterConfig().to_dict() | dict(stored)


def resolve(
    series: str,
    *,
    forecaster: dict[str, Any],
    retrain_after_days: float | None,
    timeframe_settings: dict[str, ModelSettings],
    series_settings: dict[str, ModelSettings],
) -> SeriesConfig:
    """The config of ``series`` (see the module docstring for the order); ValueError names it."""
    timeframe = timeframe_of(series)
    if timeframe not in TIMEFRAME_DEFAULTS:
        raise ValueError(
            f"{series}: unknown timeframe {timeframe!r}, use one of {', '.join(TIMEFRAME_DEFAULTS)}"
        )
    merged = dict(TIMEFRAME_DEFAULTS[timeframe]) | forecaster
    if retrain_after_days is not None:
        merged["retrain_after"] = max(
            1, round(timedelta(days=retrain_after_days) / CANDLE_LENGTH[timeframe])
        )
    if timeframe in timeframe_settings:
        merged |= timeframe_settings[timeframe].overrides()
    if series in series_settings:
        own = series_settings[series].overrides()
        scoped = [name for name in GROUP_SETTINGS if name in own]
        if scoped or merged["model_scope"] == "timeframe":
            raise ValueError(
                f"{series}: {scoped[0] if scoped else 'its settings'} cannot "
                f"be set per series: the model scope is per timeframe, and the series of a "
                f"global model share their timeframe's settings; set them in "
                f"CDDF_TIMEFRAME_SETTINGS[{timeframe!r}]"
            )
        merged |= own
    train_candles, retrain_after = merged.pop("train_candles"), merged.pop("retrain_after")
    group = {name: merged.pop(name, None) for name in GROUP_SETTINGS}
    model_scope, group_train_candles = group["model_scope"], group["group_train_candles"]
    if model_scope == "timeframe":  # the global model's own, where the group_* settings say
        train_candles = group["group_series_candles"]
        retrain_after = group["group_retrain_after"] or retrain_after
        merged |= {
            field: group[name]
            for name, field in GROUP_FORECASTER.items()
            if group[name] is not None
        }
    config = ForecasterConfig.from_dict(ForecasterConfig().to_dict() | merged)
    missing = [level for level in REQUIRED_LEVELS if level not in config.interval_levels]
    if missing:
        raise ValueError(
            f"{series}: interval_levels must include {list(REQUIRED_LEVELS)} (the "
            "forecasts table stores those bands)"
        )
    if train_candles is not None and train_candles < config.window + config.horizon + 1:
        raise ValueError(
            f"{series}: train_candles={train_candles} leaves no training window: "
            f"use at least window + horizon + 1 = "
            f"{config.window + config.horizon + 1}"
        )
    if group_train_candles is not None and group_train_candles < config.min_history:
        raise ValueError(
            f"{series}: group_train_candles={group_train_candles} leaves the global model no "
            f"training window: use at least {config.min_history} (one series' least history)"
        )
    return SeriesConfig(
        series, config, train_candles, retrain_after, model_scope, group_train_candles
    )
