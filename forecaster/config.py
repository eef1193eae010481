"""The forecaster's hyperparameters: one frozen dataclass, stored as JSON with each model.

>>> config = ForecasterConfig(window=7, horizon=1)
>>> ForecasterConfig.from_dict(config.to_dict()) == config
True
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

TARGETS = ("logreturn", "level")
FEATURES = ("close", "range", "volume")


@dataclass(frozen=True)
class ForecasterConfig:
    """Hyperparameters of `LSTMForecaster`; the defaults are the package's tuned choice.

    - ``window``: candles per input window; ``horizon``: forecasts for t+1..t+horizon.
    - ``target``: ``"logreturn"`` (scale-free: log returns relative to the window's last
      close) or ``"level"`` (the seed's way: standardized price levels).
    - ``features``: per-candle inputs, ``"close"`` first; ``"range"`` is log(high/low),
      ``"volume"`` is log(1 + volume_base) relative to the window's mean.
    - ``ensemble``: independently initialised LSTM members trained side by side whose
      forecasts are averaged.
    - ``finetune_windows``: how many of the newest windows `update` trains on, for
      ``finetune_epochs`` epochs (1, the default: the policy of the walk-forward the
      published figures come from, docs/benchmarks.md; 0 fine-tunes nothing).
    - ``group_finetune_windows``: a global model's `update` trains on at most this many
      windows in all, each of its k series on its newest ``group_finetune_windows // k``
      (at least 1, at most ``finetune_windows``); None (the default, chosen on data before
      the test years: docs/benchmarks.md) is ``finetune_windows``: a group's fine-tune takes
      the steps one series' takes, whatever the number of series.
    - ``series_interval_windows``: a global model's series with at least this many
      validation windows gets interval quantiles of its own; one with fewer (but at least
      `forecaster.pooled.MIN_SERIES_CALIBRATION`, for its own shrinkage) the quantiles of
      every series' validation windows together, each shrunk by its own series' factor.
      The default, 1,000, chosen on data before the test years (docs/benchmarks.md), shares
      them whenever a global fit is capped by the service's ``group_train_candles``.
    - ``steps_per_epoch``: an epoch of a fit is this many batches drawn (seeded, without
      replacement) across every training window, and early stopping watches a fixed sample
      of at most ``steps_per_epoch * batch_size`` validation windows
      (`forecaster.sampling`); None (the default) is every window each epoch. A global
      model's cost per epoch then stays the same as its series and their history grow.
    - ``series_embedding``: for a global model (`LSTMForecaster.fit` on several series), the
      dimensions of a learned per-series vector fed beside each step's features; 0 (the
      default, chosen on data before the test years: docs/benchmarks.md) is none. A
      single-series fit ignores it.
    """

    window: int = 7
    horizon: int = 7
    units: int = 256
    layers: int = 1
    dropout: float = 0.0
    learning_rate: float = 1e-3
    clipnorm: float = 4.0
    batch_size: int = 64
    max_epochs: int = 200
    patience: int = 10
    validation_fraction: float = 0.2
    target: Literal["logreturn", "level"] = "logreturn"
    features: tuple[str, ...] = ("close",)
    interval_levels: tuple[float, ...] = (0.8, 0.95)
    finetune_learning_rate: float = 1e-4
    finetune_epochs: int = 1
    finetune_windows: int = 64
    group_finetune_windows: int | None = None
    ensemble: int = 1
    series_interval_windows: int = 1_000
    series_embedding: int = 0
    mixed_precision: bool = False
    steps_per_epoch: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "interval_levels", tuple(float(x) for x in self.interval_levels))
        for name in (
            "window",
            "horizon",
            "units",
            "layers",
            "batch_size",
            "max_epochs",
            "finetune_windows",
            "series_interval_windows",
            "ensemble",
        ):
            _check(
                name,
                _is_int(getattr(self, name)) and getattr(self, name) >= 1,
                "a positive integer",
                getattr(self, name),
            )
        for name in ("patience", "finetune_epochs"):
            _check(
                name,
                _is_int(getattr(self, name)) and getattr(self, name) >= 0,
                "an integer >= 0",
                getattr(self, name),
            )
        _check("seed", _is_int(self.seed), "an integer", self.seed)
        _check(
            "group_finetune_windows",
            self.group_finetune_windows is None
            or (_is_int(self.group_finetune_windows) and self.group_finetune_windows >= 1),
            "a positive integer or None",
            self.group_finetune_windows,
        )
        _check(
            "steps_per_epoch",
            self.steps_per_epoch is None
            or (_is_int(self.steps_per_epoch) and self.steps_per_epoch >= 1),
            "a positive integer or None",
            self.steps_per_epoch,
        )
        _check(
            "series_embedding",
            _is_int(self.series_embedding) and self.series_embedding >= 0,
            "an integer >= 0 (0: no embedding)",
            self.series_embedding,
        )
        for name in ("learning_rate", "clipnorm", "finetune_learning_rate"):
            value = getattr(self, name)
            _check(name, _is_number(value) and value > 0, "a positive number", value)
        _check(
            "dropout", _is_number(self.dropout) and 0 <= self.dropout < 1, "in [0, 1)", self.dropout
        )
        _check(
            "validation_fraction",
            _is_number(self.validation_fraction) and 0 < self.validation_fraction < 1,
            "in (0, 1)",
            self.validation_fraction,
        )
        _check("target", self.target in TARGETS, f"one of {TARGETS}", self.target)
        if (
            not self.features
            or self.features[0] != "close"
            or len(set(self.features)) != len(self.features)
            or any(f not in FEATURES for f in self.features)
        ):
            raise ValueError(
                f"ForecasterConfig.features must start with 'close' and name distinct features "
                f"among {FEATURES}, got {self.features!r}"
            )
        levels = self.interval_levels
        if any(not 0 < x < 1 for x in levels) or len(set(_level_name(x) for x in levels)) != len(
            levels
        ):
            raise ValueError(
                "ForecasterConfig.interval_levels must be distinct probabilities in (0, 1) "
                f"such as (0.8, 0.95), got {levels!r}"
            )
        _check(
            "mixed_precision",
            isinstance(self.mixed_precision, bool),
            "True or False",
            self.mixed_precision,
        )

    @property
    def min_windows(self) -> int:
        """The fewest windows (blocks of window + horizon contiguous candles) a fit needs."""
        from forecaster.windowing import min_windows

        return min_windows(self.validation_fraction, self.horizon)

    @property
    def min_history(self) -> int:
        """The fewest candles a fit needs when they have no hole."""
        return self.window + self.horizon - 1 + self.min_windows

    @property
    def max_filled(self) -> int:
        """How many missing candles a forecast may fill in its window (see forecaster.holes)."""
        from forecaster.holes import max_filled

        return max_filled(self.window)

    @property
    def interval_names(self) -> list[tuple[float, str, str]]:
        """``[(0.8, "lower_80", "upper_80"), ...]`` for each interval level."""
        return [
            (x, f"lower_{_level_name(x)}", f"upper_{_level_name(x)}") for x in self.interval_levels
        ]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ForecasterConfig:
        """Rebuild from `to_dict` output; unknown keys are a ValueError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown ForecasterConfig keys {unknown}; known keys are {sorted(known)}"
            )
        return cls(**data)


def _check(name: str, ok: bool, expected: str, value: object) -> None:
    if not ok:
        raise ValueError(f"ForecasterConfig.{name} must be {expected}, got {value!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _level_name(level: float) -> str:
    """0.8 -> "80", 0.95 -> "95", 0.975 -> "97.5"."""
    return f"{level * 100:g}"
