"""Candle open times from a CDD ``unix`` or ``date`` column, as int64 UTC nanoseconds.

>>> seconds_and_ms = np.array([1758672000.0, 1758585600000.0])
>>> unix_to_ns(seconds_and_ms, np.array([3, 4]), source="f.csv", column="unix")
array([1758672000000000000, 1758585600000000000])
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from flows.cdd.errors import CDDFormatError

# plausible candle times: 2000-01-01 .. 2100-01-01, in seconds
_FIRST_SECOND = 946_684_800
_LAST_SECOND = 4_102_444_800
# the date forms CDD has written: ISO (2025-09-24, 2025-09-24 00:00:00) and 12-hour hourly forms
DATE_FORMATS = ("ISO8601", "%Y-%m-%d %I-%p", "%Y-%m-%d %I:%M %p", "%Y-%m-%d %I:%M:%S %p")


def unix_to_ns(values: np.ndarray, lines: np.ndarray, *, source: str, column: str) -> np.ndarray:
    """Unix times in seconds, milliseconds or microseconds (mixed per row) -> UTC ns."""
    bad = values != np.floor(values)
    if bad.any():
        row = int(np.argmax(bad))
        raise CDDFormatError(
            f"{source} line {lines[row]}: {column} {values[row]!r} is not a whole unix time; "
            "fix the row or download the file again"
        )
    # a unix time in seconds has at most 10 digits today; ms 13, us 16
    factor = np.where(values >= 1e14, 1_000, np.where(values >= 1e11, 1_000_000, 1_000_000_000))
    seconds = values * factor / 1e9
    bad = (seconds < _FIRST_SECOND) | (seconds > _LAST_SECOND)
    if bad.any():
        row = int(np.argmax(bad))
        raise CDDFormatError(
            f"{source} line {lines[row]}: {column} {values[row]:.0f} is not a unix time between "
            "2000 and 2100 in seconds or milliseconds; fix the row or download the file again"
        )
    return values.astype(np.int64) * factor.astype(np.int64)


def dates_to_ns(values: pd.Series, lines: np.ndarray, *, source: str, column: str) -> np.ndarray:
    """Dates such as ``2025-09-24``, ``2025-09-24 00:00:00`` or ``2018-05-15 11-PM`` -> UTC ns."""
    result = np.full(len(values), np.iinfo(np.int64).min, dtype=np.int64)
    todo = np.arange(len(values))
    for date_format in DATE_FORMATS:
        parsed = pd.to_datetime(
            values.iloc[todo], format=date_format, errors="coerce", utc=True
        ).dt.as_unit("ns")
        ok = parsed.notna().to_numpy()
        result[todo[ok]] = parsed[ok].astype("int64").to_numpy()
        todo = todo[~ok]
        if len(todo) == 0:
            return result
    row = int(todo[0])
    raise CDDFormatError(
        f"{source} line {lines[row]}: {column} {values.iloc[row]!r} is not a date of the forms "
        "YYYY-MM-DD, YYYY-MM-DD HH:MM:SS or YYYY-MM-DD HH-AM; fix the row or download the file "
        "again"
    )
