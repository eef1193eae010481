"""The bytes of a CDD body as rows: gzip, header, truncation, misshapen rows, the fast read.

File-level faults (gzip that cannot be read, HTML, no header, a cut-off last line) raise
``CDDFormatError``; a misshapen row (too many fields, or too few to hold every used column) or
a cell that is not a number only becomes a bad row of an otherwise sound file.
"""

from __future__ import annotations

import csv
import io
import re
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cdd.columns import ColumnMap
from cdd.errors import CDDFormatError
from cdd.fast_dates import iso_dates
from cdd.times import dates_to_ns

_HEADER_SEARCH_LINES = 5
_HTML = re.compile(rb"^\s*<|<html|<!doctype|<head|<body", re.IGNORECASE)
_GZIP_MAGIC = b"\x1f\x8b"
_CELL = rb'(?: *"[^"]*"|[^",]*)'  # a quoted cell (CDD writes no quote inside one), or none
_QUOTED_LINE = re.compile(_CELL + rb"(?:," + _CELL + rb")*\r?")


@dataclass(frozen=True)
class Body:
    """A body ready to read: ``data`` (BOM removed, unzipped), the header's offset and line."""

    data: bytes
    start: int
    header_line: int
    header: list[str]


def open_body(data: bytes, *, source: str, max_bytes: int | None) -> Body:
    """Unzip a gzip body, drop a BOM, refuse HTML, and find the header line."""
    if data[:2] == _GZIP_MAGIC:
        data = _gunzip(data, source=source, max_bytes=max_bytes)
    data = data.removeprefix(b"\xef\xbb\xbf")
    if not data or data.isspace():
        raise CDDFormatError(
            f"{source}: the body is empty; the download was cut short or the file is empty - "
            "download it again"
        )
    head = data[:4096]
    if _HTML.search(head):
        first = head.strip().split(b"\n", 1)[0][:80].decode("utf-8", "replace")
        raise CDDFormatError(
            f"{source} line 1: got an HTML page, not a CSV file (starts {first!r}); the series "
            "may not exist under this name or the site served an error or captcha page - check "
            "the URL, or download the CSV in a browser and pass it with --source"
        )
    offset = 0
    for number in range(1, _HEADER_SEARCH_LINES + 1):
        end = data.find(b"\n", offset)
        line = data[offset : len(data) if end < 0 else end]
        text = line.decode("utf-8", "replace").strip()
        fields = [field.strip().strip('"') for field in text.split(",")]
        if len(fields) >= 5 and _damaged_header(line, text):
            raise CDDFormatError(
                f"{source} line {number}: the header holds a NUL byte, a carriage return or "
                f"a quote inside a name (header has: {', '.join(fields)}); the file is damaged "
                "- download it again"
            )
        if len(fields) >= 5:  # a banner is one field; a header names time, prices, volumes
            return Body(data, offset, number, fields)
        if end < 0:
            break
        offset = end + 1
    raise CDDFormatError(
        f"{source} line 1: no CSV header (unix/date, open, high, low, close, volumes) in the "
        f"first {_HEADER_SEARCH_LINES} lines; this is not a CryptoDataDownload candle file - "
        "check the URL or --source"
    )


def _damaged_header(line: bytes, text: str) -> bool:
    """A NUL, a CR before the line end, whitespace other than leading spaces around a name, or
    a quote not around a whole name: the CSV reader would read other names than these
    (``date",symbol`` is not ``date``, ``Volume AD\\v`` not ``Volume AD``)."""
    if b"\x00" in line or b"\r" in line.removesuffix(b"\r"):
        return True
    raw = line.removesuffix(b"\r").decode("utf-8", "replace").split(",")
    if any(name.lstrip(" ") != name.strip() for name in raw):
        return True  # space after a name, or a tab or \v: the CSV reader keeps it in the name
    names = [name.strip() for name in text.split(",")]
    return any('"' in name and not _quoted(name) for name in names)


def _quoted(name: str) -> bool:
    return len(name) >= 2 and name[0] == name[-1] == '"' and '"' not in name[1:-1]


def _gunzip(data: bytes, *, source: str, max_bytes: int | None) -> bytes:
    """The content of a gzip body (at most ``max_bytes`` once unpacked)."""
    unpack = zlib.decompressobj(wbits=31)  # 31: a gzip header and trailer
    try:
        content = unpack.decompress(data, max_bytes or 0)
    except zlib.error as error:
        raise CDDFormatError(
            f"{source}: the body is gzip-compressed but cannot be unpacked ({error}); the "
            "download was cut short or the file is damaged - download it again"
        ) from None
    if unpack.unconsumed_tail:
        raise CDDFormatError(
            f"{source}: the gzip body unpacks to more than {max_bytes:,} bytes "
            "(CDDF_HTTP_MAX_BYTES); raise the limit if this file is genuine"
        )
    if not unpack.eof:
        raise CDDFormatError(
            f"{source}: the gzip body ends early (cut off after {len(data):,} bytes); "
            "download it again"
        )
    return content


