"""Parse any CryptoDataDownload candle file generation into the candles frame.

>>> key = SeriesKey.parse("Bitstamp_BTCUSD_d")
>>> parsed = parse_cdd(body, source="Bitstamp_BTCUSD_d.csv", key=key)
>>> parsed.candles.columns.tolist()
['open', 'high', 'low', 'close', 'volume_base', 'volume_quote', 'is_final']
>>> parsed.report.swapped_volume_rows
1180

Columns are found by meaning (see ``flows.cdd.columns``); rows may be newest- or oldest-first;
every problem raises ``CDDFormatError`` naming the source, the 1-based line and the fix.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from db.series_key import SeriesKey
from flows.cdd.columns import ColumnMap, map_columns
from flows.cdd.errors import CDDFormatError
from flows.cdd.times import dates_to_ns, unix_to_ns
from flows.cdd.validate import check_prices, check_times, collapse_duplicates, fix_swapped_volumes

CANDLE_COLUMNS = ["open", "high", "low", "close", "volume_base", "volume_quote"]
_HEADER_SEARCH_LINES = 5
_HTML = re.compile(rb"^\s*<|<html|<!doctype|<head|<body", re.IGNORECASE)


@dataclass(frozen=True)
class ParseReport:
    """What the parser saw and fixed in one file."""

    source: str
    rows_read: int
    candles: int
    duplicates_collapsed: int
    gaps: int  # missing candles between the first and the last
    swapped_volume_rows: int
    partial_rows: int
    first: pd.Timestamp | None
    last: pd.Timestamp | None
    newest_first: bool


@dataclass(frozen=True)
class ParsedCandles:
    candles: pd.DataFrame
    report: ParseReport


def parse_cdd(
    data: bytes, *, source: str, key: SeriesKey, now: pd.Timestamp | None = None
) -> ParsedCandles:
    """Validate ``data`` (a CDD CSV body) and return its candles, oldest first.

    ``now`` (default: the current time) decides which candle is still open (``is_final``
    false) and which rows lie in the future.
    """
    now = _utc_now(now)
    data, start, header_line, header_fields = _split_header(data, source=source)
    columns = map_columns(header_fields, key, source=source, line=header_line)
    _check_last_line(data, start, header_line, len(header_fields), source=source)
    raw = _read_rows(data, start, columns, header_line, source=source)
    lines = header_line + 1 + np.arange(len(raw))
    blank = raw.isna().all(axis=1).to_numpy()
    _check_field_counts(
        data, start, len(header_fields), len(raw) - int(blank.sum()), header_line, source=source
    )

    numeric = [columns.open, columns.high, columns.low, columns.close]
    numeric += [columns.volume_base, columns.volume_quote]
    if blank.any():
        raw, lines = raw[~blank], lines[~blank]
    if raw.empty:
        raise CDDFormatError(
            f"{source} line {header_line}: the header is followed by no candle rows; "
            "download the file again or check --source"
        )
    values = np.column_stack([_finite(raw, name, lines, source=source) for name in numeric])
    if columns.symbol is not None:
        _check_symbol(raw[columns.symbol], lines, key, source=source)
    times = _candle_times(raw, columns, lines, source=source)
    rows_read = len(times)

    check_prices(values, lines, source=source)
    period = int(key.period.value)
    check_times(times, lines, period, now, timeframe=key.timeframe, source=source)

    newest_first, order = _oldest_first(times)
    times, values, lines = times[order], values[order], lines[order]
    times, values, lines, collapsed = collapse_duplicates(times, values, lines, source=source)
    values, swapped = fix_swapped_volumes(values)

    steps = np.diff(times) // period
    is_final = times + period <= now.value
    # microseconds, as db.candles.load_candles returns them (CDD times are whole seconds)
    index = pd.DatetimeIndex(pd.to_datetime(times, unit="ns", utc=True), name="time").as_unit("us")
    candles = pd.DataFrame(
        {name: values[:, i] for i, name in enumerate(CANDLE_COLUMNS)}, index=index
    )
    candles["is_final"] = is_final
    report = ParseReport(
        source=source,
        rows_read=rows_read,
        candles=len(candles),
        duplicates_collapsed=collapsed,
        gaps=int((steps - 1).sum()),
        swapped_volume_rows=swapped,
        partial_rows=int((~is_final).sum()),
        first=index[0],
        last=index[-1],
        newest_first=newest_first,
    )
    return ParsedCandles(candles=candles, report=report)


def _candle_times(
    raw: pd.DataFrame, columns: ColumnMap, lines: np.ndarray, *, source: str
) -> np.ndarray:
    """Each row's open time (int64 UTC ns) from the unix column, else the date column."""
    if columns.unix is not None:
        unix = _finite(raw, columns.unix, lines, source=source)
        return unix_to_ns(unix, lines, source=source, column=columns.unix)
    dates = raw[columns.time]
    missing = dates.isna().to_numpy()
    if missing.any():
        line = lines[int(np.argmax(missing))]
        raise CDDFormatError(
            f"{source} line {line}: no value in column {columns.time!r}; fix the row or "
            "download the file again"
        )
    return dates_to_ns(dates, lines, source=source, column=columns.time)


