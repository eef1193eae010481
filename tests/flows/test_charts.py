"""The daily chart reaches the Prefect UI as an image any browser shows: a small PNG embedded in
its series' markdown artifact as a ``data:`` URI, never a ``file://`` link to the worker's disk;
the summary artifact stays a table whatever the number of series."""

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
from flows.summary import ERRORS_SHOWN, SUMMARY_ROWS, series_markdown, summary_markdown
from tests.flows.cdd_files import make_candles

DATA_IMAGE = re.compile(r"!\[([^\]]*)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")
# well under what a Prefect artifact and a browser take in stride, per series (issue 26: the
# charts of every run stay in Prefect's database for CDDF_PREFECT_RETENTION_DAYS)
MAX_CHART_BYTES = 20_000


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
    assert image.size == (800, 360)
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


def test_each_series_artifact_embeds_its_chart_and_links_no_file(tmp_path):
    drawn = {}
    for series in ("Bitstamp_BTCUSD_d", "Bitstamp_ETHUSD_d"):
        candles = make_candles(SeriesKey.parse(series), 120, seed=len(drawn))
        drawn[series] = forecast_png(candles, forecasts_after(candles, 7), series)
    path = tmp_path / "charts" / "Bitstamp_BTCUSD_d_20200429_0000.png"
    with_file = SeriesOutcome("Bitstamp_BTCUSD_d", chart=path, chart_png=drawn["Bitstamp_BTCUSD_d"])
    without = SeriesOutcome("Bitstamp_ETHUSD_d", chart=None, chart_png=drawn["Bitstamp_ETHUSD_d"])
    for outcome in (with_file, without):
        markdown = series_markdown(outcome)
        assert "file://" not in markdown
        assert images_in(markdown) == {f"{outcome.series} chart": drawn[outcome.series]}
        assert len(markdown.encode()) < MAX_CHART_BYTES * 4 / 3 + 2_000
    assert f"saved on the worker as `{path}`" in series_markdown(with_file)


def test_the_summary_is_a_table_bounded_at_any_number_of_series():
    png = forecast_png(
        make_candles(SeriesKey.parse("Bitstamp_BTCUSD_d"), 120),
        forecasts_after(make_candles(SeriesKey.parse("Bitstamp_BTCUSD_d"), 120), 7),
        "Bitstamp_BTCUSD_d",
    )
    outcomes = [
        SeriesOutcome(f"Binance_C{i:05d}USDT_d", chart_png=png) for i in range(SUMMARY_ROWS * 3)
    ]
    failed = [
        SeriesOutcome(f"Kraken_F{i:04d}USD_d", failed_step="ingest", error=OSError("x" * 5_000))
        for i in range(ERRORS_SHOWN * 2)
    ]
    summary = summary_markdown(outcomes + failed)
    assert images_in(summary) == {}
    assert len(summary.encode()) < 60_000
    assert f"{len(outcomes) + len(failed)} series: {len(outcomes)} ok, {len(failed)} failed" in (
        summary
    )
    assert "| Kraken_F0000USD_d | **failed at ingest** |" in summary  # problems first
    assert f"… and {len(outcomes) + len(failed) - SUMMARY_ROWS} more series, all ok." in summary
    assert f"… and {ERRORS_SHOWN} more: the run's logs name each" in summary


def test_a_chart_written_to_disk_is_the_embedded_one(tmp_path, monkeypatch):
    """draw_chart writes the PNG file and hands the same bytes to the summary."""
    from flows.pipeline import draw_chart

    monkeypatch.setenv("CDDF_CHART_DIR", str(tmp_path / "charts"))
    candles = make_candles(SeriesKey.parse("Bitstamp_BTCUSD_d"), 120)
    path, png = draw_chart("Bitstamp_BTCUSD_d", candles, forecasts_after(candles, 7))
    assert path == (tmp_path / "charts" / "Bitstamp_BTCUSD_d_20200429_0000.png").resolve()
    assert Path(path).read_bytes() == png


def test_the_chart_folder_keeps_each_series_newest_chart_only(tmp_path, monkeypatch):
    from flows.pipeline import draw_chart

    monkeypatch.setenv("CDDF_CHART_DIR", str(tmp_path))
    other = tmp_path / "Bitstamp_BTCUSD_d_extra_20200101_0000.png"  # no chart of this series
    other.write_bytes(PNG_MAGIC)
    candles = make_candles(SeriesKey.parse("Bitstamp_BTCUSD_d"), 130)
    paths = [
        draw_chart("Bitstamp_BTCUSD_d", candles.iloc[:n], forecasts_after(candles.iloc[:n], 7))[0]
        for n in (120, 125, 130)
    ]
    eth = make_candles(SeriesKey.parse("Bitstamp_ETHUSD_d"), 120)
    eth_path, _ = draw_chart("Bitstamp_ETHUSD_d", eth, forecasts_after(eth, 7))
    assert sorted(tmp_path.iterdir()) == sorted([paths[-1], eth_path, other])
