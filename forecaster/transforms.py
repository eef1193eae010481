"""Target transforms: windows of raw features -> network inputs and targets, and back to prices.

``logreturn`` (default, scale-free): each window's close is log(close / last close of the
window), the targets are log(close[t+h] / close[t]) divided by their training RMS per
horizon (not centred, so an output of 0 is the naive forecast). ``level`` (the seed's way):
closes and targets are standardized price levels.
Statistics are fitted on training windows only and saved with the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class WindowTransform:
    """Fitted scaling of inputs ``(window, feature)`` and targets ``(horizon,)``."""

    target: str
    features: tuple[str, ...]
    input_mean: np.ndarray  # (feature,)
    input_scale: np.ndarray  # (feature,)
    target_mean: np.ndarray  # (horizon,)
    target_scale: np.ndarray  # (horizon,)
    return_var: float  # mean squared one-step change of the close within training windows

    @classmethod
    def fit(
        cls, blocks: np.ndarray, window: int, target: str, features: tuple[str, ...]
    ) -> WindowTransform:
        """Fit on training blocks ``(n, window + horizon, feature)`` of raw features."""
        inputs = _relative(blocks[:, :window], target, features)  # (n, window, feature)
        input_mean = inputs.mean(axis=(0, 1))
        input_scale = _safe(inputs.std(axis=(0, 1)))
        future = blocks[:, window:, 0]  # (n, horizon)
        if target == "logreturn":
            returns = future - blocks[:, window - 1 : window, 0]
            target_mean = np.zeros(returns.shape[1])
            target_scale = _safe(np.sqrt((returns**2).mean(axis=0)))
        else:
            target_mean = np.full(future.shape[1], input_mean[0])
            target_scale = np.full(future.shape[1], input_scale[0])
        return_var = float(_safe(np.array([_return_var(blocks[:, :window]).mean()]))[0])
        return cls(
            target, tuple(features), input_mean, input_scale, target_mean, target_scale, return_var
        )

    def inputs(self, windows: np.ndarray) -> np.ndarray:
        """Network inputs ``(n, window, feature)`` float32 from raw windows of the same shape."""
        relative = _relative(windows, self.target, self.features)
        return ((relative - self.input_mean) / self.input_scale).astype("float32")

    def targets(self, blocks: np.ndarray, window: int) -> np.ndarray:
        """Scaled targets ``(n, horizon)`` float32 from raw blocks ``(n, window + horizon, f)``."""
        future = blocks[:, window:, 0]
        if self.target == "logreturn":
            future = future - blocks[:, window - 1 : window, 0]
        return ((future - self.target_mean) / self.target_scale).astype("float32")

    def to_price(self, scaled: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """Prices ``(n, horizon)`` from scaled outputs ``(n, horizon)`` and raw windows."""
        value = scaled * self.target_scale + self.target_mean
        if self.target == "logreturn":
            return np.exp(windows[:, -1:, 0] + value)
        return value

    def anchor(self, windows: np.ndarray) -> np.ndarray:
        """The naive forecast (last close) in scaled target space ``(n, horizon)``."""
        if self.target == "logreturn":
            return np.zeros((len(windows), len(self.target_scale)))
        return (windows[:, -1:, 0] - self.target_mean) / self.target_scale

    def spread(self, windows: np.ndarray) -> np.ndarray:
        """Relative volatility of each raw window ``(n,)``, 1 on average, for the intervals.

        For ``logreturn``: the window's mean squared one-step log return, averaged half and
        half with the training mean (a few returns are a noisy estimate), over that mean.
        """
        if self.target != "logreturn" or windows.shape[1] < 2:
            return np.ones(len(windows))
        return np.sqrt((_return_var(windows) + self.return_var) / (2 * self.return_var))

    def last_close(self, windows: np.ndarray) -> np.ndarray:
        """The close at the end of each raw window ``(n,)``."""
        last = windows[:, -1, 0]
        return np.exp(last) if self.target == "logreturn" else last

    def to_state(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "features": list(self.features),
            "input_mean": self.input_mean.tolist(),
            "input_scale": self.input_scale.tolist(),
            "target_mean": self.target_mean.tolist(),
            "target_scale": self.target_scale.tolist(),
            "return_var": self.return_var,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> WindowTransform:
        return cls(
            target=state["target"],
            features=tuple(state["features"]),
            input_mean=np.asarray(state["input_mean"], dtype="float64"),
            input_scale=np.asarray(state["input_scale"], dtype="float64"),
            target_mean=np.asarray(state["target_mean"], dtype="float64"),
            target_scale=np.asarray(state["target_scale"], dtype="float64"),
            return_var=float(state["return_var"]),
        )


def _relative(windows: np.ndarray, target: str, features: tuple[str, ...]) -> np.ndarray:
    """Make windows scale-free for ``logreturn``: close and volume relative to the window."""
    if target != "logreturn":
        return windows
    relative = windows.copy()
    relative[:, :, 0] -= windows[:, -1:, 0]
    if "volume" in features:
        column = features.index("volume")
        relative[:, :, column] -= windows[:, :, column].mean(axis=1, keepdims=True)
    return relative


def _return_var(windows: np.ndarray) -> np.ndarray:
    """Mean squared one-step change of the close column per window ``(n,)``."""
    if windows.shape[1] < 2:
        return np.ones(len(windows))
    return np.mean(np.diff(windows[:, :, 0], axis=1) ** 2, axis=1)


def _safe(scale: np.ndarray) -> np.ndarray:
    return np.where(scale > 1e-12, scale, 1.0)
