"""What the catalogue holds: series keys listed by CryptoDataDownload, a folder or a saved
listing, and the shell-style patterns (``Binance_*USDT_d``) that select among them.

A pattern is a series key with ``*`` (any run of characters, ``_`` included) or ``?`` (one
character); matching is case-sensitive, as the file names are:

>>> listed = ["Binance_BTCUSDT_d", "Binance_ETHBTC_d", "Binance_ETHUSDT_d", "Binance_ETHUSDT_1h"]
>>> select(["Binance_*USDT_d", "Bitstamp_BTCUSD_d"], listed)["Binance_*USDT_d"]
[SeriesKey('Binance_BTCUSDT_d'), SeriesKey('Binance_ETHUSDT_d')]
>>> named_timeframe("Bitstamp_*_1h"), named_timeframe("Binance_BTC*")
('1h', None)

CryptoDataDownload lists its files per exchange; the listing read here is JSON, either
``{"data": [{"file": "https://www.cryptodatadownload.com/cdd/Binance_BTCUSDT_d.csv", ...},
...]}`` (the shape its ``/v1/data/ohlc/<exchange>/available?format=json`` answers) or a
plain list of file names or URLs; entries whose file name is not a series key are skipped:

>>> parse_listing(b'{"data": [{"file": "https://x/cdd/Binance_BTCUSDT_d.csv"}, '
...     b'{"file": "https://x/cdd/Binance_BTCUSDT_futures.csv"}]}', source="listing")
[SeriesKey('Binance_BTCUSDT_d')]

`Catalogue` fetches a listing (bounded like any download: `cdd.client.download`), keeps it
in a cache file with the time it was fetched, and fetches it again once that is older than a
day; a failed refresh falls back to the cached listing and says how old it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from cdd.client import HttpSettings, download, is_http, local_path, shown_url
from cdd.errors import CDDDownloadError, SeriesNotFoundError
from cdd.series_key import SeriesKey

# the catalogue listing is fetched again once the cached one is older than this
MAX_AGE = timedelta(days=1)
WILDCARDS = frozenset("*?")
_ENTRY = re.compile(r"^[A-Za-z0-9_*?]+$")
# the fields of a listing entry that may hold its file name or URL, in this order
_NAME_FIELDS = ("file", "filename", "file_name", "url", "name")


class CatalogueError(ValueError):
    """A listing cannot be read, or a pattern cannot be resolved; the message says what to do."""


def is_pattern(entry: str) -> bool:
    """True for a pattern (``Binance_*USDT_d``), False for a series key."""
    return not WILDCARDS.isdisjoint(entry)


def check_entry(entry: str) -> str:
    """``entry`` as a `SeriesKey` (parsed, or as it is when it is one already) or, a pattern of
    keys (letters, digits, ``_``, ``*``, ``?``), as its text; else a ValueError saying why."""
    if not is_pattern(entry):
        return SeriesKey.of(entry)
    if not _ENTRY.match(entry):
        raise ValueError(
            f"invalid series pattern {entry!r}: use letters, digits, _ and the wildcards * "
            "(any characters) and ? (one character), e.g. Binance_*USDT_d or Bitstamp_*_1h"
        )
    return entry


def named_timeframe(entry: str) -> str | None:
    """The timeframe an entry names: its part after the last ``_`` when that has no wildcard.

    >>> named_timeframe("Binance_*_minute"), named_timeframe("Binance_*_?h")
    ('minute', None)
    """
    head, _, last = entry.rpartition("_")
    return last if head and not is_pattern(last) else None


def exchange_of(pattern: str) -> str | None:
    """The exchange a pattern names (its part before the first ``_``), None if a wildcard."""
    first, _, rest = pattern.partition("_")
    return first if rest and not is_pattern(first) else None


def select(entries: Iterable[str], available: Iterable[str]) -> dict[str, list[str]]:
    """Each entry and the keys it selects: a key itself, a pattern the ``available`` keys it
    matches (sorted, as `SeriesKey`). A pattern that matches nothing selects ``[]``."""
    available = sorted(set(available))
    return {
        entry: [SeriesKey.of(key) for key in available if fnmatchcase(key, entry)]
        if is_pattern(entry)
        else [entry]
        for entry in entries
    }


def parse_listing(body: bytes, *, source: str) -> list[str]:
    """The series keys a JSON listing names (see the module docstring for its shapes)."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CatalogueError(
            f"{source}: the catalogue listing is not JSON ({error}); {_listing_hint()}"
        ) from None
    entries = document.get("data") if isinstance(document, dict) else document
    if not isinstance(entries, list):
        raise CatalogueError(
            f'{source}: the catalogue listing is neither a list nor an object with a "data" '
            f"list (it is {_shape(document)}); {_listing_hint()}"
        )
    keys = [key for entry in entries if (key := _key_of(entry)) is not None]
    if entries and not keys:
        raise CatalogueError(
            f"{source}: none of the {len(entries)} entries of the catalogue listing names a "
            f"CryptoDataDownload file <Exchange>_<PAIR>_<d|1h|minute>.csv (the first is "
            f"{str(entries[0])[:120]!r}); {_listing_hint()}"
        )
    return sorted(set(keys))


def _shape(document: object) -> str:
    if isinstance(document, dict):
        return f"an object with keys {sorted(document)[:10]}"
    return f"a {type(document).__name__}"


def _listing_hint() -> str:
    return (
        "check CDDF_CATALOGUE, or save a listing (a JSON list of CDD file names) and set "
        "CDDF_CATALOGUE to its path, or pass --source DIR/ holding the CDD files"
    )


