"""The daily chart: the last candles of a series with its newest forecast and 80/95 % bands.

    png = forecast_png(candles, forecasts, "Bitstamp_BTCUSD_d")   # PNG bytes, about 22 kB
    markdown_image(png, "Bitstamp_BTCUSD_d")    # '![Bitstamp_BTCUSD_d](data:image/png;base64,…)'

The chart reaches the Prefect UI inside the markdown artifact, as a ``data:image/png;base64``
image: a browser on any machine shows it (the V1 UI renders the image as is; the V2 UI lets
``data:image/`` through its sanitizer), with no file server, shared disk or database blob to
run; the daily flow also writes the PNG to ``CDDF_CHART_DIR``. To keep artifacts small the
PNG is 1000×450 pixels in ``CHART_COLORS`` palette colours: about 22 kB (29 kB in base64)
for a daily or an hourly series, where the full-colour PNG is 76 kB.
"""

from __future__ import annotations

import base64
import io

import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

CHART_CANDLES = 90
CHART_COLORS = 256  # palette colours (a PNG palette's most): lines, bands, their soft edges
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def forecast_png(
    candles: pd.DataFrame,
    forecasts: pd.DataFrame,
    series: str,
    *,
    last: int = CHART_CANDLES,
) -> bytes:
    """The chart of the last ``last`` closes, the forecast and its bands, as PNG bytes.

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

    # a Figure of its own, not pyplot's: series draw their charts side by side in threads,
    # and pyplot keeps every open figure in one global registry
    figure = Figure(figsize=(10, 4.5), dpi=100)
    axes = figure.subplots()
    axes.plot(recent.index, recent.to_numpy(dtype=float), color="#1f3b73", label="close")
    for level, alpha in ((95, 0.18), (80, 0.35)):
        axes.fill_between(
            x,
            joined(f"lower_{level}"),
            joined(f"upper_{level}"),
            color="#f28e2b",
            alpha=alpha,
            label=f"{level} % interval",
        )
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
    drawn = io.BytesIO()
    figure.savefig(drawn, format="png")
    return _palette_png(drawn.getvalue())


def _palette_png(png: bytes) -> bytes:
    """The same picture in ``CHART_COLORS`` palette colours: a third of the bytes.

    Octree quantization keeps the few pixels of the forecast line in their own colour, where
    median cut merged them into the bands' orange.
    """
    image = Image.open(io.BytesIO(png)).convert("RGB")
    small = io.BytesIO()
    image.quantize(colors=CHART_COLORS, method=Image.Quantize.FASTOCTREE).save(
        small, format="PNG", optimize=True
    )
    return small.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """``png`` as a markdown image any browser shows: ``![alt](data:image/png;base64,…)``.

    >>> markdown_image(PNG_MAGIC, "Bitstamp_BTCUSD_d [d]")  # a PNG's first 8 bytes
    '![Bitstamp_BTCUSD_d (d)](data:image/png;base64,iVBORw0KGgo=)'
    """
    if not png.startswith(PNG_MAGIC):
        raise ValueError(f"the chart of {alt} is not a PNG image (starts {png[:8]!r})")
    shown = alt.replace("[", "(").replace("]", ")")
    return f"![{shown}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
