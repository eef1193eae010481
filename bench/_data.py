"""Read the shared CryptoDataDownload files into candles frames, for the benchmarks only.

`load_daily`: the Bitstamp daily CSV (a banner line, newest row first, the newest row the
current day's partial candle, and on its oldest rows the two volume columns swapped).
`load_series`: any CDD file named after its series (``Binance_ADAUSDT_1h.csv``), read by the
service's own parser, so its holes stay holes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "Bitstamp_BTCUSD_d.csv"


def load_daily(path: Path = DATA) -> pd.DataFrame:
    """Final daily candles, ascending, indexed by UTC open time (the candles frame)."""
    if not path.exists():
        raise SystemExit(f"benchmark data {path} not found; it lives in ../shared/data/")
    raw = pd.read_csv(path, skiprows=1)
    frame = pd.DataFrame(
        {
            "open": raw["open"].astype(float),
            "high": raw["high"].astype(float),
            "low": raw["low"].astype(float),
            "close": raw["close"].astype(float),
            "volume_base": raw["Volume BTC"].astype(float),
            "volume_quote": raw["Volume USD"].astype(float),
        }
    )
    frame.index = pd.DatetimeIndex(pd.to_datetime(raw["unix"], unit="s", utc=True), name="time")
    frame = frame.sort_index().iloc[:-1]  # the newest candle is the day in progress
    # On the oldest rows the file swaps the columns; a BTC amount is always below its USD value.
    swapped = frame["volume_base"].to_numpy() > frame["volume_quote"].to_numpy()
    base = np.where(swapped, frame["volume_quote"], frame["volume_base"])
    quote = np.where(swapped, frame["volume_base"], frame["volume_quote"])
    frame["volume_base"], frame["volume_quote"] = base, quote
    frame["is_final"] = True
    return frame


def load_series(path: Path) -> pd.DataFrame:
    """The final candles of the CDD file ``path`` (named ``<series key>.csv``), holes and all."""
    from cdd.parser import parse_cdd
    from cdd.series_key import SeriesKey

    if not path.exists():
        raise SystemExit(f"benchmark data {path} not found; it lives in ../shared/data/")
    key = SeriesKey.parse(path.name.removesuffix(".csv"))
    candles = parse_cdd(path.read_bytes(), source=str(path), key=key).candles
    return candles[candles["is_final"]]


def seed_period(candles: pd.DataFrame) -> pd.DataFrame:
    """The seed tutorial's 1,273 candles from 2014-12-01 (1,018 train + 248 test windows)."""
    return candles.loc["2014-12-01":].iloc[:1273]
