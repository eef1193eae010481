"""Walk-forward backtests: strictly point-in-time forecasts over a range of as-of times.

At each as-of time t the model sees ``candles.loc[:t]`` only: it is refitted every
``retrain_every`` steps and fine-tuned (or left alone) in between, then forecasts t+1..t+H.
The as-of times are the candle times (a hole has none); an LSTM step whose window misses
more candles than it may fill is skipped with the reason (`forecaster.holes`).

>>> policy = BacktestPolicy(retrain_every=7, finetune_epochs=1)           # doctest: +SKIP
>>> result = walk_forward(candles, ForecasterConfig(), "2019-01-01", None, policy)  # doctest: +SKIP
>>> result.metrics.loc[0, "skill"]                                        # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd

from forecaster.baselines import naive_forecast
from forecaster.config import ForecasterConfig
from forecaster.holes import forecast_problem
from forecaster.metrics import score_forecasts
from forecaster.validation import as_candles

ModelFactory = Callable[[], Any]


@dataclass(frozen=True)
class BacktestPolicy:
    """How the model follows the as-of times.

    - ``retrain_every``: steps between fits from scratch (1 = refit at every as-of time);
    - ``finetune_epochs``: epochs of `update` on the steps in between (0 = none);
    - ``finetune_learning_rate``: None for the config's ``finetune_learning_rate``;
    - ``train_candles``: fit on the newest N candles only (None = all history up to t).
    """

    retrain_every: int = 7
    finetune_epochs: int = 1
    finetune_learning_rate: float | None = None
    train_candles: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.retrain_every, bool) or not isinstance(self.retrain_every, int) or (
            self.retrain_every < 1
        ):
            raise ValueError(
                f"BacktestPolicy.retrain_every must be an integer >= 1, got {self.retrain_every!r}"
            )
        if not isinstance(self.finetune_epochs, int) or self.finetune_epochs < 0:
            raise ValueError(
                f"BacktestPolicy.finetune_epochs must be an integer >= 0, "
                f"got {self.finetune_epochs!r}"
            )
        if self.train_candles is not None and (
            not isinstance(self.train_candles, int) or self.train_candles < 2
        ):
            raise ValueError(
                f"BacktestPolicy.train_candles must be None or an integer >= 2, "
                f"got {self.train_candles!r}"
            )


@dataclass
class BacktestStep:
    """One as-of time: what was done to the model, the model itself and its forecast.

    ``model`` is live: the next step may fine-tune it, so store it before advancing.
    ``forecast`` has the predict columns plus ``naive`` (the close at as_of); a ``"skip"``
    step (a hole too long to fill before as_of) has none, and ``reason`` says why.
    """

    as_of: pd.Timestamp
    action: str  # "retrain" | "finetune" | "none" | "skip"
    model: Any
    forecast: pd.DataFrame | None
    seconds: float
    reason: str | None = None


@dataclass
class BacktestResult:
    """All forecasts (with ``naive``), their scores and the per-step log."""

    forecasts: pd.DataFrame
    metrics: pd.DataFrame
    steps: pd.DataFrame  # as_of, action, seconds, reason (of a skip)


def walk_forward_steps(
    candles: pd.DataFrame | pd.Series,
    config: ForecasterConfig | ModelFactory,
    start: Any,
    end: Any = None,
    policy: BacktestPolicy | None = None,
    *,
    model: Any = None,
) -> Iterator[BacktestStep]:
    """Yield a `BacktestStep` for each candle time from ``start`` to ``end`` (inclusive).

    ``config`` is a ForecasterConfig (an LSTMForecaster is built from it) or a function
    returning a fresh unfitted forecaster (e.g. ``lambda: NaiveForecaster(horizon=7)``).
    ``model``: an already fitted forecaster to start from instead of fitting at ``start``.
    """
    policy = policy or BacktestPolicy()
    make = _factory(config)
    frame = candles if isinstance(candles, pd.DataFrame) else as_candles(candles)
    as_ofs = _as_of_times(as_candles(frame[["close"]]).index, start, end)
    since_retrain = 0
    for as_of in as_ofs:
        started = time.perf_counter()
        visible = frame.loc[:as_of]  # point in time: nothing after as_of
        reason = _skip_reason(visible, config, model)
        if reason is not None:
            yield BacktestStep(as_of, "skip", model, None, time.perf_counter() - started, reason)
            continue
        if model is None or since_retrain >= policy.retrain_every:
            train = visible.iloc[-(policy.train_candles or len(visible)) :]
            model, action, since_retrain = make().fit(train), "retrain", 0
        elif policy.finetune_epochs:
            model.update(visible, epochs=policy.finetune_epochs,
                         learning_rate=policy.finetune_learning_rate)
            action = "finetune"
        else:
            action = "none"
        since_retrain += 1
        forecast = model.predict(visible)
        forecast["naive"] = naive_forecast(visible)
        yield BacktestStep(as_of, action, model, forecast, time.perf_counter() - started)


def walk_forward(
    candles: pd.DataFrame | pd.Series,
    config: ForecasterConfig | ModelFactory,
    start: Any,
    end: Any = None,
    policy: BacktestPolicy | None = None,
    *,
    model: Any = None,
    on_step: Callable[[BacktestStep], None] | None = None,
) -> BacktestResult:
    """Run `walk_forward_steps` to the end and score every forecast against the closes."""
    forecasts, log = [], []
    for step in walk_forward_steps(candles, config, start, end, policy, model=model):
        if on_step is not None:
            on_step(step)
        if step.forecast is not None:
            forecasts.append(step.forecast)
        log.append({"as_of": step.as_of, "action": step.action, "seconds": step.seconds,
                    "reason": step.reason})
    if not forecasts:
        raise ValueError(f"walk-forward: no as_of could be forecast: {log[-1]['reason']}")
    frame = pd.concat(forecasts, ignore_index=True)
    close = candles["close"] if isinstance(candles, pd.DataFrame) else candles
    actuals = pd.Series(close.to_numpy(dtype="float64"), index=close.index.tz_convert("UTC"))
    return BacktestResult(frame, score_forecasts(frame, actuals), pd.DataFrame(log))


def _skip_reason(
    visible: pd.DataFrame, config: ForecasterConfig | ModelFactory, model: Any
) -> str | None:
    """Why an LSTM cannot forecast after ``visible`` (a hole too long to fill), else None."""
    model_config = getattr(model, "config", config)
    if not isinstance(model_config, ForecasterConfig):
        return None  # a baseline carries the last close over any hole
    return forecast_problem(visible.index, model_config)


def _factory(config: ForecasterConfig | ModelFactory) -> ModelFactory:
    if isinstance(config, ForecasterConfig):
        from forecaster.model import LSTMForecaster

        return lambda: LSTMForecaster(config)
    if callable(config):
        return config
    raise TypeError(
        f"config must be a ForecasterConfig or a function returning a forecaster, got {config!r}"
    )


def _as_of_times(index: pd.DatetimeIndex, start: Any, end: Any) -> pd.DatetimeIndex:
    first = _stamp(start, "start")
    last = _stamp(end, "end") if end is not None else index[-1]
    if first > last:
        raise ValueError(f"walk-forward start {first} is after end {last}")
    times = index[(index >= first) & (index <= last)]
    if len(times) == 0:
        raise ValueError(
            f"no candle between {first} and {last} (candles cover {index[0]} .. {index[-1]})"
        )
    return times


def _stamp(value: Any, name: str) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")
