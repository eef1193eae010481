"""Parse any CryptoDataDownload candle file generation into the candles frame.

>>> body = (b"unix,date,symbol,open,high,low,close,Volume BTC,Volume USD\\n"
...         b"1577923200,2020-01-02,BTC/USD,7176,7200,6950,6980,3.5,24500\\n"
...         b"1577836800,2020-01-01,BTC/USD,7160,7250,7100,7176,24500,2.9\\n")  # swapped volumes
>>> key = SeriesKey.parse("Bitstamp_BTCUSD_d")
>>> parsed = parse_cdd(body, source="Bitstamp_BTCUSD_d.csv", key=key)
>>> parsed.candles.columns.tolist()
['open', 'high', 'low', 'close', 'volume_base', 'volume_quote', 'is_final']
>>> parsed.report.swapped_volume_rows, parsed.report.rejected_rows
(1, 0)
>>> parsed.candles[["close", "volume_base"]].iloc[0].tolist()  # oldest first, volumes repaired
[7176.0, 2.9]

Columns are found by meaning (see ``cdd.columns``); rows may be newest- or oldest-first.
A file-level fault (not CDD, another timeframe, HTML, cut off, bad gzip, too many bad rows)
raises ``CDDFormatError`` naming the source, the 1-based line and the fix. A bad row of a
sound file (NaN, impossible price, a date that names another candle than its unix time, ...)
is rejected alone: it is no candle, never overwrites a stored one, and is listed in
``report.rejects``. The date and the unix time must name the same candle: daily ``2025-09-24``
beside unix 1758758400 (2025-09-25) is rejected as ambiguous; ``2025-09-24 04:00:00`` beside
unix 2025-09-24 00:00 (the same daily candle), or a date exactly 4 hours off (Binance's Sept
2017 hourly rows), is the unix time's candle, counted in ``time_mismatches``. All-zero rows
(the pair was not trading yet) are skipped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cdd.columns import ColumnMap, map_columns
from cdd.duplicates import resolve_duplicates
from cdd.errors import CDDFormatError
from cdd.reading import (
    Body,
    as_lines,
    blank_misshapen_rows,
    check_last_line,
    check_quotes,
    last_line,
    no_line_end,
    open_body,
    read_dates,
    read_rows,
    used_fields,
)
from cdd.rejects import Reject, RejectLimits, RowFaults, line_reader
from cdd.series_key import SeriesKey
from cdd.times import DATE_FORMS_TEXT, UNREADABLE, dates_to_ns, unix_to_ns
from cdd.validate import (
    CUT_LINE_FACTOR,
    NAMES,
    check_alignment,
    check_prices,
    check_spacing,
    check_volume_ratio,
    cross_check_dates,
    fix_swapped_volumes,
    ratio_outside,
)

CANDLE_COLUMNS = list(NAMES)


@dataclass(frozen=True)
class ParseReport:
    """What the parser saw, fixed, skipped and rejected in one file."""

    source: str
    rows_read: int  # non-blank data rows, whatever became of them
    candles: int
    duplicates_collapsed: int
    gaps: int  # missing candles between the first and the last
    swapped_volume_rows: int
    partial_rows: int
    first: pd.Timestamp | None
    last: pd.Timestamp | None
    newest_first: bool
    zero_rows: int = 0  # every price and volume 0: the pair was not trading; skipped
    superseded_rows: int = 0  # an older format generation's copy of a candle; dropped
    time_mismatches: int = 0  # date not the unix time but its candle (or 4 h off); unix trusted
    rejects: tuple[Reject, ...] = field(default=(), repr=False)

    @property
    def rejected_rows(self) -> int:
        return len(self.rejects)


@dataclass(frozen=True)
class ParsedCandles:
    candles: pd.DataFrame
    report: ParseReport


def parse_cdd(
    data: bytes,
    *,
    source: str,
    key: SeriesKey,
    now: pd.Timestamp | None = None,
    limits: RejectLimits | None = None,
    max_bytes: int | None = None,
) -> ParsedCandles:
    """Validate ``data`` (a CDD CSV body, or its gzip) and return its candles, oldest first.

    ``now`` (default: the current time) decides which candle is still open (``is_final``
    false) and which rows lie in the future; ``limits`` how many bad rows a file may have;
    ``max_bytes`` bounds what a gzip body may unpack to.
    """
    now, limits = _utc_now(now), limits or RejectLimits()
    body = open_body(data, source=source, max_bytes=max_bytes)
    raw_line = line_reader(body.data)
    columns = map_columns(body.header, key, source=source, line=body.header_line)
    needed = used_fields(body.header, columns)
    check_last_line(body, needed, source=source)
    check_quotes(body, source=source)
    opened = body  # its last line is the file's (misshapen rows are blanked in ``body``)
    raw, not_numbers, misshapen, body = _read(body, columns, needed, source=source)
    lines = as_lines(body.header_line, len(raw))
    blank = raw.isna().all(axis=1).to_numpy().copy()
    for cells in not_numbers.values():
        blank[cells.index.to_numpy()] = False  # a cell that is no number: a bad row, not blank
    position = np.cumsum(~blank) - 1  # of each row once the blank rows are dropped
    not_numbers = {
        name: cells.set_axis(position[cells.index]) for name, cells in not_numbers.items()
    }
    dates = None  # a date column beside the unix one: read below
    if columns.unix is not None and columns.date is not None:
        date_ns, form, date_text = read_dates(body, columns.date, len(raw))
        dates = (date_ns[~blank], form[~blank], date_text[~blank] if len(date_text) else None)
    raw, lines = raw[~blank].reset_index(drop=True), lines[~blank]
    if columns.unix is None:
        dates = (*dates_to_ns(raw[columns.time]), raw[columns.time])
    if raw.empty and not misshapen:
        raise CDDFormatError(
            f"{source} line {body.header_line}: the header is followed by no candle rows; "
            "download the file again or check --source"
        )
    values = raw[columns.values].to_numpy(dtype=np.float64)  # (rows, 6)
    zero = (values == 0).all(axis=1)
    faults = RowFaults(len(raw), skip=zero)
    faults.extra = misshapen
    _cell_faults(raw, columns, not_numbers, values, faults)
    period = int(key.period.value)
    times, timed, generation, mismatched = _candle_times(raw, columns, dates, faults, period)
    if columns.symbol is not None:
        _check_symbol(raw[columns.symbol], key, faults)
    check_prices(values, faults)
    readable = np.flatnonzero(~zero & timed)  # rows in file order
    newest_first, order = _oldest_first(times[readable])
    rows = readable[order]  # oldest first
    check_spacing(times[rows], period, timeframe=key.timeframe, source=source)
    check_alignment(times, period, now, faults, timeframe=key.timeframe)
    values, swapped = fix_swapped_volumes(values)
    check_volume_ratio(values, faults)
    if no_line_end(body):
        _check_cut_line(opened, lines, values, faults, source=source)

    rows = rows[~faults.mask[rows]]
    duplicates = resolve_duplicates(times[rows], values[rows], generation[rows], lines[rows])
    conflicts = {int(rows[position]): why for position, why in duplicates.conflicts.items()}
    if conflicts:
        bad = np.zeros(len(raw), dtype=bool)
        bad[list(conflicts)] = True
        faults.add(bad, conflicts.__getitem__)
    faults.check_limit(limits, lines, len(raw) + len(misshapen), source=source)
    rows = rows[duplicates.keep]

    kept_times = times[rows]
    is_final = kept_times + period <= now.value
    # microseconds, as db.candles.load_candles returns them (CDD times are whole seconds)
    index = pd.DatetimeIndex(pd.to_datetime(kept_times, unit="ns", utc=True), name="time")
    index = index.as_unit("us")
    candles = pd.DataFrame(
        {name: values[rows, i] for i, name in enumerate(CANDLE_COLUMNS)}, index=index
    )
    candles["is_final"] = is_final
    report = ParseReport(
        source=source,
        rows_read=len(raw) + len(misshapen),
        candles=len(candles),
        duplicates_collapsed=duplicates.collapsed,
        gaps=int((np.diff(kept_times) // period - 1).sum()),
        swapped_volume_rows=int(swapped[rows].sum()),
        partial_rows=int((~is_final).sum()),
        first=index[0] if len(index) else None,
        last=index[-1] if len(index) else None,
        newest_first=newest_first,
        zero_rows=int(zero.sum()),
        superseded_rows=duplicates.superseded,
        time_mismatches=int(mismatched[rows].sum()),
        rejects=tuple(faults.rejects(lines, times, raw_line)),
    )
    return ParsedCandles(candles=candles, report=report)


def _read(
    body: Body, columns: ColumnMap, needed: int, *, source: str
) -> tuple[pd.DataFrame, dict[str, pd.Series], list[tuple[int, str]], Body]:
    """The rows as read, the cells that are no number, the misshapen rows (blanked out in
    the returned body)."""
    body, misshapen = blank_misshapen_rows(body, needed)
    try:
        raw, not_numbers = read_rows(body, columns)
    except ValueError:  # a ParserError: the comma count balanced out; search row by row
        body, misshapen = blank_misshapen_rows(body, needed, force=True)
        try:
            raw, not_numbers = read_rows(body, columns)
        except (ValueError, pd.errors.ParserError) as error:
            raise CDDFormatError(
                f"{source}: not a readable CSV file ({error}); check --source"
            ) from None
    return raw, not_numbers, misshapen, body


def _cell_faults(
    raw: pd.DataFrame,
    columns: ColumnMap,
    not_numbers: dict[str, pd.Series],
    values: np.ndarray,
    faults: RowFaults,
) -> None:
    """Cells that are no number, then empty or NaN values: bad rows."""
    for name, cells in not_numbers.items():
        bad = np.zeros(len(raw), dtype=bool)
        texts = {int(i): text for i, text in cells.items() if i in raw.index}
        bad[list(texts)] = True
        faults.add(
            bad, lambda row, name=name, texts=texts: f"{name} is {texts[row]!r}, not a number"
        )
    for i, name in enumerate(columns.values):
        faults.add(
            ~np.isfinite(values[:, i]),
            lambda row, name=name, i=i: (
                f"{name} is "
                f"{'empty' if np.isnan(values[row, i]) else values[row, i]} (NaN or missing)"
            ),
        )


def _candle_times(
    raw: pd.DataFrame,
    columns: ColumnMap,
    dates: tuple[np.ndarray, np.ndarray, pd.Series | None] | None,
    faults: RowFaults,
    period: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each row's open time (int64 UTC ns), whether it has one, its format generation, and
    whether its date disagrees with its unix time.

    The unix time is trusted when present; the date must name the same candle
    (``validate.cross_check_dates``). The generation (higher is newer) is 1 for a millisecond
    unix time plus 1 for an ISO date.
    """
    rows = len(raw)
    generation = np.zeros(rows, dtype=np.int8)
    mismatched = np.zeros(rows, dtype=bool)
    if dates is not None:
        date_ns, form, text = dates
        generation += form == 0
    if columns.unix is None:
        assert dates is not None and text is not None
        faults.add(
            form == UNREADABLE,
            lambda row: (
                f"{columns.date} {text.iloc[row]!r} is not a date of the forms {DATE_FORMS_TEXT}"
            ),
        )
        return date_ns, form != UNREADABLE, generation, mismatched
    unix = raw[columns.unix].to_numpy(dtype=np.float64)
    parsed = unix_to_ns(unix)
    faults.add(
        parsed.bad,
        lambda row: (
            f"{columns.unix} is empty"
            if np.isnan(unix[row])
            else f"{columns.unix} {unix[row]!r} is not a whole unix time between 2000 and 2100 in "
            "seconds or milliseconds"
        ),
    )
    generation += parsed.ms
    if dates is not None:
        mismatched = cross_check_dates(
            parsed.ns, date_ns, form != UNREADABLE, text, faults, unix=unix, period=period
        )
    return parsed.ns, ~parsed.bad, generation, mismatched