@dataclass(frozen=True)
class LastLine:
    """The body's last non-blank line: where it starts, its fields and its neighbour's."""

    offset: int  # of its first byte; the header's offset when there are no rows
    fields: int
    previous_fields: int | None  # of the line before it, when that is a row
    ended: bool  # it has a line end

    def number(self, body: Body) -> int:
        """Its 1-based line number (counts the lines: call only when it is needed)."""
        return body.header_line + body.data.count(b"\n", body.start, self.offset)


def last_line(body: Body) -> LastLine:
    """The last non-blank line of ``body``."""
    data, start = body.data, body.start
    end = len(data)
    while end > start and data[end - 1 : end].isspace():
        end -= 1
    last = data.rfind(b"\n", start, end) + 1
    if last <= start:
        return LastLine(start, len(body.header), None, True)
    before = data.rfind(b"\n", start, last - 1) + 1
    previous = None if before <= start else data.count(b",", before, last - 1) + 1
    return LastLine(last, data.count(b",", last, end) + 1, previous, end < len(data))


def check_last_line(body: Body, needed: int, *, source: str) -> None:
    """A last line without the used columns, or without its line end and with fewer fields
    than the row before it, is cut off (a missing trailing ``tradecount`` is no cut)."""
    last = last_line(body)
    if last.offset == body.start:
        return  # only the header; reported as "no candle rows" later
    expected = needed
    if not last.ended:
        expected = max(
            needed, len(body.header) if last.previous_fields is None else last.previous_fields
        )
    if last.fields < expected:
        text = body.data[last.offset : last.offset + 80].decode("utf-8", "replace").strip()
        raise CDDFormatError(
            f"{source} line {last.number(body)}: the last line has {last.fields} of "
            f"{len(body.header)} fields ({text!r}); the file is truncated - download it again"
        )


def blank_misshapen_rows(
    body: Body, needed: int, *, force: bool = False
) -> tuple[Body, list[tuple[int, str]]]:
    """Blank out rows with too many fields, or too few for the used columns; say which.

    ``needed``: fields a row must have to hold every used column (a missing trailing
    ``tradecount`` is fine). Unless ``force``, a comma count that matches the lines (the
    common case) skips the slow search; a row with fewer fields that it lets through is read
    with empty cells and rejected for them.
    """
    data, start, fields = body.data, body.start, len(body.header)
    end = len(data)
    while end > start and data[end - 1 : end].isspace():
        end -= 1
    # a lone CR or a NUL would make the CSV reader split or join lines: cells would shift
    lone_returns = data.find(b"\r", start, end) >= 0 and data.count(
        b"\r", start, end
    ) != data.count(b"\r\n", start, end)
    commas = _every_line_has(data, start, end, fields - 1)
    if not force and commas and not lone_returns and data.find(b"\x00", start, end) < 0:
        return body, []
    bad: list[tuple[int, str]] = []
    for number, line in enumerate(data[start:end].split(b"\n"), start=body.header_line):
        text = line.decode("utf-8", "replace").removesuffix("\r")
        if "\r" in text or "\x00" in text:
            bad.append((number, "a carriage return or NUL byte inside the line (damaged)"))
            continue
        try:
            row = next(csv.reader([text]), [])
        except csv.Error:  # a field past the csv module's limit (128 KiB): no CDD cell is
            bad.append((number, f"a field longer than {csv.field_size_limit():,} characters"))
            continue
        blank = len(row) == 1 and not row[0].strip()  # a line of spaces is a blank line
        trailing_comma = len(row) == fields + 1 and row[-1] == ""  # read as no field
        if row and not blank and not trailing_comma and (len(row) > fields or len(row) < needed):
            bad.append(
                (
                    number,
                    f"{len(row)} fields where the header has {fields} (a number with a "
                    "thousands separator, or a cut or joined line?)",
                )
            )
    if not bad:
        return body, []
    lines = data[start:].split(b"\n")
    for number, _ in bad:
        lines[number - body.header_line] = b""
    return Body(data[:start] + b"\n".join(lines), start, body.header_line, body.header), bad


