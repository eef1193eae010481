"""The daily chart: the last candles of a series with its newest forecast and 80/95 % bands.

    png = forecast_png(candles, forecasts, "Bitstamp_BTCUSD_d")   # PNG bytes, about 14 kB
    markdown_image(png, "Bitstamp_BTCUSD_d")    # '![Bitstamp_BTCUSD_d](data:image/png;base64,…)'

The chart reaches the Prefect UI inside the series' own markdown artifact
(`flows/summary.py`), as a ``data:image/png;base64`` image: a browser on any machine shows it
(the V1 UI renders the image as is; the V2 UI lets ``data:image/`` through its sanitizer), with
no file server, shared disk or database blob to run; the daily flow also writes the PNG to
``CDDF_CHART_DIR``, where only each series' newest chart is kept (`keep_newest_chart`). To
keep artifacts small the PNG is 800×360 pixels in ``CHART_COLORS`` palette colours: about
14 kB (19 kB in base64) for a daily or an hourly series, where 1000×450 pixels in 256 colours
were 22 kB and the full-colour PNG 76 kB. 16 colours lose the 95 % band's pale orange.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

CHART_CANDLES = 90
CHART_COLORS = 32  # palette colours: lines, bands, their soft edges (16 merge the 95 % band)
CHART_SIZE = (10, 4.5)  # inches, at CHART_DPI: 800×360 pixels
CHART_DPI = 80
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
    figure = Figure(figsize=CHART_SIZE, dpi=CHART_DPI)
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
    """The same picture in ``CHART_COLORS`` palette colours: a fifth of the bytes.

    Octree quantization keeps the few pixels of the forecast line in their own colour, where
    median cut merged them into the bands' orange.
    """
    image = Image.open(io.BytesIO(png)).convert("RGB")
    small = io.BytesIO()
    image.quantize(colors=CHART_COLORS, method=Image.Quantize.FASTOCTREE).save(
        small, format="PNG", optimize=True
    )
    return small.getvalue()


def chart_path(folder: Path, series: str, as_of: pd.Timestamp) -> Path:
    """Where the chart of ``series`` as of ``as_of`` goes in ``folder``.

    >>> chart_path(Path("charts"), "Bitstamp_BTCUSD_d", pd.Timestamp("2024-06-30"))
    PosixPath('charts/Bitstamp_BTCUSD_d_20240630_0000.png')
    """
    return folder / f"{series}_{as_of:%Y%m%d_%H%M}.png"


def keep_newest_chart(folder: Path, series: str) -> list[Path]:
    """Delete every chart of ``series`` in ``folder`` but the newest as of; the deleted files.

    The chart directory holds one PNG per series, whatever the number of days: the older ones
    are in the Prefect artifacts' history (`flows/summary.py`) for as long as it is kept.
    Another series' charts are never matched (the name is the key, then the as of).
    """
    own = re.compile(rf"{re.escape(series)}_\d{{8}}_\d{{4}}\.png")
    charts = sorted(path for path in folder.glob(f"{series}_*.png") if own.fullmatch(path.name))
    for old in charts[:-1]:
        old.unlink(missing_ok=True)  # another run of the series may have deleted it first
    return charts[:-1]


def markdown_image(png: bytes, alt: str) -> str:
    """``png`` as a markdown image any browser shows: ``![alt](data:image/png;base64,…)``.

    >>> markdown_image(PNG_MAGIC, "Bitstamp_BTCUSD_d [d]")  # a PNG's first 8 bytes
    '![Bitstamp_BTCUSD_d (d)](data:image/png;base64,iVBORw0KGgo=)'
    """
    if not png.startswith(PNG_MAGIC):
        raise ValueError(f"the chart of {alt} is not a PNG image (starts {png[:8]!r})")
    shown = alt.replace("[", "(").replace("]", ")")
    return f"![{shown}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