def _check_cut_line(
    body: Body, lines: np.ndarray, values: np.ndarray, faults: RowFaults, *, source: str
) -> None:
    """A last line without a line end may be cut inside its last field: it must be sound."""
    line = last_line(body).number(body)
    rows = np.flatnonzero(lines == line)
    if len(rows) == 0:
        return
    row = int(rows[0])
    problem = faults.reason(row) if faults.mask[row] else None
    if problem is None and ratio_outside(values[row : row + 1], CUT_LINE_FACTOR)[0]:
        problem = (
            f"its quote volume {float(values[row, 5])!r} is not base volume "
            f"{float(values[row, 4])!r} x a price within {CUT_LINE_FACTOR:g}x of low..high"
        )
    if problem is not None:
        raise CDDFormatError(
            f"{source} line {line}: the last line has no line end and is not a sound row "
            f"({problem}); the download was probably cut inside it - download the file again"
        )


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


def _check_symbol(symbols: pd.Series, key: SeriesKey, faults: RowFaults) -> None:
    """Every row's symbol (``BTCUSD`` or ``BTC/USD``) must be the series' pair."""
    seen = [s for s in symbols.cat.categories if _letters(str(s)) != key.pair]
    if seen:
        faults.add(
            symbols.isin(seen).to_numpy(),
            lambda row: (
                f"symbol {symbols.iloc[row]!r} is not the pair of series {key} "
                f"({key.pair}): a row of another series' file"
            ),
        )


def _letters(symbol: str) -> str:
    return "".join(ch for ch in symbol.upper() if ch.isalnum())
