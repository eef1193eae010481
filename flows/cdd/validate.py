"""Row checks and repairs of a parsed CDD file, vectorised over numpy arrays.

``values`` is a float64 array of shape (rows, 6): open, high, low, close, volume_base,
volume_quote; ``times`` int64 UTC nanoseconds; ``lines`` each row's 1-based file line.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from flows.cdd.errors import CDDFormatError

OPEN, HIGH, LOW, CLOSE, VOLUME_BASE, VOLUME_QUOTE = range(6)
_NAMES = ("open", "high", "low", "close", "volume_base", "volume_quote")
# a row's volume ratio (quote / base) is its average price, which lies within [low, high];
# the band is wide so that only a ratio that is off by orders of magnitude counts as swapped
_BAND = 2.0
# rows up to this far past `now` are allowed for clock skew; further is "in the future"
CLOCK_SKEW_NS = pd.Timedelta(minutes=1).value


def _fail(source: str, line: int, problem: str) -> CDDFormatError:
    return CDDFormatError(
        f"{source} line {line}: {problem}; fix the row or download the file again"
    )


def check_prices(values: np.ndarray, lines: np.ndarray, *, source: str) -> None:
    """Prices > 0, low <= open, close <= high, volumes >= 0."""
    prices = values[:, :4]
    bad = (prices <= 0).any(axis=1)
    if bad.any():
        row = int(np.argmax(bad))
        shown = ", ".join(f"{_NAMES[i]}={prices[row, i]:g}" for i in range(4))
        raise _fail(source, int(lines[row]), f"prices must be positive ({shown})")
    o, h, low, c = (prices[:, i] for i in range(4))
    checks = (
        (low > h, "high {h:g} is below low {low:g}"),
        (low > o, "open {o:g} is below low {low:g}"),
        (low > c, "close {c:g} is below low {low:g}"),
        (o > h, "open {o:g} is above high {h:g}"),
        (c > h, "close {c:g} is above high {h:g}"),
    )
    for bad, problem in checks:
        if bad.any():
            row = int(np.argmax(bad))
            shown = problem.format(o=o[row], h=h[row], low=low[row], c=c[row])
            raise _fail(source, int(lines[row]), shown)
    bad = (values[:, 4:] < 0).any(axis=1)
    if bad.any():
        row = int(np.argmax(bad))
        raise _fail(source, int(lines[row]), f"volumes must not be negative ({values[row, 4:]})")


def check_times(
    times: np.ndarray,
    lines: np.ndarray,
    period: int,
    now: pd.Timestamp,
    *,
    timeframe: str,
    source: str,
) -> None:
    """Times aligned to the timeframe and not after ``now``."""
    bad = times % period != 0
    if bad.any():
        row = int(np.argmax(bad))
        raise CDDFormatError(
            f"{source} line {lines[row]}: {_iso(times[row])} is not the start of a "
            f"{pd.Timedelta(period)} candle (timeframe {timeframe!r}); is this a file of "
            "another timeframe? Check the series key and --source"
        )
    bad = times > now.value + CLOCK_SKEW_NS
    if bad.any():
        row = int(np.argmax(bad))
        raise CDDFormatError(
            f"{source} line {lines[row]}: candle at {_iso(times[row])} is in the future "
            f"(now is {now.isoformat()}); check this machine's clock or the file"
        )


def collapse_duplicates(
    times: np.ndarray, values: np.ndarray, lines: np.ndarray, *, source: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Drop repeated identical rows (``times`` sorted); conflicting repeats are an error."""
    repeat = np.flatnonzero(times[1:] == times[:-1])
    if len(repeat) == 0:
        return times, values, lines, 0
    conflict = (values[repeat] != values[repeat + 1]).any(axis=1)
    if conflict.any():
        first = repeat[int(np.argmax(conflict))]
        a, b = sorted((int(lines[first]), int(lines[first + 1])))
        raise CDDFormatError(
            f"{source} lines {a} and {b}: two different candles for {_iso(times[first])}; "
            "keep the right one and delete the other, or download the file again"
        )
    keep = np.ones(len(times), dtype=bool)
    keep[repeat + 1] = False
    return times[keep], values[keep], lines[keep], len(repeat)


def fix_swapped_volumes(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Swap back the volume columns of rows where quote / base is no price of the row.

    Real case: the oldest 1,180 rows of Bitstamp_BTCUSD_d hold the USD volume under
    ``Volume BTC``. A row is swapped when quote/base lies far outside [low, high] while
    base/quote lies inside it (pairs priced near 1 are never swapped).
    """
    base, quote = values[:, VOLUME_BASE], values[:, VOLUME_QUOTE]
    low, high = values[:, LOW] / _BAND, values[:, HIGH] * _BAND
    traded = (base > 0) & (quote > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        price, inverse = quote / base, base / quote
    swapped = traded & ((price < low) | (price > high)) & (inverse >= low) & (inverse <= high)
    count = int(swapped.sum())
    if count:
        values = values.copy()
        values[swapped, VOLUME_BASE] = quote[swapped]
        values[swapped, VOLUME_QUOTE] = base[swapped]
    return values, count


def _iso(ns: int) -> str:
    return pd.Timestamp(int(ns), tz="UTC").isoformat()
