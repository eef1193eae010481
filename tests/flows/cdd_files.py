"""Build CryptoDataDownload-format files for tests, in each format generation CDD has served.

>>> key = SeriesKey.parse("Bitstamp_BTCUSD_d")
>>> body = make_cdd_csv(key, make_candles(key, 30), generation="2017")
>>> body.splitlines()[1]
b'Date,Symbol,Open,High,Low,Close,Volume From,Volume To'

Generations (all with the ``https://www.CryptoDataDownload.com`` banner unless banner=False):
- ``2017``: ``Date,Symbol,...,Volume From,Volume To``; no unix column; hourly dates in the
  12-hour form ``2018-05-15 11-PM``; symbol ``BTCUSD``.
- ``2019``: ``Unix Timestamp,Date,...,Volume BTC,Volume USD``; unix in milliseconds.
- ``2020``: ``Unix,Date,...,Volume BTC,Volume USDT,tradecount`` (Binance style), milliseconds.
- ``current``: ``unix,date,...,Volume BTC,Volume USD``; seconds; symbol ``BTC/USD``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cdd.series_key import SeriesKey

BANNER = "https://www.CryptoDataDownload.com"
_QUOTES = ("USDT", "USDC", "USD", "EUR", "GBP", "JPY", "BTC", "ETH")


@dataclass(frozen=True)
class Generation:
    header: tuple[str, ...]  # {base}/{quote} filled from the pair
    unix_unit: str | None  # "s", "ms" or None (no unix column)
    symbol_slash: bool
    date_formats: dict[str, str]  # timeframe -> strftime format
    extra: str | None = None  # a trailing column CDD added (e.g. tradecount)


_ISO = {"d": "%Y-%m-%d %H:%M:%S", "1h": "%Y-%m-%d %H:%M:%S", "minute": "%Y-%m-%d %H:%M:%S"}
GENERATIONS: dict[str, Generation] = {
    "2017": Generation(
        ("Date", "Symbol", "Open", "High", "Low", "Close", "Volume From", "Volume To"),
        None,
        False,
        {"d": "%Y-%m-%d", "1h": "%Y-%m-%d %I-%p", "minute": "%Y-%m-%d %H:%M:%S"},
    ),
    "2019": Generation(
        (
            "Unix Timestamp",
            "Date",
            "Symbol",
            "Open",
            "High",
            "Low",
            "Close",
            "Volume {base}",
            "Volume {quote}",
        ),
        "ms",
        False,
        {**_ISO, "d": "%Y-%m-%d"},
    ),
    "2020": Generation(
        (
            "Unix",
            "Date",
            "Symbol",
            "Open",
            "High",
            "Low",
            "Close",
            "Volume {base}",
            "Volume {quote}",
            "tradecount",
        ),
        "ms",
        False,
        _ISO,
        extra="tradecount",
    ),
    "current": Generation(
        (
            "unix",
            "date",
            "symbol",
            "open",
            "high",
            "low",
            "close",
            "Volume {base}",
            "Volume {quote}",
        ),
        "s",
        True,
        _ISO,
    ),
}


def split_pair(pair: str) -> tuple[str, str]:
    """``BTCUSD`` -> (``BTC``, ``USD``); ``ETHUSDT`` -> (``ETH``, ``USDT``)."""
    for quote in _QUOTES:
        if pair.endswith(quote) and len(pair) > len(quote):
            return pair[: -len(quote)], quote
    return pair[:3], pair[3:]


def make_candles(
    key: SeriesKey, n: int, *, start: str | pd.Timestamp = "2020-01-01", seed: int = 0
) -> pd.DataFrame:
    """``n`` consistent final candles of ``key``'s timeframe from ``start`` (a random walk)."""
    rng = np.random.default_rng(seed)
    index = pd.date_range(pd.Timestamp(start, tz="UTC"), periods=n, freq=key.period, name="time")
    close = np.round(10_000 * np.exp(np.cumsum(rng.normal(0, 0.02, n))), 2)
    open_ = np.round(np.concatenate([[10_000.0], close[:-1]]), 2)
    high = np.round(np.maximum(open_, close) * (1 + rng.uniform(0.001, 0.03, n)), 2)
    low = np.round(np.minimum(open_, close) * (1 - rng.uniform(0.001, 0.03, n)), 2)
    volume_base = np.round(rng.uniform(10, 5_000, n), 8)
    volume_quote = np.round(volume_base * (low + high) / 2, 2)
    return pd.DataFrame(
        {
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume_base": volume_base,
            "volume_quote": volume_quote,
            "is_final": True,
        },
        index=index,
    )


def make_cdd_csv(
    key: SeriesKey,
    candles: pd.DataFrame,
    generation: str = "current",
    *,
    banner: bool = True,
    newest_first: bool = True,
    unix_unit: str | None = None,
    line_ending: str = "\n",
) -> bytes:
    """The bytes of a CDD file of ``candles`` as ``generation`` wrote it.

    ``unix_unit`` overrides the generation's ("s", "ms" or "mixed": ms on every other row).
    """
    spec = GENERATIONS[generation]
    base, quote = split_pair(key.pair)
    header = [name.format(base=base, quote=quote) for name in spec.header]
    times = candles.index
    symbol = f"{base}/{quote}" if spec.symbol_slash else key.pair
    out: dict[str, object] = {}
    unit = unix_unit or spec.unix_unit
    if unit is not None:
        seconds = times.as_unit("s").asi8
        if unit == "s":
            out["unix"] = seconds
        elif unit == "ms":
            out["unix"] = seconds * 1000
        else:
            out["unix"] = np.where(np.arange(len(seconds)) % 2 == 1, seconds * 1000, seconds)
    out["date"] = _dates(times, spec.date_formats[key.timeframe])
    out["symbol"] = symbol
    for name in ("open", "high", "low", "close", "volume_base", "volume_quote"):
        out[name] = candles[name].to_numpy()
    if spec.extra:
        out[spec.extra] = np.arange(len(candles)) + 100
    if unit is not None and spec.unix_unit is None:  # a unix override on a date-only generation
        header.insert(0, "unix")
    columns = [_strings(value, len(candles)) for value in out.values()]
    rows = zip(*columns, strict=True)
    if newest_first:
        rows = reversed(list(rows))  # type: ignore[assignment]
    text = "".join(",".join(row) + line_ending for row in rows)
    lines = ([BANNER] if banner else []) + [",".join(header)]
    return (line_ending.join(lines) + line_ending + text).encode()


def write_cdd_file(directory: Path, key: SeriesKey, candles: pd.DataFrame, **options) -> Path:
    """Write ``<key>.csv`` into ``directory`` (see ``make_cdd_csv`` for the options)."""
    path = Path(directory) / key.file_name
    path.write_bytes(make_cdd_csv(key, candles, **options))
    return path


def _strings(value: object, n: int) -> list[str]:
    """A column as the text CDD writes (floats in their shortest exact form)."""
    if isinstance(value, str):
        return [value] * n
    if isinstance(value, list):
        return value
    return list(map(repr, np.asarray(value).tolist()))


def _dates(times: pd.DatetimeIndex, date_format: str) -> list[str]:
    """``times`` formatted; the ISO forms take a fast path (strftime is slow on 1M rows)."""
    if date_format in ("%Y-%m-%d", "%Y-%m-%d %H:%M:%S"):
        text = times.tz_localize(None).astype(str).tolist()  # "2020-01-01" when all midnight
        if date_format == "%Y-%m-%d":
            return [t[:10] for t in text]
        return [t if len(t) == 19 else t[:10] + " 00:00:00" for t in text]
    return times.strftime(date_format).tolist()