def _key_of(entry: object) -> str | None:
    """The series key of one listing entry (a file name, a URL, or an object holding one)."""
    if isinstance(entry, dict):
        names = (entry[name] for name in _NAME_FIELDS if isinstance(entry.get(name), str))
        entry = next(names, None)
    if not isinstance(entry, str):
        return None
    stem = PurePosixPath(unquote(urlsplit(entry).path)).name.removesuffix(".csv")
    try:
        return SeriesKey.parse(stem)
    except ValueError:
        return None


def directory_series(directory: Path) -> tuple[list[str], list[str]]:
    """The series keys of the CDD files in ``directory`` (``<key>.csv``), and the names of its
    other ``.csv`` files (not named as a series key)."""
    keys, others = [], []
    for path in sorted(directory.glob("*.csv")):
        try:
            keys.append(SeriesKey.parse(path.stem))
        except ValueError:
            others.append(path.name)
    return keys, others


@dataclass(frozen=True)
class Listing:
    """The keys of one listing, where they came from, and a warning when they are stale."""

    keys: tuple[str, ...]
    source: str
    fetched_at: datetime | None = None
    warning: str | None = None


@dataclass
class Catalogue:
    """The catalogue listing at ``location``, cached in ``cache_dir``.

    ``location`` is a URL or path; ``{exchange}`` in it is replaced by a pattern's exchange in
    lower case (CryptoDataDownload's URLs are). Without ``{exchange}`` it is one listing of
    every exchange. A local file is read as it is, never cached.
    """

    location: str
    cache_dir: Path
    settings: HttpSettings
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def listing(self, pattern: str) -> Listing:
        """The listing that resolves ``pattern``: the cached one when under a day old."""
        source = self.location
        if "{exchange}" in source:
            exchange = exchange_of(pattern)
            if exchange is None:
                raise CatalogueError(
                    f"pattern {pattern!r} does not name its exchange: CryptoDataDownload lists "
                    "its files per exchange, so write the exchange out (e.g. Bitstamp_*_d), or "
                    "set CDDF_CATALOGUE to a listing of every exchange, or pass --source DIR/"
                )
            source = source.replace("{exchange}", exchange.lower())
        if not is_http(source):
            return self._read_local(source)
        return self._cached(source, exchange_of(pattern))

    def _read_local(self, source: str) -> Listing:
        path = local_path(source)
        try:
            body = path.read_bytes()
        except OSError as error:
            raise CatalogueError(
                f"{path}: cannot read the catalogue listing ({error.strerror or error}); "
                f"{_listing_hint()}"
            ) from None
        return Listing(tuple(parse_listing(body, source=str(path))), str(path))

    def cache_path(self, url: str) -> Path:
        return self.cache_dir / f"listing-{hashlib.sha256(url.encode()).hexdigest()[:16]}.json"

    def _cached(self, url: str, exchange: str | None) -> Listing:
        shown, path = shown_url(url), self.cache_path(url)
        cached = self._read_cache(path)
        now = self.now()
        if cached is not None and now - cached.fetched_at < MAX_AGE:
            return cached
        try:
            fetched = download(url, settings=self.settings)
            keys = parse_listing(fetched.body or b"", source=shown)
        except SeriesNotFoundError:
            raise CatalogueError(
                f"{shown}: HTTP 404 - there is no catalogue listing at this URL: check the "
                f"exchange of the pattern ({exchange or 'none'}: CryptoDataDownload's exchange "
                "names, e.g. Binance, Bitstamp, Kraken) or CDDF_CATALOGUE"
            ) from None
        except (CDDDownloadError, CatalogueError) as error:
            if cached is None:
                raise CatalogueError(
                    f"the catalogue listing {shown} could not be fetched, and none is cached in "
                    f"{path}: {error}; {_listing_hint()}"
                ) from None
            age = _age(now - cached.fetched_at)
            warning = (
                f"the catalogue listing {shown} could not be refreshed ({error}); using the one "
                f"fetched {age} ago ({cached.fetched_at:%Y-%m-%d %H:%M} UTC, cached in {path})"
            )
            return Listing(cached.keys, cached.source, cached.fetched_at, warning)
        listing = Listing(tuple(keys), shown, now)
        try:
            self._write_cache(path, listing)
        except OSError as error:  # the listing is sound: use it, and say it was not kept
            warning = (
                f"the catalogue listing {shown} could not be cached in {self.cache_dir} "
                f"({error.strerror or error}), so every run fetches it again: set "
                "CDDF_CATALOGUE_CACHE to a writable folder"
            )
            return Listing(listing.keys, shown, now, warning)
        return listing

    def _read_cache(self, path: Path) -> Listing | None:
        """The listing cached in ``path`` (named by its URL's hash), None when there is none."""
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            fetched_at = datetime.fromisoformat(cached["fetched_at"])
            return Listing(tuple(cached["keys"]), cached["source"], fetched_at)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write_cache(self, path: Path, listing: Listing) -> None:
        assert listing.fetched_at is not None
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        document = {
            "source": listing.source,  # the URL as messages show it: no password
            "fetched_at": listing.fetched_at.isoformat(),
            "keys": list(listing.keys),
        }
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps(document), encoding="utf-8")
        partial.replace(path)  # a reader never sees half a cache file


def default_cache_dir() -> Path:
    """Where listings are cached unless CDDF_CATALOGUE_CACHE says: the user's cache folder
    (``$XDG_CACHE_HOME`` or ``~/.cache``), ``cdd-forecast/catalogue`` in it."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cdd-forecast" / "catalogue"


def _age(age: timedelta) -> str:
    """``age`` in words: ``3 days``, ``5 hours``, ``12 minutes``."""
    for unit, seconds in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if (count := int(age.total_seconds() // seconds)) >= 1:
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return "less than a minute"
