"""Walk-forward backtests: strictly point-in-time forecasts over a range of as-of times.

At each as-of time t the model sees ``candles.loc[:t]`` only: it is refitted every
``retrain_every`` steps and fine-tuned (or left alone) in between, then forecasts t+1..t+H.
The as-of times are the candle times (a hole has none); an LSTM step whose window misses
more candles than it may fill is skipped with the reason (`forecaster.holes`). A global
model (`forecaster.pooled`) walks forward the same way on ``{series key: candles}``: at each
as-of time t of one ``series`` it trains on every series' candles up to t, forecasts that one.

>>> policy = BacktestPolicy(retrain_every=7, finetune_epochs=1)           # doctest: +SKIP
>>> result = walk_forward(candles, ForecasterConfig(), "2019-01-01", None, policy)  # doctest: +SKIP
>>> result.metrics.loc[0, "skill"]                                        # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
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
    - ``train_candles``: fit on the newest N candles only (None = all history up to t);
    - ``group_train_candles``: a global model (several series) fits on at most N candles in
      all, each of its k series on its newest N // k (and at most ``train_candles``), so
      that a retrain costs about the same whatever the number of series (None = no cap).
    """

    retrain_every: int = 7
    finetune_epochs: int = 1
    finetune_learning_rate: float | None = None
    train_candles: int | None = None
    group_train_candles: int | None = None

    def __post_init__(self) -> None:
        if (
            isinstance(self.retrain_every, bool)
            or not isinstance(self.retrain_every, int)
            or (self.retrain_every < 1)
        ):
            raise ValueError(
                f"BacktestPolicy.retrain_every must be an integer >= 1, got {self.retrain_every!r}"
            )
        if not isinstance(self.finetune_epochs, int) or self.finetune_epochs < 0:
            raise ValueError(
                f"BacktestPolicy.finetune_epochs must be an integer >= 0, "
                f"got {self.finetune_epochs!r}"
            )
        for name in ("train_candles", "group_train_candles"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 2
            ):
                raise ValueError(
                    f"BacktestPolicy.{name} must be None or an integer >= 2, got {value!r}"
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
    candles: pd.DataFrame | pd.Series | Mapping[str, pd.DataFrame],
    config: ForecasterConfig | ModelFactory,
    start: Any,
    end: Any = None,
    policy: BacktestPolicy | None = None,
    *,
    model: Any = None,
    series: str | None = None,
) -> Iterator[BacktestStep]:
    """Yield a `BacktestStep` for each candle time from ``start`` to ``end`` (inclusive).

    ``config`` is a ForecasterConfig (an LSTMForecaster is built from it) or a function
    returning a fresh unfitted forecaster (e.g. ``lambda: NaiveForecaster(horizon=7)``).
    ``model``: an already fitted forecaster to start from instead of fitting at ``start``.
    ``candles`` may be ``{series key: candles}`` of one timeframe, with ``series`` the key to
    forecast: each step then fits or fine-tunes on every series' candles up to its as_of (a
    series with none yet is left out; ``policy.train_candles`` applies to each) and forecasts
    ``series`` with its own calibration, at the candle times of ``series``.
    """
    policy = policy or BacktestPolicy()
    make = _factory(config)
    group = _group(candles, series)
    frame = group[series] if group is not None else _frame(candles)
    as_ofs = _as_of_times(as_candles(frame[["close"]]).index, start, end)
    since_retrain = 0
    for as_of in as_ofs:
        started = time.perf_counter()
        visible = frame.loc[:as_of]  # point in time: nothing after as_of
        reason = _skip_reason(visible, config, model)
        if reason is not None:
            yield BacktestStep(as_of, "skip", model, None, time.perf_counter() - started, reason)
            continue
        seen = visible if group is None else up_to(group, as_of)  # every series', to as_of
        if model is None or since_retrain >= policy.retrain_every:
            fresh = make()
            part = newest_candles(
                seen, policy.train_candles, policy.group_train_candles, _least(fresh)
            )
            model, action, since_retrain = fresh.fit(part), "retrain", 0
        elif policy.finetune_epochs:
            model.update(
                seen, epochs=policy.finetune_epochs, learning_rate=policy.finetune_learning_rate
            )
            action = "finetune"
        else:
            action = "none"
        since_retrain += 1
        own = {} if group is None else {"series": series}  # a global model: its calibration
        forecast = model.predict(visible, **own)
        forecast["naive"] = naive_forecast(visible)
        yield BacktestStep(as_of, action, model, forecast, time.perf_counter() - started)


