"""Generated CryptoDataDownload files: every layout the catalogue has, its seams, and damage.

One generator, ``build_case(draw)``, serves two drivers: hypothesis (``cdd_cases()``, which
shrinks a failure) and a seeded ``random.Random`` (``case_from_seed(seed)``, what
``bench/fuzz_parser.py`` runs by the hundred thousand; a seed reproduces its file).

>>> case = case_from_seed(7)
>>> case.data.count(b"\\n") > 0, case.key.timeframe in ("d", "1h", "minute")
(True, True)

Layouts: banner line or not; unix in seconds, milliseconds, float seconds, none, or two
generations in one file (newer rows ms with ``YYYY-MM-DD HH:MM:SS``, older rows s with a
10-wide or ``HH-AM`` date, and the seam's candle in both); dates 10 or 19 wide or ``HH-AM``;
symbols of 3 to 12 characters with and without ``/``; newest- or oldest-first; the volume
columns in either order, named by currency or From/To; ``tradecount`` with ``NULL``; LF or
CRLF, a BOM, quoted cells, with or without a final line end, gzip (whole or cut); holes,
all-zero rows and rows with swapped volumes. Damage: a cut at any byte of the last line,
flipped bytes, NUL bytes, very long lines and cells, huge, negative, NaN and non-numbers, bad
unix times and dates, foreign symbols, missing and extra fields, blank lines, duplicate and
conflicting rows.
"""

from __future__ import annotations

import gzip
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
from hypothesis import strategies as st

from cdd.series_key import SeriesKey

BASES = ("BTC", "ETH", "ADA", "XRP", "DOGE", "SHIB", "A", "B2", "MATIC", "ABCDEFG")
QUOTES = ("USD", "USDT", "EUR", "BTC", "USDC")
TIMEFRAMES = ("d", "1h", "minute")
PERIOD_S = {"d": 86_400, "1h": 3_600, "minute": 60}
FIRST, LAST = 1_420_070_400, 1_735_689_600  # 2015-01-01 .. 2025-01-01, unix seconds
BAD_NUMBERS = (
    "1e308", "1e400", "-1e400", "-5", "-0", "0", "NaN", "nan", "inf", "-inf", "", "NULL",
    "abc", "1,5", "1e", "0x1F", "1_000", "--1", "1.2.3", "9" * 400, "١٢", "+.5e-3",
)  # fmt: skip
BAD_UNIX = ("0", "-1", "1e20", "", "abc", "1e9", "4102444801", "1513555200.5", "99999999999")
BAD_DATES = ("2021-02-30", "2020-13-01", "", "yesterday", "2020-01-01T00:00:00",
             "2020-01-01 25:00:00", "2018-05-15 13-PM", "20200101", "2020-1-1")  # fmt: skip
DAMAGE = (
    "cut", "flip", "nul", "long_line", "long_cell", "number", "unix", "date", "date_shift",
    "duplicate", "conflict", "symbol", "extra_field", "missing_field", "blank", "empty_cells",
    "swap", "crlf_mix", "quote",
)  # fmt: skip


class Draw(Protocol):
    """The choices a generator makes; hypothesis or a seeded random.Random answers them."""

    def integer(self, low: int, high: int) -> int: ...
    def choice(self, options: Sequence[Any]) -> Any: ...
    def boolean(self, p: float = 0.5) -> bool: ...


class RandomDraw:
    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def integer(self, low: int, high: int) -> int:
        return self._random.randint(low, high)

    def choice(self, options: Sequence[Any]) -> Any:
        return options[self._random.randrange(len(options))]

    def boolean(self, p: float = 0.5) -> bool:
        return self._random.random() < p


class HypothesisDraw:
    def __init__(self, draw: Any) -> None:
        self._draw = draw

    def integer(self, low: int, high: int) -> int:
        return self._draw(st.integers(low, high))

    def choice(self, options: Sequence[Any]) -> Any:
        return self._draw(st.sampled_from(options))

    def boolean(self, p: float = 0.5) -> bool:
        if p >= 0.5:
            return self._draw(st.booleans())
        return self._draw(st.integers(0, 999)) < p * 1000


