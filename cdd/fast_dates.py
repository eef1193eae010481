"""Read a file's ISO date column straight from its bytes, for the unix/date cross-check.

Reading a million dates as Python strings (pandas) and parsing them doubled the parse time
of a minute file; this reads the ``YYYY-MM-DD HH:MM:SS`` (or ``YYYY-MM-DD``) cells' digits
straight from the bytes and computes each instant arithmetically (days from the civil date).
Each line's date is found from its start past its first ``column`` commas; each cell's width
is its own (a file may change from 19- to 10-wide dates part-way). It answers only when every
cell has the exact shape (digits at the digit positions, ``-``, ``-``, `` ``, ``:``, ``:`` at
the separators, a comma after it) and is a real date and time of the years
1700..2199; otherwise it returns None and the caller reads the column with pandas. No byte
reaches a parser that it has not checked (numpy 2.4's cast of malformed ``S19`` cells to
``datetime64`` crashed the process: issue 24.1).

>>> body = b"unix,date,close\\n1577836800,2020-01-01 00:00:00,1\\n"
>>> iso_dates(body, 0, fields=3, column=1)
array([1577836800000000000])
"""

from __future__ import annotations

import numpy as np

_FIELD_WIDTH = 24  # a field before the date (unix time: 10 to 16 digits) is shorter
_DATE_DIGITS = [0, 1, 2, 3, 5, 6, 8, 9]  # of YYYY-MM-DD HH:MM:SS; separators at 4, 7, 10,
_TIME_DIGITS = [11, 12, 14, 15, 17, 18]  # 13 and 16
# years outside pandas' nanosecond range (1677..2262), or far from any candle, are left to
# the slow path, which decides what they are
_FIRST_YEAR, _LAST_YEAR = 1700, 2199
_MONTH_DAYS = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def iso_dates(data: bytes, start: int, *, fields: int, column: int) -> np.ndarray | None:
    """UTC ns of column ``column`` of every line after the header line at ``start``, or None."""
    end = len(data)
    while end > start and data[end - 1 : end].isspace():
        end -= 1
    if b'"' in data or column >= fields:
        return None
    body = np.frombuffer(data, dtype=np.uint8, count=end - start, offset=start)
    newlines = np.flatnonzero(body == ord("\n"))
    if len(newlines) == 0:
        return None
    line_starts = newlines + 1  # of the rows; the header is line 0
    line_ends = np.append(newlines[1:], len(body))
    begin = line_starts
    for _ in range(column):  # past the fields before the date: each at most _FIELD_WIDTH
        begin = _after_next_comma(body, begin, line_ends)
        if begin is None:
            return None
    return _cells_to_ns(body, begin, line_ends)


def _cells_to_ns(body: np.ndarray, begin: np.ndarray, line_ends: np.ndarray) -> np.ndarray | None:
    """UTC ns of the ISO date cell at each ``begin``; None unless every cell is a valid date
    (of 10 or 19 bytes, followed by a comma inside its line)."""
    if (begin + 10 >= line_ends).any():
        return None  # no room for a date and its comma: another shape, or the last field
    long = body[begin + 10] == ord(" ")  # YYYY-MM-DD HH:MM:SS, else YYYY-MM-DD
    width = np.where(long, 19, 10)
    if (begin + width >= line_ends).any() or (body[begin + width] != ord(",")).any():
        return None
    if begin[-1] + 19 > len(body):  # a short last cell: its unused time bytes lie past the body
        body = np.concatenate([body, np.zeros(19, dtype=np.uint8)])
    cells = np.lib.stride_tricks.sliding_window_view(body, 19)[begin]  # (rows, 19) bytes
    digits = cells - np.uint8(ord("0"))  # a byte below "0" wraps round to above 9
    shaped = (digits[:, _DATE_DIGITS] <= 9).all(axis=1) & (cells[:, 4] == ord("-"))
    shaped &= cells[:, 7] == ord("-")
    timed = (digits[:, _TIME_DIGITS] <= 9).all(axis=1) & (cells[:, 13] == ord(":"))
    shaped &= ~long | (timed & (cells[:, 16] == ord(":")))
    if not shaped.all():
        return None

    def number(first: int, count: int) -> np.ndarray:
        return digits[:, first : first + count].astype(np.int64) @ 10 ** np.arange(count)[::-1]

    year, month, day = number(0, 4), number(5, 2), number(8, 2)
    hour, minute, second = (np.where(long, number(at, 2), 0) for at in (11, 14, 17))
    valid = (year >= _FIRST_YEAR) & (year <= _LAST_YEAR) & (month >= 1) & (month <= 12)
    valid &= (day >= 1) & (day <= _days_in_month(year, np.clip(month, 1, 12)))
    valid &= (hour < 24) & (minute < 60) & (second < 60)
    if not valid.all():  # a day the month does not have (2021-02-30), 25:00, year 0001, ...
        return None
    seconds = _days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second
    return seconds * 1_000_000_000


def _days_in_month(year: np.ndarray, month: np.ndarray) -> np.ndarray:
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    return _MONTH_DAYS[month - 1] + (leap & (month == 2))


def _days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).

    >>> int(_days_from_civil(np.array([2000]), np.array([3]), np.array([1]))[0])
    11017
    """
    year = year - (month <= 2)  # a year that starts in March: the leap day ends it
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def _after_next_comma(
    body: np.ndarray, begin: np.ndarray, line_ends: np.ndarray
) -> np.ndarray | None:
    """Each line's position after the first comma at or after ``begin`` (within the line)."""
    after = np.empty_like(begin)
    todo, start = np.arange(len(begin)), begin
    for offset in range(_FIELD_WIDTH):  # most lines are done after the unix time's digits
        position = np.minimum(start + offset, len(body) - 1)
        comma = body[position] == ord(",")
        if not comma.any():
            continue
        after[todo[comma]] = position[comma] + 1
        todo, start = todo[~comma], start[~comma]
        if len(todo) == 0:
            return None if (after > line_ends).any() else after
    return None
