"""Fetch a CryptoDataDownload file: over HTTP(S) with retries and conditional GET, or locally.

>>> key = SeriesKey.parse("Bitstamp_BTCUSD_d")
>>> url = resolve_source(key, None, base_url="https://www.cryptodatadownload.com/cdd/")
>>> download(url, etag='"abc"').not_modified     # True when the server answers 304
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from db.series_key import SeriesKey
from db.settings import Settings, get_settings
from flows.cdd.errors import (
    CDDDownloadError,
    CDDNetworkError,
    DownloadTooLargeError,
    SeriesNotFoundError,
)

BACKOFF_FACTOR = 1.0  # urllib3: retries wait 0 s, 2 s, 4 s, ... (capped at BACKOFF_MAX)
BACKOFF_MAX = 30.0
RETRY_STATUSES = frozenset({429, *range(500, 600)})
CHUNK_BYTES = 1 << 20

Progress = Callable[[int, int | None], None]  # (bytes read, total bytes or None)


@dataclass(frozen=True)
class Download:
    """A fetched file; ``body`` is None when the server answered 304 Not Modified."""

    source: str
    body: bytes | None
    etag: str | None = None
    last_modified: str | None = None

    @property
    def not_modified(self) -> bool:
        return self.body is None

    @cached_property
    def content_hash(self) -> str | None:
        """SHA-256 of the body, hex."""
        return None if self.body is None else hashlib.sha256(self.body).hexdigest()


def is_http(source: str) -> bool:
    return urlsplit(source).scheme in ("http", "https")


def local_path(source: str) -> Path:
    """A local path or ``file://`` URL as a path."""
    parts = urlsplit(source)
    if parts.scheme == "file":
        return Path(url2pathname(unquote(parts.path)))
    return Path(source).expanduser()


def names_one_file(source: str | None) -> bool:
    """True when ``source`` is one file (not None, a directory, or a base URL ending in /)."""
    if source is None:
        return False
    if is_http(source):
        return not source.endswith("/")
    return not (source.endswith("/") or local_path(source).is_dir())


def resolve_source(key: SeriesKey, source: str | None, *, base_url: str) -> str:
    """The URL or path of ``key``'s file.

    None -> ``base_url`` + file name; a directory or a URL ending in ``/`` -> that place +
    ``<key>.csv``; anything else is the file itself.
    """
    if source is None:
        return base_url.rstrip("/") + "/" + key.file_name
    if not names_one_file(source):
        if is_http(source):
            return source + key.file_name
        return str(local_path(source) / key.file_name)
    return source if is_http(source) else str(local_path(source))


def user_agent() -> str:
    try:
        version = metadata.version("cdd-forecast")
    except metadata.PackageNotFoundError:
        version = "dev"
    return f"cdd-forecast/{version} (candle ingestion; python-requests/{requests.__version__})"


