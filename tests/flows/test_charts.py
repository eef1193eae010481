"""The daily chart reaches the Prefect UI as an image any browser shows: a small PNG embedded in
the summary's markdown as a ``data:`` URI, never a ``file://`` link to the worker's disk."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cdd.series_key import SeriesKey
from flows.charts import PNG_MAGIC, forecast_png, markdown_image
from flows.pipeline import SeriesOutcome
from flows.summary import summary_markdown
from tests.flows.cdd_files import make_candles

DATA_IMAGE = re.compile(r"!\[([^\]]*)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")
# well under what a Prefect artifact and a browser take in stride, per series
MAX_CHART_BYTES = 40_000


def images_in(markdown: str) -> dict[str, bytes]:
    """Every embedded PNG of ``markdown``, by its alt text, decoded."""
    return {
        alt: base64.b64decode(data, validate=True) for alt, data in DATA_IMAGE.findall(markdown)
    }


def forecasts_after(candles: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """A forecast frame as forecast_flow hands it over: ``horizon`` targets after the last."""
    as_of = candles.index[-1]
    period = candles.index[-1] - candles.index[-2]
    value = float(candles["close"].iloc[-1]) * (1 + 0.002 * np.arange(1, horizon + 1))
    spread = value * 0.01 * np.sqrt(np.arange(1, horizon + 1))
    return pd.DataFrame(
        {
            "as_of": as_of,
            "target_time": [as_of + period * h for h in range(1, horizon + 1)],
            "horizon": range(1, horizon + 1),
            "value": value,
            "lower_80": value - spread,
            "upper_80": value + spread,
            "lower_95": value - 2 * spread,
            "upper_95": value + 2 * spread,
        }
    )


@pytest.mark.parametrize(
    ("series", "horizon"), [("Bitstamp_BTCUSD_d", 7), ("Binance_ETHUSDT_1h", 24)]
)
def test_the_chart_is_a_small_png_of_the_full_size(series, horizon):
    candles = make_candles(SeriesKey.parse(series), 400)
    png = forecast_png(candles, forecasts_after(candles, horizon), series)
    assert png.startswith(PNG_MAGIC)
    assert len(png) < MAX_CHART_BYTES, f"{series}: {len(png)} bytes"
    image = Image.open(io.BytesIO(png))
    assert image.size == (1000, 450)
    # the close line and the forecast are there in their colours, not quantized away
    colours = {colour for _, colour in image.convert("RGB").getcolors(maxcolors=1 << 16)}
    assert any(_near(colour, (0x1F, 0x3B, 0x73)) for colour in colours)  # close
    assert any(_near(colour, (0xE1, 0x57, 0x59)) for colour in colours)  # forecast


def _near(colour: tuple[int, int, int], wanted: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 12 for a, b in zip(colour, wanted, strict=True))


def test_markdown_image_round_trips_the_png():
    candles = make_candles(SeriesKey.parse("Bitstamp_BTCUSD_d"), 120)
    png = forecast_png(candles, forecasts_after(candles, 7), "Bitstamp_BTCUSD_d")
    markdown = markdown_image(png, "Bitstamp_BTCUSD_d [chart]")
    assert images_in(markdown) == {"Bitstamp_BTCUSD_d (chart)": png}
    with pytest.raises(ValueError, match="Kraken_ETHUSD_d is not a PNG"):
        markdown_image(b"<html>", "Kraken_ETHUSD_d")


def test_nothing_to_draw_says_what_to_run_first():
    candles = make_candles(SeriesKey.parse("Bitstamp_BTCUSD_d"), 30)
    with pytest.raises(ValueError, match="no forecasts of Bitstamp_BTCUSD_d.*forecast first"):
        forecast_png(candles, forecasts_after(candles, 3).iloc[0:0], "Bitstamp_BTCUSD_d")
    with pytest.raises(ValueError, match="no candles of Bitstamp_BTCUSD_d.*ingest"):
        forecast_png(candles.iloc[0:0], forecasts_after(candles, 3), "Bitstamp_BTCUSD_d")


def test_the_summary_embeds_each_chart_and_links_no_file(tmp_path):
    drawn = {}
    for series in ("Bitstamp_BTCUSD_d", "Bitstamp_ETHUSD_d"):
        candles = make_candles(SeriesKey.parse(series), 120, seed=len(drawn))
        drawn[series] = forecast_png(candles, forecasts_after(candles, 7), series)
    path = tmp_path / "charts" / "Bitstamp_BTCUSD_d_20200429_0000.png"
    outcomes = [
        SeriesOutcome("Bitstamp_BTCUSD_d", chart=path, chart_png=drawn["Bitstamp_BTCUSD_d"]),
        SeriesOutcome("Bitstamp_ETHUSD_d", chart=None, chart_png=drawn["Bitstamp_ETHUSD_d"]),
        SeriesOutcome("Kraken_XRPUSD_d", failed_step="ingest", error=OSError("404")),
    ]
    summary = summary_markdown(outcomes)
    assert "file://" not in summary
    assert images_in(summary) == {f"{s} chart": png for s, png in drawn.items()}
    assert f"saved on the worker as `{path}`" in summary
    assert "| Kraken_XRPUSD_d | **failed at ingest** |" in summary
    assert len(summary.encode()) < 2 * MAX_CHART_BYTES * 4 / 3 + 2_000


def test_a_chart_written_to_disk_is_the_embedded_one(tmp_path, monkeypatch):
    """draw_chart writes the PNG file and hands the same bytes to the summary."""
    from flows.pipeline import draw_chart

    monkeypatch.setenv("CDDF_CHART_DIR", str(tmp_path / "charts"))
    candles = make_candles(SeriesKey.parse("Bitstamp_BTCUSD_d"), 120)
    path, png = draw_chart.fn("Bitstamp_BTCUSD_d", candles, forecasts_after(candles, 7))
    assert path == (tmp_path / "charts" / "Bitstamp_BTCUSD_d_20200429_0000.png").resolve()
    assert Path(path).read_bytes() == png