def _every_line_has(data: bytes, start: int, end: int, commas: int) -> bool:
    """Whether every line of ``data[start:end]`` holds exactly ``commas`` commas.

    Per line, not in total: pandas reads a row with one field too many as if the first were
    an index (``index_col=False`` drops the last), so an extra field beside a missing one
    elsewhere would shift a row's cells unseen.
    """
    body = np.frombuffer(data, dtype=np.uint8, count=end - start, offset=start)
    newlines = np.flatnonzero(body == ord("\n"))
    at = np.flatnonzero(body == ord(","))
    if len(at) != commas * (len(newlines) + 1):
        return False
    per_line = at.reshape(-1, commas)  # (lines, commas) when each line holds its share
    # each line's first comma after its start and last before its end: then all are its own
    ends = np.append(newlines, len(body))
    return bool((per_line[1:, 0] > newlines).all() and (per_line[:, -1] < ends).all())


def check_quotes(body: Body, *, source: str) -> None:
    """Each quote must wrap a whole cell: ``"7340"`` and ``"1,5"`` do; ``"7340`` (left open,
    the CSV reader would join the lines after it into one cell) and ``0"3:45`` do not."""
    if b'"' not in body.data:
        return
    for number, line in enumerate(body.data[body.start :].split(b"\n"), start=body.header_line):
        if b'"' in line and _QUOTED_LINE.fullmatch(line) is None:
            text = line[:80].decode("utf-8", "replace")
            raise CDDFormatError(
                f"{source} line {number}: a quote does not wrap a whole cell ({text!r}); the "
                "file is damaged - download it again"
            )


def _stream(data: bytes, start: int) -> io.BytesIO:
    """``data`` from offset ``start`` on, without copying it."""
    stream = io.BytesIO(data)
    stream.seek(start)
    return stream


def read_rows(body: Body, columns: ColumnMap) -> tuple[pd.DataFrame, dict[str, pd.Series]]:
    """The used columns: numbers as float64 (empty or NaN -> NaN), the time column as text.

    Also returns, per number column with cells that are no number, those cells' text (indexed
    like the frame); a fast read first, a slower text read only when a cell is not a number.
    """
    dtype: dict[str, object] = {name: "float64" for name in columns.numbers}
    if columns.unix is None:  # else read_dates reads it, faster
        dtype[columns.time] = "str"
    if columns.symbol is not None:
        dtype[columns.symbol] = "category"
    options = dict(
        skip_blank_lines=False,
        index_col=False,
        skipinitialspace=True,
        engine="c",
        encoding_errors="replace",  # a byte that is no UTF-8 makes its cell no number
    )
    try:
        frame = pd.read_csv(
            _stream(body.data, body.start), usecols=list(dtype), dtype=dtype, **options
        )  # type: ignore[call-overload]
        return frame, {}
    except ValueError:
        pass  # a cell that is no number: read as text, then find it
    text = {name: "str" for name in columns.numbers}
    frame = pd.read_csv(
        _stream(body.data, body.start), usecols=list(dtype), dtype={**dtype, **text}, **options
    )  # type: ignore[call-overload]
    not_numbers: dict[str, pd.Series] = {}
    for name in columns.numbers:
        cells = frame[name].str.strip()
        parsed = pd.to_numeric(cells, errors="coerce")
        bad = parsed.isna() & cells.notna() & (cells != "") & (cells.str.lower() != "nan")
        if bad.any():
            not_numbers[name] = cells[bad]
        frame[name] = parsed.astype("float64")
    return frame, not_numbers


def read_dates(body: Body, date: str, rows: int) -> tuple[np.ndarray, np.ndarray, pd.Series]:
    """Column ``date`` of every row: (UTC ns, form, text); the text only when read as such."""
    fields, column = len(body.header), body.header.index(date)
    fast = iso_dates(body.data, body.start, fields=fields, column=column)
    if fast is not None and len(fast) == rows:
        return fast, np.zeros(rows, dtype=np.int8), pd.Series([], dtype="str")
    text = pd.read_csv(
        _stream(body.data, body.start),
        usecols=[date],
        dtype="str",
        skip_blank_lines=False,
        index_col=False,
        engine="c",
        encoding_errors="replace",
    )[date]
    return *dates_to_ns(text), text


def used_fields(header: list[str], columns: ColumnMap) -> int:
    """How many leading fields a row needs to hold every column the parser reads."""
    used = {columns.unix, columns.date, columns.symbol, *columns.numbers} - {None}
    return max(index for index, name in enumerate(header) if name in used) + 1


def no_line_end(body: Body) -> bool:
    """True when the body's last line has no line end (a download cut inside it?)."""
    return not body.data.endswith((b"\n", b"\r"))


def as_lines(header_line: int, rows: int) -> np.ndarray:
    """The 1-based file line of each data row (blank lines counted)."""
    return header_line + 1 + np.arange(rows)
