"""Row checks and repairs of a parsed CDD file, vectorised over numpy arrays.

``values`` is a float64 array of shape (rows, 6): open, high, low, close, volume_base,
volume_quote; ``times`` int64 UTC nanoseconds; a row check marks bad rows in a ``RowFaults``
(the row is then rejected, not the file); a file check raises ``CDDFormatError``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cdd.errors import CDDFormatError
from cdd.rejects import RowFaults
from cdd.series_key import TIMEFRAMES
from cdd.times import DATE_FORMS_TEXT

OPEN, HIGH, LOW, CLOSE, VOLUME_BASE, VOLUME_QUOTE = range(6)
NAMES = ("open", "high", "low", "close", "volume_base", "volume_quote")
# a row's volume ratio (quote / base) is its average price, which lies within [low, high];
# the band is wide so that only a ratio that is off by orders of magnitude counts as swapped
_BAND = 2.0
# after the swap repair, a ratio outside [low / 10, high x 10] is a bad row (real files stay
# within 1.9x: Bitstamp XRPUSD); a file's unterminated last line must lie within 3x, since
# a cut that drops a digit of a volume moves the ratio 10x
VOLUME_FACTOR = 10.0
CUT_LINE_FACTOR = 3.0
# OHLC is compared with this relative tolerance: float noise such as Bitfinex's open 1.83e-06
# beside high 0.0000018299999999999998 is no inconsistency
PRICE_TOLERANCE = 1e-9
# rows up to this far past `now` are allowed for clock skew; further is "in the future"
CLOCK_SKEW_NS = pd.Timedelta(minutes=1).value
# a date names its unix time's candle when both fall in the same period of the timeframe; the
# one offset CDD is known to have written is also the same candle: Binance's Sept 2017 hourly
# rows are dated exactly 4 hours off (a local time), counted as time mismatches, unix trusted
KNOWN_DATE_OFFSET_NS = pd.Timedelta(hours=4).value


def check_prices(values: np.ndarray, faults: RowFaults) -> None:
    """Prices > 0, low <= open, close <= high (within float noise), volumes >= 0."""
    prices = values[:, :4]
    faults.add(
        (prices <= 0).any(axis=1),
        lambda row: (
            "prices must be positive ("
            + ", ".join(f"{NAMES[i]}={prices[row, i]:g}" for i in range(4))
            + ")"
        ),
    )
    o, h, low, c = (prices[:, i] for i in range(4))
    slack = np.abs(h) * PRICE_TOLERANCE
    checks = (
        (low > h + slack, "high {h!r} is below low {low!r}"),
        (low > o + slack, "open {o!r} is below low {low!r}"),
        (low > c + slack, "close {c!r} is below low {low!r}"),
        (o > h + slack, "open {o!r} is above high {h!r}"),
        (c > h + slack, "close {c!r} is above high {h!r}"),
    )
    for bad, problem in checks:
        faults.add(
            bad,
            lambda row, problem=problem: problem.format(
                o=float(o[row]), h=float(h[row]), low=float(low[row]), c=float(c[row])
            ),
        )
    volumes = values[:, 4:]
    faults.add(
        (volumes < 0).any(axis=1),
        lambda row: f"volumes must not be negative ({volumes[row, 0]:g}, {volumes[row, 1]:g})",
    )


def check_alignment(
    times: np.ndarray, period: int, now: pd.Timestamp, faults: RowFaults, *, timeframe: str
) -> None:
    """Times aligned to the timeframe and not after ``now``."""
    faults.add(
        times % period != 0,
        lambda row: (
            f"{iso(times[row])} is not the start of a {pd.Timedelta(period)} candle "
            f"(timeframe {timeframe!r})"
        ),
    )
    faults.add(
        times > now.value + CLOCK_SKEW_NS,
        lambda row: (
            f"candle at {iso(times[row])} is in the future (now is {now.isoformat()}); "
            "check this machine's clock"
        ),
    )


def check_spacing(times: np.ndarray, period: int, *, timeframe: str, source: str) -> None:
    """The (sorted) candles must not be spaced like another CDD timeframe's.

    ``times``: every row whose time could be read, also those rejected later (misaligned).
    Holes are normal; a daily file given for an hourly series (every day also starts an
    hour) is not: its most common spacing is 1 day (or a multiple), never 1 hour. Nor is an
    hourly file given for a daily series, however short: most of its steps are shorter than
    a candle (two rows 1 hour apart are enough to tell).
    """
    steps = np.diff(times)
    steps = steps[steps != 0]
    if len(steps) == 0 or (steps == period).mean() >= 0.5:
        return
    spacings, counts = np.unique(steps, return_counts=True)
    common = int(spacings[np.argmax(counts)])
    coarser = [int(p.value) for p in TIMEFRAMES.values() if p.value > period]
    finer = (steps < period).mean() > 0.5
    if not finer and (common == period or not any(common % p == 0 for p in coarser)):
        return
    share = counts.max() / len(steps)
    raise CDDFormatError(
        f"{source}: its candles are {pd.Timedelta(common)} apart ({share:.0%} of {len(steps):,} "
        f"steps), but series timeframe {timeframe!r} is {pd.Timedelta(period)}; this is a file "
        "of another timeframe - check the series key and --source"
    )


def cross_check_dates(
    unix_ns: np.ndarray,
    date_ns: np.ndarray,
    readable: np.ndarray,
    dates: pd.Series | None,
    faults: RowFaults,
    *,
    unix: np.ndarray,
    period: int,
) -> np.ndarray:
    """Trust the unix time; returns the rows whose date says another time of the same candle.

    The date and the unix time must name the same candle: the same period of the timeframe
    (``2025-09-24 04:00:00`` is the daily candle of unix 2025-09-24 00:00), or the known
    4-hour offset. A date that names another candle (daily ``2025-09-24`` beside unix
    2025-09-25), or no date at all, makes the row ambiguous: a bad row, never stored.
    ``unix``: the unix cells as read (float64), for the message.
    """
    offset = date_ns - unix_ns
    faults.add(
        ~readable,
        lambda row: (
            f"date {None if dates is None else dates.iloc[row]!r} is not a date of "
            f"the forms {DATE_FORMS_TEXT}"
        ),
    )
    same = (date_ns // period == unix_ns // period) | (np.abs(offset) == KNOWN_DATE_OFFSET_NS)
    faults.add(
        readable & ~same,
        lambda row: (
            f"date {_moment(date_ns[row], seconds=True)} is not unix {unix[row]:.0f} = "
            f"{_moment(unix_ns[row])} UTC: the row is ambiguous"
        ),
    )
    return readable & same & (offset != 0)


def _moment(ns: int, *, seconds: bool = False) -> str:
    """``2025-09-24`` at midnight, else ``2025-09-24 05:00`` (with ``:SS`` if ``seconds``)."""
    stamp = pd.Timestamp(int(ns), tz="UTC")
    if seconds and stamp == stamp.normalize():
        return f"{stamp:%Y-%m-%d}"
    return f"{stamp:%Y-%m-%d %H:%M:%S}" if seconds else f"{stamp:%Y-%m-%d %H:%M}"


def check_volume_ratio(values: np.ndarray, faults: RowFaults) -> None:
    """Quote volume / base volume must be a price of the row within VOLUME_FACTOR."""
    faults.add(
        ratio_outside(values, VOLUME_FACTOR),
        lambda row: (
            f"quote volume {float(values[row, VOLUME_QUOTE])!r} is not base volume "
            f"{float(values[row, VOLUME_BASE])!r} x a price within [low / {VOLUME_FACTOR:g}, high "
            f"x {VOLUME_FACTOR:g}] (low {float(values[row, LOW])!r}, high "
            f"{float(values[row, HIGH])!r})"
        ),
    )


def ratio_outside(values: np.ndarray, factor: float) -> np.ndarray:
    """Rows that traded (both volumes > 0) whose quote / base is outside [low/f, high*f]."""
    base, quote = values[:, VOLUME_BASE], values[:, VOLUME_QUOTE]
    with np.errstate(divide="ignore", invalid="ignore"):
        price = quote / base
        return (
            (base > 0)
            & (quote > 0)
            & ((price < values[:, LOW] / factor) | (price > values[:, HIGH] * factor))
        )


def fix_swapped_volumes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Swap back the volume columns of rows where quote / base is no price of the row.

    Real case: the oldest 1,180 rows of Bitstamp_BTCUSD_d hold the USD volume under
    ``Volume BTC``. A row is swapped when quote/base lies far outside [low, high] while
    base/quote lies inside it (pairs priced near 1 are never swapped). Returns the repaired
    values and the mask of swapped rows.
    """
    base, quote = values[:, VOLUME_BASE], values[:, VOLUME_QUOTE]
    low, high = values[:, LOW] / _BAND, values[:, HIGH] * _BAND
    traded = (base > 0) & (quote > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        price, inverse = quote / base, base / quote
    swapped = traded & ((price < low) | (price > high)) & (inverse >= low) & (inverse <= high)
    if swapped.any():
        values = values.copy()
        values[swapped, VOLUME_BASE] = quote[swapped]
        values[swapped, VOLUME_QUOTE] = base[swapped]
    return values, swapped


def iso(ns: int) -> str:
    return pd.Timestamp(int(ns), tz="UTC").isoformat()