def _oldest_first(times: np.ndarray) -> tuple[bool, slice | np.ndarray]:
    """Whether the file is newest-first, and the row order that makes it oldest-first."""
    diffs = np.diff(times)
    if len(times) > 1 and (diffs <= 0).all() and (diffs < 0).any():
        return True, slice(None, None, -1)
    if (diffs >= 0).all():
        return False, slice(None)
    return False, np.argsort(times, kind="stable")


def _utc_now(now: pd.Timestamp | None) -> pd.Timestamp:
    stamp = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    if stamp.tzinfo is None:
        raise ValueError(f"now={now!r} must be tz-aware (UTC), e.g. pd.Timestamp(..., tz='UTC')")
    return stamp.tz_convert("UTC").as_unit("ns")


def _split_header(data: bytes, *, source: str) -> tuple[bytes, int, int, list[str]]:
    """``data`` without a BOM, the header's offset, its 1-based line and its fields."""
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
        if len(fields) >= 5:  # a banner is one field; a header names time, prices, volumes
            return data, offset, number, fields
        if end < 0:
            break
        offset = end + 1
    raise CDDFormatError(
        f"{source} line 1: no CSV header (unix/date, open, high, low, close, volumes) in the "
        f"first {_HEADER_SEARCH_LINES} lines; this is not a CryptoDataDownload candle file - "
        "check the URL or --source"
    )


def _check_last_line(
    data: bytes, start: int, header_line: int, fields: int, *, source: str
) -> None:
    """A last line with fewer fields than the header means the body was cut short."""
    end = len(data)
    while end > start and data[end - 1 : end].isspace():
        end -= 1
    last = data.rfind(b"\n", start, end) + 1
    if last <= start:
        return  # only the header; reported as "no candle rows" later
    found = data.count(b",", last, end) + 1
    if found < fields:
        line = header_line + data.count(b"\n", start, last)
        text = data[last : min(end, last + 80)].decode("utf-8", "replace")
        raise CDDFormatError(
            f"{source} line {line}: the last line has {found} of {fields} fields ({text!r}); "
            "the file is truncated - download it again"
        )


def _check_field_counts(
    data: bytes, start: int, fields: int, rows: int, header_line: int, *, source: str
) -> None:
    """Every row has the header's number of fields (a comma count, then a slow search)."""
    if data.count(b",", start) == (fields - 1) * (rows + 1):
        return
    error = _wrong_field_count(data, start, header_line, source=source)
    if error is not None:
        raise error


