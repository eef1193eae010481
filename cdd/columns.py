"""Map a CryptoDataDownload header to the candle fields by meaning, never by position.

>>> cols = map_columns(["unix", "date", "symbol", "open", "high", "low", "close",
...                     "Volume BTC", "Volume USD"], SeriesKey.parse("Bitstamp_BTCUSD_d"),
...                    source="f.csv", line=2)
>>> cols.volume_base, cols.volume_quote
('Volume BTC', 'Volume USD')
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cdd.errors import CDDFormatError
from cdd.series_key import SeriesKey

PRICE_FIELDS = ("open", "high", "low", "close")
_UNIX_NAMES = {"unix", "unixtimestamp", "timestamp", "unixtime", "epoch"}
_DATE_NAMES = {"date", "datetime", "dateutc"}
_SYMBOL_NAMES = {"symbol", "pair", "ticker"}
_VOLUME = re.compile(r"^vol(?:ume)?[\s_\-(]*(?P<what>[a-z0-9]*)\)?$")


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.strip().lower())


@dataclass(frozen=True)
class ColumnMap:
    """The header names (as written in the file) that hold each candle field."""

    unix: str | None
    date: str | None
    symbol: str | None
    open: str
    high: str
    low: str
    close: str
    volume_base: str
    volume_quote: str

    @property
    def values(self) -> list[str]:
        """The six value columns: open, high, low, close, volume_base, volume_quote."""
        return [self.open, self.high, self.low, self.close, self.volume_base, self.volume_quote]

    @property
    def numbers(self) -> list[str]:
        """Every column read as a number: the unix time (when present) and the values."""
        return ([self.unix] if self.unix is not None else []) + self.values

    @property
    def time(self) -> str:
        """The column the candle times are read from: unix when present, else date."""
        return self.unix if self.unix is not None else self.date  # type: ignore[return-value]


def map_columns(names: list[str], key: SeriesKey, *, source: str, line: int) -> ColumnMap:
    """Find each field's column; a CDDFormatError names what is missing or ambiguous."""
    found: dict[str, str] = {}
    volumes: list[tuple[str, str]] = []  # (header name, what follows "volume")

    def claim(field: str, name: str) -> None:
        if field in found:
            raise CDDFormatError(
                f"{source} line {line}: columns {found[field]!r} and {name!r} both look like "
                f"the {field} column; keep one of them"
            )
        found[field] = name

    for name in names:
        norm = _norm(name)
        if norm in PRICE_FIELDS:
            claim(norm, name)
        elif norm in _UNIX_NAMES:
            claim("unix", name)
        elif norm in _DATE_NAMES:
            claim("date", name)
        elif norm in _SYMBOL_NAMES:
            claim("symbol", name)
        elif (match := _VOLUME.match(name.strip().lower())) is not None:
            volumes.append((name, match["what"].upper()))

    base, quote = _map_volumes(volumes, key, source=source, line=line)
    missing = [field for field in PRICE_FIELDS if field not in found]
    if "unix" not in found and "date" not in found:
        missing.insert(0, "unix or date")
    if base is None:
        missing.append(f"volume in {key.pair} base currency (e.g. 'Volume BTC' or 'Volume From')")
    if quote is None:
        missing.append(f"volume in {key.pair} quote currency (e.g. 'Volume USD' or 'Volume To')")
    if missing:
        raise CDDFormatError(
            f"{source} line {line}: missing column(s) {'; '.join(missing)} "
            f"(header has: {', '.join(names)}). This is not a CryptoDataDownload candle file "
            f"for {key}: check the URL or the file given with --source"
        )
    assert base is not None and quote is not None
    return ColumnMap(
        unix=found.get("unix"),
        date=found.get("date"),
        symbol=found.get("symbol"),
        open=found["open"],
        high=found["high"],
        low=found["low"],
        close=found["close"],
        volume_base=base,
        volume_quote=quote,
    )


def _map_volumes(
    volumes: list[tuple[str, str]], key: SeriesKey, *, source: str, line: int
) -> tuple[str | None, str | None]:
    """Volume columns by currency: ``Volume BTC`` of BTCUSD is base, ``Volume To`` is quote."""
    pair = key.pair
    roles: dict[str, str] = {}  # role -> header name
    rest: list[tuple[str, str]] = []

    def assign(role: str, name: str) -> None:
        if role in roles:
            raise CDDFormatError(
                f"{source} line {line}: columns {roles[role]!r} and {name!r} both look like "
                f"the {role} volume of {pair}; keep one of them"
            )
        roles[role] = name

    by_currency = {what: name for name, what in volumes if what not in ("", "FROM", "TO")}
    for base_currency, name in by_currency.items():  # an exact split first: BTC + USD
        quote_name = by_currency.get(pair.removeprefix(base_currency))
        if pair.startswith(base_currency) and quote_name is not None:
            assign("base", name)
            assign("quote", quote_name)
            break
    for name, what in volumes:
        if name in roles.values():
            continue
        if what == "FROM" or (what and pair.startswith(what) and what != pair):
            assign("base", name)
        elif what == "TO" or (what and pair.endswith(what) and what != pair):
            assign("quote", name)
        else:
            rest.append((name, what))
    # one currency the pair's spelling does not show (e.g. "Volume USD" of BTCUSDT)
    if len(rest) == 1 and rest[0][1] and len(roles) == 1:
        assign("quote" if "base" in roles else "base", rest[0][0])
    return roles.get("base"), roles.get("quote")
