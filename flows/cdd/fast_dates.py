"""Read a file's ISO date column straight from its bytes, for the unix/date cross-check.

Reading a million dates as Python strings (pandas) and parsing them doubled the parse time
of a minute file; this copies the ``YYYY-MM-DD HH:MM:SS`` (or ``YYYY-MM-DD``) cells out of the
bytes as fixed-width byte strings that numpy parses. Each line's date is found from its start
past its first ``column`` commas. It answers only for a regular body (no quotes, one date width,
every date valid); otherwise it returns None and the caller reads the column with pandas.

>>> body = b"unix,date,close\\n1577836800,2020-01-01 00:00:00,1\\n"
>>> iso_dates(body, 0, fields=3, column=1)
array([1577836800000000000])
"""

from __future__ import annotations

import warnings

import numpy as np

_FIELD_WIDTH = 24  # a field before the date (unix time: 10 to 16 digits) is shorter


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
    width = 19 if len(body) - begin[0] >= 19 and body[begin[0] + 10] == ord(" ") else 10
    if (begin + width >= line_ends).any() or (body[begin + width] != ord(",")).any():
        return None  # another width, or the date is the last field
    cells = np.empty((len(begin), width), dtype=np.uint8)  # (rows, width): the date cells
    for offset in range(width):
        cells[:, offset] = body[begin + offset]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seconds = cells.view(f"S{width}").ravel().astype("datetime64[s]")
    except ValueError:  # not a date, or a day the month does not have (2021-02-30)
        return None
    return seconds.astype(np.int64) * 1_000_000_000


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
