"""Baselines with the LSTM's ``fit`` / ``predict``: naive persistence, drift, seasonal naive.

Intervals are split-conformal on the baseline's own in-sample log errors per horizon, so
they are multiplicative around the forecast.

>>> import pandas as pd
>>> close = pd.Series([1.0, 2.0, 4.0], index=pd.date_range("2024-01-01", periods=3, tz="UTC"))
>>> NaiveForecaster(horizon=1).fit(close).predict(close)["value"].tolist()
[4.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from forecaster.intervals import conformal_quantiles
from forecaster.validation import as_candles, cut_at, infer_period, require_length, target_times

_DEFAULT_LEVELS = (0.8, 0.95)


class _Baseline:
    """Shared fit/predict: subclasses give price forecasts from a close history."""

    needs_history = 1

    def __init__(self, horizon: int = 7, interval_levels: tuple[float, ...] = _DEFAULT_LEVELS):
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon must be a positive integer, got {horizon!r}")
        if any(not 0 < level < 1 for level in interval_levels):
            raise ValueError(f"interval_levels must be in (0, 1), got {interval_levels!r}")
        self.horizon = horizon
        self.interval_levels = tuple(float(level) for level in interval_levels)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(horizon={self.horizon})"

    def fit(self, candles: pd.DataFrame | pd.Series) -> Any:
        """Learn the parameters (drift) and the interval widths from ``candles``.

        Holes are allowed: a missing target is not scored, a missing input carries the last
        close forward (the grid of `_on_grid`).
        """
        frame = as_candles(candles)
        require_length(frame, self.needs_history + self.horizon, f"fitting {type(self).__name__}")
        self.period_ = infer_period(frame.index)
        actual = _on_grid(frame, self.period_)  # (period,) NaN in holes
        close = pd.Series(actual).ffill().to_numpy()
        self._learn(close)
        origins = np.flatnonzero(~np.isnan(actual))  # forecast origins: real candles
        origins = origins[(origins >= self.needs_history - 1) & (origins < len(close) - 1)]
        predicted = self._forecast(close, origins)  # (origin, horizon)
        targets = origins[:, None] + np.arange(1, self.horizon + 1)
        truth = actual[np.minimum(targets, len(close) - 1)]
        valid = (targets < len(close)) & ~np.isnan(truth)
        residuals = np.log(truth / predicted)
        self.quantiles_ = {
            level: np.array(
                [
                    conformal_quantiles(residuals[valid[:, h], h][:, None], level)[0]
                    for h in range(self.horizon)
                ]
            )
            for level in self.interval_levels
        }
        self.training_range_ = (frame.index[0], frame.index[-1])
        return self

    def update(
        self, candles: pd.DataFrame | pd.Series, epochs: int = 0, learning_rate: float | None = None
    ) -> Any:
        """Refit on ``candles`` (a baseline has nothing to fine-tune)."""
        return self.fit(candles)

    def predict(self, candles: pd.DataFrame | pd.Series, as_of: Any = None) -> pd.DataFrame:
        """Forecasts for as_of + 1..horizon periods, from candles up to ``as_of`` only."""
        if not hasattr(self, "quantiles_"):
            raise RuntimeError(f"this {type(self).__name__} is not fitted; call fit(candles) first")
        frame = as_candles(cut_at(candles, as_of))
        require_length(frame, self.needs_history, f"a {type(self).__name__} forecast")
        period = infer_period(frame.index) or self.period_
        if period != self.period_:
            raise ValueError(
                f"candles are spaced {period} apart but the baseline was fitted on "
                f"{self.period_} candles"
            )
        close = pd.Series(_on_grid(frame, self.period_)).ffill().to_numpy()
        predicted = self._forecast(close, np.array([len(close) - 1]))[0]
        as_of_time = frame.index[-1]
        horizons = np.arange(1, self.horizon + 1)
        result = pd.DataFrame(
            {
                "as_of": as_of_time,
                "target_time": target_times(as_of_time, horizons, self.period_, frame.index),
                "horizon": horizons,
                "value": predicted,
            }
        )
        for level in self.interval_levels:
            name = f"{level * 100:g}"
            result[f"lower_{name}"] = predicted * np.exp(-self.quantiles_[level])
            result[f"upper_{name}"] = predicted * np.exp(self.quantiles_[level])
        return result

    def _learn(self, close: np.ndarray) -> None:
        """Fit parameters from the closes on the period grid; nothing by default."""

    def _forecast(self, close: np.ndarray, origins: np.ndarray) -> np.ndarray:
        """Price forecasts ``(origin, horizon)`` made at the positions ``origins``."""
        raise NotImplementedError


def naive_forecast(candles: pd.DataFrame) -> float:
    """The naive forecast of every horizon after ``candles``: their last close (persistence)."""
    return float(candles["close"].iloc[-1])


class NaiveForecaster(_Baseline):
    """Persistence: every horizon's forecast is the close at ``as_of``."""

    def _forecast(self, close: np.ndarray, origins: np.ndarray) -> np.ndarray:
        return np.repeat(close[origins][:, None], self.horizon, axis=1)


class DriftForecaster(_Baseline):
    """The close at ``as_of`` grown by the mean log return of the fitted history per period."""

    def _learn(self, close: np.ndarray) -> None:
        self.drift_ = float(np.log(close[-1] / close[0]) / (len(close) - 1))

    def _forecast(self, close: np.ndarray, origins: np.ndarray) -> np.ndarray:
        steps = np.arange(1, self.horizon + 1)
        return close[origins][:, None] * np.exp(self.drift_ * steps)


class SeasonalNaiveForecaster(_Baseline):
    """The close one ``season`` before each target (season 7 on daily candles: a week ago)."""

    def __init__(
        self,
        season: int = 7,
        horizon: int = 7,
        interval_levels: tuple[float, ...] = _DEFAULT_LEVELS,
    ) -> None:
        super().__init__(horizon, interval_levels)
        if isinstance(season, bool) or not isinstance(season, int) or season < 1:
            raise ValueError(f"season must be a positive integer, got {season!r}")
        self.season = season
        self.needs_history = season

    def __repr__(self) -> str:
        return f"SeasonalNaiveForecaster(season={self.season}, horizon={self.horizon})"

    def _forecast(self, close: np.ndarray, origins: np.ndarray) -> np.ndarray:
        offsets = (np.arange(self.horizon) % self.season) - self.season + 1  # (horizon,)
        return close[origins[:, None] + offsets]


def _on_grid(frame: pd.DataFrame, period: pd.Timedelta | None) -> np.ndarray:
    """The closes at every period from the first candle to the last, NaN in the holes."""
    close = frame["close"]
    if period is None:
        return close.to_numpy()
    grid = pd.date_range(close.index[0], close.index[-1], freq=period)
    return close.reindex(grid.as_unit(close.index.unit)).to_numpy()
