"""A slow, obviously correct CryptoDataDownload parser: the rules ``parse_cdd`` must follow.

It reads the file line by line with the ``csv`` module and plain Python numbers and dates,
and answers what ``cdd.parser.parse_cdd`` must answer: a file-level error, or the
candles and the rejected lines. The property tests (``test_parser_properties.py``) and
``bench/fuzz_parser.py`` hold the parser to it. The column mapping by meaning is taken from
``cdd.columns.map_columns`` (its rules are tested in ``test_parser.py``).

The rules, in the order they are applied:

File-level errors (``CDDFormatError``; nothing is stored):

- ``gzip``: a gzip body that cannot be unpacked (or unpacks past ``max_bytes``).
- ``empty``: nothing but whitespace (after a UTF-8 BOM is dropped).
- ``html``: the first 4 KiB start with ``<`` or hold ``<html``, ``<!doctype``, ``<head``,
  ``<body`` (any case).
- ``header``: none of the first 5 lines has 5 or more comma-separated fields, or that line
  holds a NUL byte, a carriage return before its line end, whitespace around a name other
  than leading spaces, or a quote that does not wrap a whole name.
- ``columns``: the header has no time (unix or date), open/high/low/close, base and quote
  volume column, or two columns claim one field.
- ``truncated``: the last non-blank line has fewer fields (commas + 1) than the used columns
  need; or it has no line end and fewer fields than the line before it (the header's count
  when it is the first row).
- ``quote``: a line (the header or a row) has a quote that does not open or close a whole
  cell (``"1,5"`` does; ``"7340`` left open and ``0"3:45`` do not).
- ``csv``: the rows cannot be read as CSV at all.
- ``no rows``: the header is followed by no row (only blank lines).
- ``spacing``: the candle times of the readable rows (a time read, not all-zero), sorted and
  without repeats: more than half of the steps are shorter than the period (a finer
  timeframe's file), or fewer than half are the period and the most common step (the
  shortest of equals) is another one, a multiple of a coarser timeframe's period.
- ``cut``: the body has no final line end and its last row is rejected, or its quote / base
  volume is outside [low / 3, high x 3]: a download cut inside the last field.
- ``limit``: more rows are rejected than ``max(limits.rows, int(limits.share x rows read))``
  (rows read: every non-blank row), or than half the rows that are not all-zero.

Rows: a blank line (or spaces only), or a row whose used cells (the numbers, the symbol, and
the date when there is no unix column) are all empty or NaN, is skipped unnoticed. A row
whose six values are all 0 (the pair was not trading) is skipped and counted. Any other row
is either a candle or rejected with the first of these reasons (its class in brackets):

1. [cell] it holds a NUL byte or a carriage return before its line end (such a line is
   judged only when followed by more than whitespace); a field of it is longer than the csv
   module's limit (128 KiB); it has more fields than the header
   (one trailing empty field is none), or too few to hold every used column; a
   number cell is no number (``+1.5e3``, ``inf`` and the pandas NA words are numbers or
   missing; ``1,5``, ``0x1``, ``1_0`` are not); a value cell is empty, NaN or infinite.
2. [time] the unix time is empty, not whole, or not within 2000..2100 read as seconds
   (< 1e11), milliseconds (< 1e14) or microseconds; without a unix column, the date is none
   of the forms ``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM:SS`` (ISO 8601), ``YYYY-MM-DD HH-AM``,
   ``YYYY-MM-DD HH:MM AM``, ``YYYY-MM-DD HH:MM:SS AM`` in a year 1700..2199.
3. [time] with both columns: the date is unreadable, or names another candle than the unix
   time (another period of the timeframe), unless exactly 4 hours off (Binance's Sept 2017
   hourly rows); the unix time is trusted, another time of its candle is a time mismatch.
4. [symbol] its symbol (letters and digits, upper case) is not the series' pair.
5. [price] a price <= 0; low above open, close or high, or open or close above high (beyond
   a relative 1e-9 of high); a negative volume.
6. [time] the time is not on the timeframe's grid, or more than a minute after ``now``.
7. [volume] quote / base volume (both > 0), after swapping back the volumes of a row where
   quote / base is outside [low / 2, high x 2] and base / quote inside it, is outside
   [low / 10, high x 10].
8. [conflict] several sound rows share a candle time: the newest format generation's copies
   (generation: +1 for a millisecond unix time, +1 for an ISO date) must be identical, and
   one of them is kept (the others are collapsed or superseded); if they differ, every row
   of that time is rejected.

A candle's ``is_final`` is ``time + period <= now``.

Where the parser once did otherwise, the rule chosen keeps a stored candle from being wrong
(issue 24.2): a short ISO date (``2020-01``) is no date, not another candle; a NUL or a lone
CR rejects its line, not the lines after it; a quote left open, or a damaged header, fails the
file rather than letting the CSV reader join or rename columns; the field count is judged per
line, so an extra field beside a missing one cannot shift cells unseen.
"""