def make_session(settings: Settings | None = None) -> requests.Session:
    """A session retrying connection errors, 429 and 5xx (never read timeouts) with backoff."""
    settings = settings or get_settings()
    retry = Retry(
        total=None,
        connect=settings.http_retries,
        read=False,
        status=settings.http_retries,
        other=0,
        redirect=5,
        backoff_factor=BACKOFF_FACTOR,
        backoff_max=BACKOFF_MAX,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,
        respect_retry_after_header=False,  # a long Retry-After would stall the whole flow
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = user_agent()
    return session


def download(
    source: str,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    settings: Settings | None = None,
    session: requests.Session | None = None,
    on_progress: Progress | None = None,
) -> Download:
    """Fetch ``source`` (http(s) URL, ``file://`` URL or path) within the size limit.

    ``etag`` / ``last_modified`` make the GET conditional; a 304 gives ``body=None``.
    """
    settings = settings or get_settings()
    if not is_http(source):
        return _read_local(source, settings.http_max_bytes, on_progress)
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    own_session = session is None
    session = session or make_session(settings)
    try:
        with session.get(
            source,
            headers=headers,
            stream=True,
            timeout=(settings.http_connect_timeout, settings.http_read_timeout),
        ) as response:
            _check_status(response, source, settings)
            if response.status_code == 304:
                return Download(source, None, etag, last_modified)
            body = _read_body(response, source, settings.http_max_bytes, on_progress)
            return Download(
                source,
                body,
                response.headers.get("ETag"),
                response.headers.get("Last-Modified"),
            )
    except requests.Timeout as error:
        raise CDDNetworkError(
            f"{source}: no answer within the timeouts (connect "
            f"{settings.http_connect_timeout:g} s, read {settings.http_read_timeout:g} s): "
            f"{_cause(error)}. {_offline_hint(source)}"
        ) from error
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as error:
        host = urlsplit(source).hostname
        tries = f" (tried {settings.http_retries + 1} times)" if settings.http_retries else ""
        raise CDDNetworkError(
            f"cannot reach {host} ({_cause(error)}) for {source}{tries}. {_offline_hint(source)}"
        ) from error
    finally:
        if own_session:
            session.close()


def _cause(error: Exception) -> str:
    """The innermost reason of a requests/urllib3 error, without the pool's repr."""
    reason: object = error
    while True:
        inner = getattr(reason, "reason", None)
        if inner is None and isinstance(reason, Exception) and reason.args:
            first = reason.args[0]
            inner = first if isinstance(first, Exception) else None
        if inner is None or inner is reason:
            break
        reason = inner
    return str(reason).rsplit("): ", 1)[-1]


def _offline_hint(source: str) -> str:
    name = Path(urlsplit(source).path).name or "<series>.csv"
    return (
        f"If this host cannot be reached from here, download {name} elsewhere and pass it with "
        f"--source: `cdd-forecast ingest --series {Path(name).stem} --source /path/to/{name}` "
        "(or --source a directory or base URL ending in / that holds <series>.csv files)"
    )


def _check_status(response: requests.Response, source: str, settings: Settings) -> None:
    code = response.status_code
    if code in (200, 304):
        return
    if code == 404:
        name = Path(urlsplit(source).path).stem
        if source.startswith(settings.cdd_base_url):
            raise SeriesNotFoundError(
                f"{source}: HTTP 404 - series {name!r} is unknown to CryptoDataDownload; check "
                "the exchange, pair and timeframe of the key (e.g. Bitstamp_BTCUSD_d) against "
                "the file names on cryptodatadownload.com"
            )
        raise SeriesNotFoundError(f"{source}: HTTP 404 - no file {name}.csv there; check --source")
    if code in RETRY_STATUSES:
        raise CDDNetworkError(
            f"{source}: HTTP {code} {response.reason} still after {settings.http_retries} "
            "retries; the server is failing or rate-limiting - try again later"
        )
    raise CDDDownloadError(
        f"{source}: HTTP {code} {response.reason}; the server refused the download - check the URL"
    )


def _too_large(source: str, limit: int) -> DownloadTooLargeError:
    return DownloadTooLargeError(
        f"{source}: the file is larger than the limit of {limit:,} bytes (CDDF_HTTP_MAX_BYTES); "
        "check the source, or raise the limit if the file is really that large"
    )


def _read_body(
    response: requests.Response, source: str, limit: int, on_progress: Progress | None
) -> bytes:
    length = response.headers.get("Content-Length")
    total = int(length) if length and length.isdigit() else None
    if total is not None and total > limit:
        raise _too_large(source, limit)
    chunks: list[bytes] = []
    read = 0
    for chunk in response.iter_content(chunk_size=CHUNK_BYTES):
        read += len(chunk)
        if read > limit:
            raise _too_large(source, limit)
        chunks.append(chunk)
        if on_progress is not None:
            on_progress(read, total)
    return b"".join(chunks)


def _read_local(source: str, limit: int, on_progress: Progress | None) -> Download:
    path = local_path(source)
    try:
        size = path.stat().st_size
        if size > limit:
            raise _too_large(str(path), limit)
        body = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as error:
        raise CDDDownloadError(
            f"{path}: cannot read the file ({error.strerror or error}); pass an existing CDD "
            "CSV file, a directory holding <series>.csv files, or a URL with --source"
        ) from error
    if on_progress is not None:
        on_progress(len(body), len(body))
    return Download(str(path), body)