def _wrong_field_count(
    data: bytes, start: int, header_line: int, *, source: str
) -> CDDFormatError | None:
    """The first row whose number of fields differs from the header's (slow: csv module)."""
    rows = csv.reader(io.StringIO(data[start:].decode("utf-8", "replace")))
    fields = len(next(rows, []))
    for number, row in enumerate(rows, start=header_line + 1):
        if row and len(row) != fields:
            return CDDFormatError(
                f"{source} line {number}: {len(row)} fields where the header has {fields}; "
                "fix the row (a number with a thousands separator?) or download the file again"
            )
    return None


def _stream(data: bytes, start: int) -> io.BytesIO:
    """``data`` from offset ``start`` on, without copying it."""
    stream = io.BytesIO(data)
    stream.seek(start)
    return stream


def _read_rows(
    data: bytes, start: int, columns: ColumnMap, header_line: int, *, source: str
) -> pd.DataFrame:
    """The used columns as read; every number column as float64 (empty or NaN -> NaN)."""
    floats = [columns.open, columns.high, columns.low, columns.close]
    floats += [columns.volume_base, columns.volume_quote]
    dtype: dict[str, object] = {name: "float64" for name in floats}
    if columns.unix is not None:
        dtype[columns.unix] = "float64"
    else:
        dtype[columns.time] = "str"
    if columns.symbol is not None:
        dtype[columns.symbol] = "category"
    try:
        return pd.read_csv(
            _stream(data, start),
            usecols=list(dtype),
            dtype=dtype,
            skip_blank_lines=False,  # type: ignore[arg-type]
            index_col=False,
            skipinitialspace=True,
            engine="c",
        )
    except (ValueError, pd.errors.ParserError) as error:
        raise _locate_bad_input(
            data,
            start,
            list(dtype),
            [n for n, t in dtype.items() if t == "float64"],
            header_line,
            source=source,
            error=error,
        ) from None


def _locate_bad_input(
    data: bytes,
    start: int,
    used: list[str],
    floats: list[str],
    header_line: int,
    *,
    source: str,
    error: Exception,
) -> CDDFormatError:
    """The slow path after a failed fast read: find the line and cell at fault."""
    wrong_fields = _wrong_field_count(data, start, header_line, source=source)
    if wrong_fields is not None:
        return wrong_fields
    try:
        text = pd.read_csv(
            _stream(data, start), usecols=used, dtype="str", skip_blank_lines=False, index_col=False
        )
    except (ValueError, pd.errors.ParserError):
        return CDDFormatError(f"{source}: not a readable CSV file ({error}); check --source")
    for name in floats:
        cells = text[name].str.strip()
        parsed = pd.to_numeric(cells, errors="coerce")
        bad = (parsed.isna() & cells.notna() & (cells != "")).to_numpy()
        if bad.any():
            row = int(np.argmax(bad))
            return CDDFormatError(
                f"{source} line {header_line + 1 + row}: {name} is {cells.iloc[row]!r}, not a "
                "number; fix the row or download the file again"
            )
    return CDDFormatError(f"{source}: not a readable CSV file ({error}); check --source")


def _finite(raw: pd.DataFrame, name: str, lines: np.ndarray, *, source: str) -> np.ndarray:
    values = raw[name].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.argmax(bad))
        what = "empty" if np.isnan(values[row]) else f"{values[row]}"
        raise CDDFormatError(
            f"{source} line {lines[row]}: {name} is {what} (NaN or missing); every row needs "
            "all prices, volumes and its time - fix the row or download the file again"
        )
    return values


def _check_symbol(symbols: pd.Series, lines: np.ndarray, key: SeriesKey, *, source: str) -> None:
    """Every row's symbol (``BTCUSD`` or ``BTC/USD``) must be the series' pair."""
    seen = [s for s in symbols.cat.categories if re.sub(r"[^A-Z0-9]", "", s.upper()) != key.pair]
    if seen:
        row = int(np.argmax(symbols.isin(seen).to_numpy()))
        raise CDDFormatError(
            f"{source} line {lines[row]}: symbol {symbols.iloc[row]!r} is not the pair of series "
            f"{key} ({key.pair}); this is another series' file - check --source"
        )