from __future__ import annotations

import csv
import functools
import gzip
import math
import re
import zlib
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd

from cdd import parser as parser_module
from cdd import reading
from cdd.columns import ColumnMap, map_columns
from cdd.errors import CDDFormatError
from cdd.rejects import RejectLimits
from cdd.series_key import TIMEFRAMES, SeriesKey

NS = 1_000_000_000
FIRST_SECOND, LAST_SECOND = 946_684_800, 4_102_444_800
KNOWN_OFFSET = 4 * 3_600 * NS  # Binance's Sept 2017 hourly dates
CLOCK_SKEW = 60 * NS
PRICE_TOLERANCE = 1e-9
SWAP_BAND, VOLUME_FACTOR, CUT_LINE_FACTOR = 2.0, 10.0, 3.0
HTML = re.compile(rb"^\s*<|<html|<!doctype|<head|<body", re.IGNORECASE)
NUMBER = re.compile(
    r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(inf|infinity)", re.IGNORECASE
)
# pandas' default NA words: a cell holding one is missing
NA_WORDS = {
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
}  # fmt: skip
TWELVE_HOUR_FORMS = ("%Y-%m-%d %I-%p", "%Y-%m-%d %I:%M %p", "%Y-%m-%d %I:%M:%S %p")
ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}([ T][0-9]{2}:[0-9]{2}:[0-9]{2})?")
NOT_A_NUMBER = object()


class ReferenceFileError(Exception):
    """A file-level error; ``args[0]`` is its class (``"truncated"``, ``"limit"``, ...)."""


@dataclass(frozen=True)
class Row:
    """One data row as the reference read it."""

    line: int
    values: tuple[float, ...]  # open, high, low, close, volume_base, volume_quote (NaN: bad)
    time: int | None  # UTC ns, None when unreadable
    generation: int
    reason: str | None = None  # reject class, None for a sound row
    misshapen: bool = False  # too many or too few fields: never read as a row


@dataclass
class Expected:
    """What the parser must answer for one file."""

    error: str | None = None
    candles: dict[int, tuple[tuple[float, ...], bool]] = field(default_factory=dict)
    rejects: dict[int, str] = field(default_factory=dict)  # line -> class
    zero_rows: int = 0


def reference_parse(
    data: bytes,
    key: SeriesKey,
    now_ns: int,
    limits: RejectLimits | None = None,
    max_bytes: int | None = None,
) -> Expected:
    """The rules above applied to ``data``; a file-level error comes back as ``error``."""
    try:
        return _parse(data, key, now_ns, limits or RejectLimits(), max_bytes)
    except ReferenceFileError as error:
        return Expected(error=error.args[0])


