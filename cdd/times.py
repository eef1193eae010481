"""Candle open times from a CDD ``unix`` or ``date`` column, as int64 UTC nanoseconds.

Nothing here raises for a bad row: each function returns the times with a mask (or code) of
the rows it could not read, and the parser rejects those rows.

>>> seconds_and_ms = np.array([1758672000.0, 1758585600000.0, 1.5])
>>> unix_to_ns(seconds_and_ms).ns
array([1758672000000000000, 1758585600000000000,                   0])
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

# plausible candle times: 2000-01-01 .. 2100-01-01, in seconds
_FIRST_SECOND = 946_684_800
_LAST_SECOND = 4_102_444_800
# the date forms CDD has written: ISO (2025-09-24, 2025-09-24 00:00:00) and 12-hour hourly forms;
# a row's form is its index here, and form 0 (ISO) is the newer generation's
DATE_FORMATS = ("ISO8601", "%Y-%m-%d %I-%p", "%Y-%m-%d %I:%M %p", "%Y-%m-%d %I:%M:%S %p")
UNREADABLE = -1
# the ISO forms CDD writes (a "T" is read too); a shorter date would name another candle
_ISO_SHAPE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[ T][0-9]{2}:[0-9]{2}:[0-9]{2})?"
DATE_FORMS_TEXT = "YYYY-MM-DD, YYYY-MM-DD HH:MM:SS or YYYY-MM-DD HH-AM"


class UnixTimes(NamedTuple):
    ns: np.ndarray  # int64 UTC nanoseconds (0 where bad)
    ms: np.ndarray  # bool: written in milliseconds (or microseconds), the newer generation
    bad: np.ndarray  # bool: empty, not whole, or outside 2000..2100


def unix_to_ns(values: np.ndarray) -> UnixTimes:
    """Unix times in seconds, milliseconds or microseconds (mixed per row) -> UTC ns."""
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(values) & (values == np.floor(values))
    # a unix time in seconds has at most 10 digits today; ms 13, us 16
    factor = np.where(values >= 1e14, 1_000, np.where(values >= 1e11, 1_000_000, 1_000_000_000))
    with np.errstate(invalid="ignore"):
        seconds = values * factor / 1e9
        bad = ~whole | (seconds < _FIRST_SECOND) | (seconds > _LAST_SECOND)
    ns = np.where(bad, 0, values).astype(np.int64) * factor.astype(np.int64)
    return UnixTimes(ns=ns, ms=factor < 1_000_000_000, bad=bad)


def dates_to_ns(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Dates such as ``2025-09-24``, ``2025-09-24 00:00:00`` or ``2018-05-15 11-PM`` -> UTC ns.

    Returns the times (0 where unreadable) and each row's form: its index in DATE_FORMATS, or
    UNREADABLE for an empty cell or a date of no known form.
    """
    result = np.zeros(len(values), dtype=np.int64)
    form = np.full(len(values), UNREADABLE, dtype=np.int8)
    todo = np.flatnonzero(values.notna().to_numpy())
    for number, date_format in enumerate(DATE_FORMATS):
        if len(todo) == 0:
            break
        parsed = pd.to_datetime(values.iloc[todo], format=date_format, errors="coerce", utc=True)
        years = parsed.dt.year
        # a year outside 1700..2199 (as fast_dates) is no candle's, and past 2262 no ns time
        parsed = parsed.where((years >= 1700) & (years < 2200)).dt.as_unit("ns")
        ok = parsed.notna().to_numpy()
        if date_format == "ISO8601":  # pandas also reads "2020-01" as 2020-01-01: another candle
            shaped = values.iloc[todo].astype(str).str.fullmatch(_ISO_SHAPE)
            ok = ok & shaped.to_numpy(dtype=bool)
        result[todo[ok]] = parsed[ok].astype("int64").to_numpy()
        form[todo[ok]] = number
        todo = todo[~ok]
    return result, form