def up_to(group: Mapping[str, pd.DataFrame], as_of: pd.Timestamp) -> dict[str, pd.DataFrame]:
    """Each series' candles up to ``as_of`` (inclusive); a series with none yet is left out."""
    seen = {key: frame.loc[:as_of] for key, frame in group.items()}
    return {key: frame for key, frame in seen.items() if not frame.empty}


def walk_forward(
    candles: pd.DataFrame | pd.Series | Mapping[str, pd.DataFrame],
    config: ForecasterConfig | ModelFactory,
    start: Any,
    end: Any = None,
    policy: BacktestPolicy | None = None,
    *,
    model: Any = None,
    series: str | None = None,
    on_step: Callable[[BacktestStep], None] | None = None,
) -> BacktestResult:
    """Run `walk_forward_steps` to the end and score every forecast against the closes."""
    forecasts, log = [], []
    steps = walk_forward_steps(candles, config, start, end, policy, model=model, series=series)
    for step in steps:
        if on_step is not None:
            on_step(step)
        if step.forecast is not None:
            forecasts.append(step.forecast)
        log.append(
            {
                "as_of": step.as_of,
                "action": step.action,
                "seconds": step.seconds,
                "reason": step.reason,
            }
        )
    if not forecasts:
        raise ValueError(f"walk-forward: no as_of could be forecast: {log[-1]['reason']}")
    frame = pd.concat(forecasts, ignore_index=True)
    group = _group(candles, series)
    close = (group[series] if group is not None else _frame(candles))["close"]
    actuals = pd.Series(close.to_numpy(dtype="float64"), index=close.index.tz_convert("UTC"))
    return BacktestResult(frame, score_forecasts(frame, actuals), pd.DataFrame(log))


def _frame(candles: pd.DataFrame | pd.Series) -> pd.DataFrame:
    return candles if isinstance(candles, pd.DataFrame) else as_candles(candles)


def _group(
    candles: pd.DataFrame | pd.Series | Mapping[str, pd.DataFrame], series: str | None
) -> dict[str, pd.DataFrame] | None:
    """``{series key: candles}`` of a global model's walk forward, or None for one series."""
    if not isinstance(candles, Mapping):
        if series is not None:
            raise ValueError(
                f"series={series!r} names one of several series: pass {{series key: candles}}"
            )
        return None
    if series not in candles:
        raise ValueError(
            f"series={series!r} is not one of the candles' series "
            f"({', '.join(map(str, candles))}): name the series to forecast"
        )
    return {str(key): _frame(frame) for key, frame in candles.items()}


def newest_candles(
    seen: pd.DataFrame | Mapping[str, pd.DataFrame],
    train_candles: int | None = None,
    group_train_candles: int | None = None,
    least: int = 1,
) -> pd.DataFrame | dict[str, pd.DataFrame]:
    """What a retrain fits on: each series' newest ``train_candles`` candles (None: all).

    Several series (``{series key: candles}``) share ``group_train_candles`` when it is set:
    each of the k series keeps its newest ``group_train_candles // k``, but never fewer than
    ``least`` (a config's ``min_history``, so that no series drops out of training).
    """
    if not isinstance(seen, Mapping):
        return seen if train_candles is None else seen.iloc[-train_candles:]
    share = train_candles
    if group_train_candles is not None and seen:
        share = max(group_train_candles // len(seen), least)
        share = share if train_candles is None else min(share, train_candles)
    if share is None:
        return dict(seen)
    return {key: frame.iloc[-share:] for key, frame in seen.items()}


def _least(model: Any) -> int:
    """The fewest candles ``model`` fits on (1 when it is not windowed)."""
    config = getattr(model, "config", None)
    return config.min_history if isinstance(config, ForecasterConfig) else 1


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