def _parse(
    data: bytes, key: SeriesKey, now: int, limits: RejectLimits, max_bytes: int | None
) -> Expected:
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            raise ReferenceFileError("gzip") from None
        if max_bytes is not None and len(data) > max_bytes:
            raise ReferenceFileError("gzip")
    data = data.removeprefix(b"\xef\xbb\xbf")
    if not data.strip():
        raise ReferenceFileError("empty")
    if HTML.search(data[:4096]):
        raise ReferenceFileError("html")
    lines = data.split(b"\n")
    header_at, header = _header(lines)
    try:
        columns = map_columns(header, key, source="reference", line=header_at + 1)
    except CDDFormatError:
        raise ReferenceFileError("columns") from None
    used = [columns.unix, columns.date, columns.symbol, *columns.values]
    needed = max(i for i, name in enumerate(header) if name in used) + 1
    last_line = _check_last_line(lines, header_at, len(header), needed)
    if any(b'"' in line and not _quotes_wrap_cells(line) for line in lines[header_at:]):
        raise ReferenceFileError("quote")
    period = int(key.period.value)
    rows: list[Row] = []
    inner_return = [
        b"\r" in line.removesuffix(b"\r") or b"\x00" in line for line in data.rstrip().split(b"\n")
    ]
    for index in range(header_at + 1, len(lines)):
        if index < len(inner_return) and inner_return[index]:
            rows.append(Row(index + 1, (math.nan,) * 6, None, 0, "cell", misshapen=True))
            continue
        row = _row(lines[index], index + 1, header, columns, needed, key, now, period)
        if row is not None:
            rows.append(row)
    if not rows:
        raise ReferenceFileError("no rows")
    zero = [r for r in rows if r.values == (0.0,) * 6]
    rows = [r for r in rows if r.values != (0.0,) * 6]
    _check_spacing(sorted(r.time for r in rows if r.time is not None), key)
    if not data.endswith((b"\n", b"\r")):
        cut = [r for r in rows if r.line == last_line and not r.misshapen]
        if cut and (cut[0].reason or _ratio_outside(cut[0].values, CUT_LINE_FACTOR)):
            raise ReferenceFileError("cut")
    rows_read = len(rows) + len(zero)
    rows = _resolve_duplicates(rows)
    rejected = {r.line: r.reason for r in rows if r.reason is not None}
    allowed = max(limits.rows, int(limits.share * rows_read))
    if len(rejected) > min(allowed, (rows_read - len(zero)) // 2):
        raise ReferenceFileError("limit")
    candles = {
        r.time: (r.values, r.time + period <= now)
        for r in rows
        if r.reason is None and r.time is not None
    }
    return Expected(candles=candles, rejects=rejected, zero_rows=len(zero))


def _quotes_wrap_cells(line: bytes) -> bool:
    """Whether each quote of ``line`` opens or closes a whole cell (spaces may lead)."""
    cell, quoted, closed = b"", False, False
    for byte in line.removesuffix(b"\r") + b",":
        char = bytes([byte])
        if quoted:
            quoted = char != b'"'
            closed = not quoted
        elif char == b",":
            cell, closed = b"", False
        elif closed or (char == b'"' and cell.strip(b" ")):
            return False  # after a closing quote, or a quote inside an unquoted cell
        elif char == b'"':
            quoted = True
        else:
            cell += char
    return not quoted


def _header(lines: list[bytes]) -> tuple[int, list[str]]:
    for index, line in enumerate(lines[:5]):
        text = line.decode("utf-8", "replace").strip()
        fields = [cell.strip().strip('"') for cell in text.split(",")]
        if len(fields) >= 5:
            if b"\x00" in line or b"\r" in line.removesuffix(b"\r"):
                raise ReferenceFileError("header")
            names = line.removesuffix(b"\r").decode("utf-8", "replace").split(",")
            if any(name.lstrip(" ") != name.strip() for name in names):
                raise ReferenceFileError("header")
            for name in text.split(","):
                name = name.strip()
                if '"' in name and not (
                    len(name) >= 2 and name[0] == name[-1] == '"' and '"' not in name[1:-1]
                ):
                    raise ReferenceFileError("header")
            return index, fields
    raise ReferenceFileError("header")


def _check_last_line(lines: list[bytes], header_at: int, fields: int, needed: int) -> int:
    """The last non-blank line must hold the used columns; unended, as many as the one before.

    Returns its 1-based line number.
    """
    text = b"\n".join(lines[header_at:]).rstrip()  # rstrip: bytes.isspace's whitespace
    parts = text.split(b"\n")
    if len(parts) == 1:
        return header_at + 1  # only the header
    last = parts[-1]
    ended = len(text) < len(b"\n".join(lines[header_at:]))
    expected = needed
    if not ended:
        before = fields if len(parts) == 2 else parts[-2].count(b",") + 1
        expected = max(needed, before)
    if last.count(b",") + 1 < expected:
        raise ReferenceFileError("truncated")
    return header_at + len(parts)


def _cell(text: str) -> float | None | object:
    """A number cell: its float, None when missing, NOT_A_NUMBER otherwise."""
    text = text.strip()
    if text in NA_WORDS:
        return None
    if NUMBER.fullmatch(text) is None:
        return NOT_A_NUMBER
    return float(text)


def _row(
    raw: bytes,
    line: int,
    header: list[str],
    columns: ColumnMap,
    needed: int,
    key: SeriesKey,
    now: int,
    period: int,
) -> Row | None:
    """The row of one line, None when the line is blank or every used cell is empty."""
    text = raw.decode("utf-8", "replace").removesuffix("\r")
    if not text.strip():
        return None  # blank, or only spaces
    try:
        cells = next(csv.reader([text], skipinitialspace=True))
    except csv.Error:  # a field longer than csv.field_size_limit(): a misshapen row
        return Row(line, (math.nan,) * 6, None, 0, "cell", misshapen=True)
    if len(cells) == len(header) + 1 and cells[-1] == "":
        cells = cells[:-1]  # a trailing comma
    if len(cells) > len(header) or len(cells) < needed:
        return Row(line, (math.nan,) * 6, None, 0, "cell", misshapen=True)
    cell = dict(zip(header, cells, strict=False))
    numbers = {name: _cell(cell.get(name, "")) for name in _numbers(columns)}
    symbol = cell.get(columns.symbol or "", "").strip() or None
    date = cell.get(columns.date or "", "").strip()
    if columns.unix is None and date in NA_WORDS:
        date = ""
    if all(v is None for v in numbers.values()) and symbol in (None, *NA_WORDS):
        if columns.unix is not None or not date:
            return None  # every used cell empty: read as a blank line
    values = tuple(
        v if isinstance(v, float) else math.nan for v in (numbers[n] for n in columns.values)
    )
    date_ns = _date_ns(date) if columns.date is not None else None
    generation = int(date_ns is not None and date_ns[1])
    unix = numbers.get(columns.unix) if columns.unix is not None else None
    time = None
    if columns.unix is not None and isinstance(unix, float):
        time = _unix_ns(unix)
        generation += time is not None and abs(unix) >= 1e11
    elif columns.unix is None and date_ns is not None:
        time = date_ns[0]
    reason = _reason(numbers, values, unix, time, date_ns, symbol, columns, key, now, period)
    return Row(line, _unswapped(values), time, generation, reason)


def _numbers(columns: ColumnMap) -> list[str]:
    return ([columns.unix] if columns.unix is not None else []) + columns.values


def _reason(numbers, values, unix, time, date_ns, symbol, columns, key, now, period):
    """The first rule (1-7 of the module docstring) the row breaks, or None."""
    if values == (0.0,) * 6:
        return None  # skipped, never rejected
    if any(v is NOT_A_NUMBER for v in numbers.values()):
        return "cell"
    if not all(math.isfinite(v) for v in values):
        return "cell"
    if time is None:
        return "time"
    if columns.unix is not None and columns.date is not None:
        if date_ns is None or not (
            date_ns[0] // period == time // period or abs(date_ns[0] - time) == KNOWN_OFFSET
        ):
            return "time"
    if symbol is not None and symbol not in NA_WORDS:
        if "".join(c for c in symbol.upper() if c.isalnum()) != key.pair:
            return "symbol"
    if _price_fault(values):
        return "price"
    if time % period != 0 or time > now + CLOCK_SKEW:
        return "time"
    if _ratio_outside(_unswapped(values), VOLUME_FACTOR):
        return "volume"
    return None


def _unix_ns(unix: float) -> int | None:
    """A whole unix time in s, ms or us within 2000..2100 as ns; None otherwise."""
    if not math.isfinite(unix) or unix != math.floor(unix):
        return None
    factor = 1_000 if unix >= 1e14 else 1_000_000 if unix >= 1e11 else NS
    if not FIRST_SECOND <= unix * factor / NS <= LAST_SECOND:
        return None
    return int(unix) * factor


def _date_ns(text: str) -> tuple[int, bool] | None:
    """(UTC ns, is ISO) of a date cell in one of the known forms of a year 1700..2199."""
    found = _date(text)
    if found is None or not -8_520_336_000 * NS <= found[0] < 7_258_118_400 * NS:
        return None
    return found


def _date(text: str) -> tuple[int, bool] | None:
    if ISO_DATE.fullmatch(text):
        try:
            stamp = datetime.fromisoformat(text).replace(tzinfo=UTC)
        except ValueError:
            return None
        return int(stamp.timestamp()) * NS, True
    for form in TWELVE_HOUR_FORMS:
        try:
            stamp = datetime.strptime(text, form).replace(tzinfo=UTC)
        except ValueError:
            continue
        return int(stamp.timestamp()) * NS, False
    return None


def _price_fault(values: tuple[float, ...]) -> bool:
    o, h, low, c, base, quote = values
    slack = abs(h) * PRICE_TOLERANCE
    if min(o, h, low, c) <= 0 or base < 0 or quote < 0:
        return True
    return low > h + slack or low > o + slack or low > c + slack or o > h + slack or c > h + slack


def _unswapped(values: tuple[float, ...]) -> tuple[float, ...]:
    """The values with the volumes swapped back when the row's volumes are swapped."""
    o, h, low, c, base, quote = values
    if base > 0 and quote > 0:
        lo, hi = low / SWAP_BAND, h * SWAP_BAND
        price, inverse = quote / base, base / quote
        if not lo <= price <= hi and lo <= inverse <= hi:
            return (o, h, low, c, quote, base)
    return values


def _ratio_outside(values: tuple[float, ...], factor: float) -> bool:
    _, h, low, _, base, quote = values
    if not (base > 0 and quote > 0):
        return False
    price = quote / base
    return price < low / factor or price > h * factor


def _check_spacing(times: list[int], key: SeriesKey) -> None:
    """Holes are fine; times spaced like a coarser timeframe's candles are another file."""
    period = int(key.period.value)
    steps = [b - a for a, b in zip(times, times[1:], strict=False) if b != a]
    if not steps:
        return
    if sum(s < period for s in steps) / len(steps) > 0.5:
        raise ReferenceFileError("spacing")  # a finer timeframe's file
    if sum(s == period for s in steps) / len(steps) >= 0.5:
        return
    counts: dict[int, int] = {}
    for step in steps:
        counts[step] = counts.get(step, 0) + 1
    common = min(counts, key=lambda step: (-counts[step], step))
    coarser = [int(p.value) for p in TIMEFRAMES.values() if p.value > period]
    if common != period and any(common % p == 0 for p in coarser):
        raise ReferenceFileError("spacing")


def _resolve_duplicates(rows: list[Row]) -> list[Row]:
    """Rows of one time: the newest generation's identical copies keep one; else a conflict."""
    by_time: dict[int, list[Row]] = {}
    for row in rows:
        if row.reason is None and row.time is not None:
            by_time.setdefault(row.time, []).append(row)
    drop, conflict = set(), set()
    for group in by_time.values():
        newest = max(r.generation for r in group)
        copies = [r for r in group if r.generation == newest]
        if any(r.values != copies[0].values for r in copies):
            conflict.update(r.line for r in group)
        else:
            drop.update(r.line for r in group if r is not copies[0])
    out = []
    for row in rows:
        if row.line in conflict:
            out.append(Row(row.line, row.values, row.time, row.generation, "conflict"))
        elif row.line not in drop:
            out.append(row)
    return out


# the parser's messages by class: a reject's reason, a CDDFormatError's text
REJECT_CLASSES = (
    ("a carriage return or NUL byte inside", "cell"),
    ("a field longer than", "cell"),
    ("fields where the header has", "cell"),
    ("not a number", "cell"),
    ("(NaN or missing)", "cell"),
    ("is empty", "time"),
    ("whole unix time", "time"),
    ("is not a date of the forms", "time"),
    ("the row is ambiguous", "time"),
    ("is not the start of a", "time"),
    ("is in the future", "time"),
    ("symbol", "symbol"),
    ("prices must be positive", "price"),
    ("is below low", "price"),
    ("is above high", "price"),
    ("volumes must not be negative", "price"),
    ("quote volume", "volume"),
    ("different candles for", "conflict"),
)
ERROR_CLASSES = (
    ("gzip", "gzip"),
    ("the body is empty", "empty"),
    ("HTML page", "html"),
    ("no CSV header", "header"),
    ("the header holds a NUL byte, a carriage return or a quote", "header"),
    ("missing column", "columns"),
    ("both look like", "columns"),
    ("the file is truncated", "truncated"),
    ("not a readable CSV", "csv"),
    ("a quote does not wrap a whole cell", "quote"),
    ("followed by no candle rows", "no rows"),
    ("a file of another timeframe", "spacing"),
    ("the last line has no line end", "cut"),
    ("rows are bad", "limit"),
)


def message_class(message: str, classes: tuple[tuple[str, str], ...]) -> str:
    """The class of a parser message; ``unknown: <message>`` when none matches."""
    return next((name for text, name in classes if text in message), f"unknown: {message}")


def differences(expected: Expected, parsed: Any, error: Exception | None) -> list[str]:
    """How the parser's answer (``parsed`` or the ``error`` it raised) differs from ``expected``."""
    if error is not None:
        got = message_class(str(error), ERROR_CLASSES)
        if expected.error is None:
            return [f"the parser failed the file ({got}: {error}) where the reference stores it"]
        return (
            [] if got == expected.error else [f"error {got} ({error}), expected {expected.error}"]
        )
    if expected.error is not None:
        return [f"the parser stored the file where the reference fails it ({expected.error})"]
    found = []
    rejects = {r.line: message_class(r.reason, REJECT_CLASSES) for r in parsed.report.rejects}
    if rejects != expected.rejects:
        wrong = {
            line: (rejects.get(line), expected.rejects.get(line))
            for line in rejects.keys() | expected.rejects.keys()
            if rejects.get(line) != expected.rejects.get(line)
        }
        found.append(
            f"rejected lines differ, line: (parser, reference): {dict(sorted(wrong.items()))}"
        )
    candles = parsed.candles
    times = candles.index.as_unit("ns").asi8.tolist()
    if times != sorted(expected.candles):
        extra = sorted(set(times) - set(expected.candles))[:5]
        missing = sorted(set(expected.candles) - set(times))[:5]
        found.append(f"candle times differ: parser only {extra}, reference only {missing}")
        return found
    values = candles[list(CANDLE_FIELDS)].to_numpy()
    for i, time in enumerate(times):
        want, final = expected.candles[time]
        if (
            not np.allclose(values[i], want, rtol=1e-12, atol=0)
            or final != candles.is_final.iloc[i]
        ):
            found.append(
                f"candle {time}: parser {values[i].tolist()} final={candles.is_final.iloc[i]}, "
                f"reference {list(want)} final={final}"
            )
            break
    return found


CANDLE_FIELDS = ("open", "high", "low", "close", "volume_base", "volume_quote")


def _no_fast_dates(*args: Any, **kwargs: Any) -> None:
    return None  # the caller then reads the date column with pandas


# the parser's fast paths, each switched off in turn: name -> what replaces which function
FAST_PATHS: dict[str, dict[str, Any]] = {
    "default": {},
    "no fast_dates": {"iso_dates": _no_fast_dates},
    "row search": {
        "blank_misshapen_rows": functools.partial(reading.blank_misshapen_rows, force=True)
    },
}


def parse_with(
    data: bytes, key: SeriesKey, now: pd.Timestamp, path: str = "default"
) -> tuple[Any, CDDFormatError | None]:
    """``parse_cdd`` on one of FAST_PATHS: (parsed, None) or (None, the CDDFormatError)."""
    with ExitStack() as stack:
        for name, replacement in FAST_PATHS[path].items():
            module = reading if name == "iso_dates" else parser_module
            stack.enter_context(mock.patch.object(module, name, replacement))
        try:
            return parser_module.parse_cdd(data, source="fuzz.csv", key=key, now=now), None
        except CDDFormatError as error:
            return None, error