@dataclass(frozen=True)
class CDDCase:
    """A generated file, its series and the time it is parsed at; ``story`` says how it was made."""

    data: bytes
    key: SeriesKey
    now: pd.Timestamp
    story: str


@dataclass(frozen=True)
class Layout:
    banner: bool
    unix: str | None  # "s", "ms", "float_s", "mixed" or None
    date_form: str  # "10", "19" or "ampm" (the older rows' form when unix is "mixed")
    slash: bool
    newest_first: bool
    volume_names: str  # "currency" or "fromto"
    base_first: bool
    tradecount: str | None  # None, "numbers" or "null"
    crlf: bool
    bom: bool
    final_newline: bool
    quoting: str  # "none", "all" or "some"
    header_case: str  # "lower", "title"


def cdd_cases(max_damage: int = 3) -> st.SearchStrategy[CDDCase]:
    """Hypothesis strategy of generated CDD files with up to ``max_damage`` damages."""
    return st.composite(lambda draw: build_case(HypothesisDraw(draw), max_damage))()


def case_from_seed(seed: int, max_damage: int = 3) -> CDDCase:
    """The file of ``seed`` (the bench's generator; the same seed gives the same file)."""
    return build_case(RandomDraw(seed), max_damage)


def build_case(draw: Draw, max_damage: int = 3) -> CDDCase:
    timeframe = draw.choice(TIMEFRAMES)
    base = draw.choice(BASES)
    quote = draw.choice([q for q in QUOTES if q != base])
    key = SeriesKey("Fuzz", base + quote, timeframe)
    layout = _layout(draw, timeframe)
    rows = _rows(draw, timeframe)
    period = PERIOD_S[timeframe]
    last = max(row["time"] for row in rows)
    now_s = last + draw.choice((period, period // 2, period * 10, 0, -period))
    header, lines = _render_rows(draw, layout, key, rows)
    damages = [draw.choice(DAMAGE) for _ in range(draw.integer(0, max_damage))]
    for damage in sorted(damages, key=_SHAPE_DAMAGE.__contains__):  # cells first, then shapes
        if damage in _CELL_DAMAGE and lines:
            _CELL_DAMAGE[damage](draw, lines, header, key)
    data = _join(layout, header, lines)
    for damage in damages:
        if damage in _BYTE_DAMAGE:
            data = _BYTE_DAMAGE[damage](draw, data)
    if draw.boolean(0.05):  # served gzip-compressed, sometimes cut short
        data = gzip.compress(data, mtime=0)
        damages.append("gzip")
        if draw.boolean(0.3):
            data = data[: draw.integer(0, len(data) - 1)]
            damages.append("gzip cut")
    story = f"{key} {layout} rows={len(rows)} now={now_s} damage={damages}"
    return CDDCase(data, key, pd.Timestamp(now_s, unit="s", tz="UTC"), story)


def _layout(draw: Draw, timeframe: str) -> Layout:
    unix = draw.choice(("s", "ms", "float_s", "mixed", None))
    forms = {"d": ("10", "19"), "1h": ("19", "ampm"), "minute": ("19",)}[timeframe]
    return Layout(
        banner=draw.boolean(),
        unix=unix,
        date_form=draw.choice(forms),
        slash=draw.boolean(),
        newest_first=draw.boolean(),
        volume_names=draw.choice(("currency", "fromto")),
        base_first=draw.boolean(0.7),
        tradecount=draw.choice((None, "numbers", "null")),
        crlf=draw.boolean(0.2),
        bom=draw.boolean(0.1),
        final_newline=draw.boolean(0.8),
        quoting=draw.choice(("none", "none", "all", "some")),
        header_case=draw.choice(("lower", "title")),
    )


def _rows(draw: Draw, timeframe: str) -> list[dict]:
    """Consistent candles (a random walk from the drawn seed) with holes, zero and swapped rows."""
    n = draw.choice((1, 2, 3, draw.integer(4, 40), draw.integer(4, 40), draw.integer(100, 700)))
    period = PERIOD_S[timeframe]
    start = FIRST + draw.integer(0, (LAST - FIRST) // period - 1000) * period
    rng = np.random.default_rng(draw.integer(0, 2**32 - 1))
    hole = draw.choice((0.0, 0.0, 0.05, 0.3))
    zeros = draw.choice((0, 0, 0, 1, 5))
    swapped = draw.choice((0, 0, 3))
    digits = draw.choice((2, 4, 8, 12))
    level = 10 ** rng.uniform(-6, 5)
    rows, time = [], start
    close = level
    for i in range(n):
        open_ = close
        close = open_ * float(np.exp(rng.normal(0, 0.02)))
        high = max(open_, close) * (1 + rng.uniform(0, 0.01))
        low = min(open_, close) * (1 - rng.uniform(0, 0.01))
        volume = 10 ** rng.uniform(-2, 4)
        values = [_sig(v, digits) for v in (open_, high, low, close, volume)]
        o, h, lo, c, vb = (float(v) for v in values)
        high_s = _sig(max(o, h, lo, c), digits)
        low_s = _sig(min(o, float(high_s), lo, c), digits)
        vq = _sig(vb * (float(low_s) + float(high_s)) / 2, digits)
        cells = [values[0], high_s, low_s, values[3], values[4], vq]
        if i < zeros:
            cells = [draw.choice(("0", "0.0", "0.00000000"))] * 6
        elif i < zeros + swapped:
            cells[4], cells[5] = cells[5], cells[4]
        rows.append({"time": time, "cells": cells, "newer": None})
        time += period * (1 + (rng.random() < hole) * int(rng.integers(1, 4)))
    return rows


def _sig(value: float, digits: int) -> str:
    text = f"{value:.{digits}g}"
    return text if "e" in text or "." in text else text + ".0"


def _names(layout: Layout, key: SeriesKey) -> list[str]:
    base, quote = (
        key.pair[: len(key.pair) - _quote_len(key.pair)],
        key.pair[-_quote_len(key.pair) :],
    )
    title = layout.header_case == "title"
    names = []
    if layout.unix is not None:
        names.append("Unix Timestamp" if title else "unix")
    names += ["Date", "Symbol", "Open", "High", "Low", "Close"] if title else [
        "date", "symbol", "open", "high", "low", "close"]  # fmt: skip
    volumes = [f"Volume {base}", f"Volume {quote}"]
    if layout.volume_names == "fromto":
        volumes = ["Volume From", "Volume To"]
    names += volumes if layout.base_first else volumes[::-1]
    if layout.tradecount:
        names.append("tradecount")
    return names


def _quote_len(pair: str) -> int:
    return next(len(q) for q in sorted(QUOTES, key=len, reverse=True) if pair.endswith(q))


def _date_text(time: int, form: str) -> str:
    stamp = pd.Timestamp(time, unit="s")
    if form == "10":
        return stamp.strftime("%Y-%m-%d")
    if form == "ampm":
        return stamp.strftime("%Y-%m-%d %I-%p")
    return stamp.strftime("%Y-%m-%d %H:%M:%S")


def _render_rows(
    draw: Draw, layout: Layout, key: SeriesKey, rows: list[dict]
) -> tuple[list[str], list[list[str]]]:
    """The header and each row's cells (newest-first when the layout is), seam copy included."""
    names = _names(layout, key)
    base = key.pair[: len(key.pair) - _quote_len(key.pair)]
    symbol = f"{base}/{key.pair[len(base) :]}" if layout.slash else key.pair
    seam = draw.integer(0, len(rows) - 1) if layout.unix == "mixed" else None
    lines = []
    for i, row in enumerate(rows):
        newer = seam is not None and i >= seam
        copies = [newer, False] if seam is not None and i == seam else [newer]
        for copy, is_newer in enumerate(copies):
            cells = list(row["cells"])
            if copy and draw.boolean():  # the older generation's copy: rounded prices
                cells = [_sig(float(c), 3) if j < 4 else c for j, c in enumerate(cells)]
            lines.append(_row_cells(draw, layout, names, row["time"], cells, symbol, is_newer))
    if layout.newest_first:
        lines.reverse()
    return names, lines


def _row_cells(draw, layout, names, time, cells, symbol, newer) -> list[str]:
    out: dict[str, str] = {}
    unix = layout.unix
    if unix == "mixed":
        unix = "ms" if newer else draw.choice(("s", "float_s"))
    form = "19" if newer else layout.date_form
    if unix == "ms":
        out["unix"] = str(time * 1000)
    elif unix == "float_s":
        out["unix"] = f"{time}.0"
    elif unix == "s":
        out["unix"] = str(time)
    out["date"] = _date_text(time, form)
    out["symbol"] = symbol
    o, h, low, c, vb, vq = cells
    out.update(open=o, high=h, low=low, close=c)
    base_first = [vb, vq] if layout.volume_names != "fromto" else [vb, vq]
    volumes = base_first if layout.base_first else base_first[::-1]
    text = [out.get("unix")] if layout.unix is not None else []
    text += [out["date"], out["symbol"], o, h, low, c, *volumes]
    if layout.tradecount == "numbers":
        text.append(str(draw.integer(0, 99999)))
    elif layout.tradecount == "null":
        text.append(draw.choice(("NULL", "12", "NULL")))
    if layout.quoting == "all":
        text = [f'"{cell}"' for cell in text]
    elif layout.quoting == "some":
        text = [f'"{cell}"' if draw.boolean(0.3) else cell for cell in text]
    assert len(text) == len(names)
    return text


def _join(layout: Layout, header: list[str], lines: list[list[str]]) -> bytes:
    end = "\r\n" if layout.crlf else "\n"
    text = [",".join(f'"{name}"' if layout.quoting == "all" else name for name in header)]
    text += [",".join(cells) for cells in lines]
    if layout.banner:
        text.insert(0, "https://www.CryptoDataDownload.com")
    body = end.join(text) + (end if layout.final_newline else "")
    return (b"\xef\xbb\xbf" if layout.bom else b"") + body.encode()


# damage to cells, before the rows are joined: (draw, rows, header, key) -> None, in place


def _at(draw: Draw, lines: list) -> int:
    return draw.integer(0, len(lines) - 1)


def _column(header: list[str], *names: str) -> int | None:
    for i, name in enumerate(header):
        if name.lower().split()[0] in names:
            return i
    return None


def _value_column(draw: Draw, header: list[str]) -> int:
    return draw.choice([i for i, n in enumerate(header) if n.split()[0].lower() in _VALUES])


_VALUES = ("open", "high", "low", "close", "volume")


def _damage_number(draw, lines, header, key):
    lines[_at(draw, lines)][_value_column(draw, header)] = draw.choice(BAD_NUMBERS)


def _damage_unix(draw, lines, header, key):
    column = _column(header, "unix")
    if column is not None:
        lines[_at(draw, lines)][column] = draw.choice(BAD_UNIX)


def _damage_date(draw, lines, header, key):
    lines[_at(draw, lines)][_column(header, "date")] = draw.choice(BAD_DATES)


def _damage_date_shift(draw, lines, header, key):
    """The date says another candle than the unix time (by one period, or by days)."""
    row = lines[_at(draw, lines)]
    column = _column(header, "date")
    text = row[column].strip('"')
    try:
        stamp = pd.Timestamp(text)
    except ValueError:
        return
    if pd.isna(stamp):
        return
    shift = pd.Timedelta(seconds=PERIOD_S[key.timeframe]) * draw.choice((1, -1, 2, 3))
    if draw.boolean():
        shift = pd.Timedelta(days=draw.choice((1, 2, -2)))
    row[column] = (stamp + shift).strftime("%Y-%m-%d %H:%M:%S" if len(text) > 10 else "%Y-%m-%d")


def _damage_duplicate(draw, lines, header, key):
    lines.insert(_at(draw, lines), list(lines[_at(draw, lines)]))


def _damage_conflict(draw, lines, header, key):
    """Another row for the same time: a close a little different, still within low..high."""
    row = list(lines[_at(draw, lines)])
    close, high, low = (_column(header, name) for name in ("close", "high", "low"))
    try:
        h, lo = float(row[high].strip('"')), float(row[low].strip('"'))
    except ValueError:
        return
    row[close] = repr((h + lo) / 2)
    lines.insert(_at(draw, lines), row)


def _damage_symbol(draw, lines, header, key):
    lines[_at(draw, lines)][_column(header, "symbol")] = draw.choice(
        ("ETH/BTC", "XYZ", "btc/usd", "", "BTCUSDTPERPX", key.pair.lower(), "A/B/C/D/E/F")
    )


def _damage_extra_field(draw, lines, header, key):
    lines[_at(draw, lines)].append(draw.choice(("1", "", "x")))


def _damage_missing_field(draw, lines, header, key):
    row = lines[_at(draw, lines)]
    if row:
        del row[draw.integer(0, len(row) - 1)]


def _damage_blank(draw, lines, header, key):
    lines.insert(draw.integer(0, len(lines)), draw.choice(([""], [""] * len(header), [" "])))


def _damage_empty_cells(draw, lines, header, key):
    row = lines[_at(draw, lines)]
    for i in range(len(row)):
        if draw.boolean(0.7):
            row[i] = ""


def _damage_swap(draw, lines, header, key):
    row = lines[_at(draw, lines)]
    volumes = [i for i, n in enumerate(header) if n.lower().startswith("volume")]
    row[volumes[0]], row[volumes[1]] = row[volumes[1]], row[volumes[0]]


def _damage_long_cell(draw, lines, header, key):
    lines[_at(draw, lines)][_value_column(draw, header)] = draw.choice(
        ("1" * draw.integer(300, 100_000), "x" * 70_000, "1." + "0" * 50_000 + "1")
    )


_SHAPE_DAMAGE = ("extra_field", "missing_field", "blank")
_CELL_DAMAGE = {
    "number": _damage_number,
    "unix": _damage_unix,
    "date": _damage_date,
    "date_shift": _damage_date_shift,
    "duplicate": _damage_duplicate,
    "conflict": _damage_conflict,
    "symbol": _damage_symbol,
    "extra_field": _damage_extra_field,
    "missing_field": _damage_missing_field,
    "blank": _damage_blank,
    "empty_cells": _damage_empty_cells,
    "swap": _damage_swap,
    "long_cell": _damage_long_cell,
}


# damage to the bytes of the joined file: (draw, data) -> data


def _cut(draw: Draw, data: bytes) -> bytes:
    """Cut at any byte of the last line (its line end dropped)."""
    body = data.rstrip(b"\r\n")
    start = body.rfind(b"\n") + 1
    return body[: draw.integer(start, len(body))]


def _flip(draw: Draw, data: bytes) -> bytes:
    if not data:
        return data
    at = draw.integer(0, len(data) - 1)
    return data[:at] + bytes([draw.integer(0, 255)]) + data[at + 1 :]


def _nul(draw: Draw, data: bytes) -> bytes:
    at = draw.integer(0, len(data))
    return data[:at] + b"\x00" * draw.choice((1, 1, 3)) + data[at:]


def _long_line(draw: Draw, data: bytes) -> bytes:
    line = draw.choice((b"1" * 100_000, b"," * 20_000, b"9," * 30_000, b"\xff" * 5_000))
    at = data.find(b"\n", draw.integer(0, len(data)))
    at = len(data) if at < 0 else at + 1
    return data[:at] + line + b"\n" + data[at:]


def _crlf_mix(draw: Draw, data: bytes) -> bytes:
    at = data.find(b"\n", draw.integer(0, len(data)))
    return data if at < 0 else data[:at] + b"\r" + data[at:]


def _quote(draw: Draw, data: bytes) -> bytes:
    at = draw.integer(0, len(data))
    return data[:at] + b'"' + data[at:]


_BYTE_DAMAGE = {
    "cut": _cut,
    "flip": _flip,
    "nul": _nul,
    "long_line": _long_line,
    "crlf_mix": _crlf_mix,
    "quote": _quote,
}
