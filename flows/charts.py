"""The daily chart: the last candles of a series with its newest forecast and 80/95 % bands.

>>> forecast_chart(candles, forecasts, "Bitstamp_BTCUSD_d", Path("charts/btc.png"))
PosixPath('charts/btc.png')
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

CHART_CANDLES = 90


def forecast_chart(
    candles: pd.DataFrame,
    forecasts: pd.DataFrame,
    series: str,
    path: Path,
    *,
    last: int = CHART_CANDLES,
) -> Path:
    """Draw the last ``last`` closes, the forecast and its bands into the PNG ``path``.

    ``candles`` is a candles frame (index ``time``, column ``close``); ``forecasts`` has the
    columns ``target_time, value, lower_80, upper_80, lower_95, upper_95``.
    """
    if candles.empty:
        raise ValueError(f"no candles of {series} to draw: ingest the series first")
    if forecasts.empty:
        raise ValueError(f"no forecasts of {series} to draw: run the forecast first")
    recent = candles["close"].iloc[-last:]
    ahead = forecasts.sort_values("target_time")
    # every line and band starts at the last close, so that it joins the history
    last_close = float(recent.iloc[-1])
    x = pd.DatetimeIndex([recent.index[-1]]).append(pd.DatetimeIndex(ahead["target_time"]))

    def joined(column: str) -> list[float]:
        return [last_close, *ahead[column].astype(float)]

    figure, axes = plt.subplots(figsize=(10, 4.5), dpi=100)
    try:
        axes.plot(recent.index, recent.to_numpy(dtype=float), color="#1f3b73", label="close")
        axes.fill_between(x, joined("lower_95"), joined("upper_95"),
                          color="#f28e2b", alpha=0.18, label="95 % interval")
        axes.fill_between(x, joined("lower_80"), joined("upper_80"),
                          color="#f28e2b", alpha=0.35, label="80 % interval")
        axes.plot(x, joined("value"), color="#e15759", marker="o", markersize=3, label="forecast")
        as_of = recent.index[-1]
        axes.axvline(as_of, color="grey", linewidth=0.8, linestyle="--")
        axes.set_title(
            f"{series}: last {len(recent)} candles, forecast as of {as_of:%Y-%m-%d %H:%M} UTC"
        )
        axes.set_ylabel("close")
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left")
        figure.autofmt_xdate()
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png")
    finally:
        plt.close(figure)
    return path
