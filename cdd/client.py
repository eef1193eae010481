"""Fetch a CryptoDataDownload file: over HTTP(S) with retries and conditional GET, or locally.

>>> key = SeriesKey.parse("Bitstamp_BTCUSD_d")
>>> url = resolve_source(key, None, base_url="https://www.cryptodatadownload.com/cdd/")
>>> url
'https://www.cryptodatadownload.com/cdd/Bitstamp_BTCUSD_d.csv'
>>> resolve_source(key, "/data/", base_url="https://www.cryptodatadownload.com/cdd/")
'/data/Bitstamp_BTCUSD_d.csv'

Then, over the network::

    download(url, etag='"abc"', settings=get_settings()).not_modified  # True on a 304
"""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit, urlunsplit
from urllib.request import url2pathname

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from cdd.errors import (
    CDDDownloadError,
    CDDNetworkError,
    DownloadDeadlineError,
    DownloadTooLargeError,
    SeriesNotFoundError,
)
from cdd.series_key import SeriesKey


class HttpSettings(Protocol):
    """What a download reads of the service's settings (``settings.Settings`` has each)."""

    cdd_base_url: str
    http_connect_timeout: float
    http_read_timeout: float
    http_deadline: float
    http_retries: int
    http_max_bytes: int


BACKOFF_FACTOR = 1.0  # retries wait 0 s, 2 s, 4 s, ... (capped at BACKOFF_MAX)
BACKOFF_MAX = 30.0
RETRY_STATUSES = frozenset({429, *range(500, 600)})
CHUNK_BYTES = 1 << 20
MAX_REDIRECTS = 5

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


def shown_url(url: str) -> str:
    """``url`` with the secret of its userinfo masked, the only form a URL takes in messages.

    >>> shown_url("https://user:pa55@host/cdd/x.csv")
    'https://user:***@host/cdd/x.csv'
    >>> shown_url("https://t0ken@host/x.csv")    # a lone user name may be a token too
    'https://***@host/x.csv'
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, host = parts.netloc.rsplit("@", 1)
    masked = f"{userinfo.split(':', 1)[0]}:***" if ":" in userinfo else "***"
    return urlunsplit(parts._replace(netloc=f"{masked}@{host}"))


def refuse_credentials(source: str | None) -> None:
    """ValueError for an http(s) ``source`` that holds credentials (``user:password@``): a flow
    run's parameters are kept in clear in Prefect's database, so a flow never takes them.

    >>> refuse_credentials("https://host/cdd/")
    >>> refuse_credentials("https://user:pa55@host/cdd/")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: --source https://user:***@host/cdd/ holds credentials (user:password@)...
    """
    if source is None or not is_http(source) or "@" not in urlsplit(source).netloc:
        return
    parts = urlsplit(source)
    bare = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    raise ValueError(
        f"--source {shown_url(source)} holds credentials (user:password@), which a flow run "
        "would keep in clear in Prefect's database (its parameters): put them in a netrc file "
        f"instead - a line `machine {parts.hostname} login <user> password <password>` in "
        "~/.netrc, or in the file the NETRC variable names - which the download reads for that "
        f"host, and pass --source {bare}. (`cdd-forecast ingest` runs no flow and takes them "
        "in the URL.)"
    )


def user_agent() -> str:
    try:
        version = metadata.version("cdd-forecast")
    except metadata.PackageNotFoundError:
        version = "dev"
    return f"cdd-forecast/{version} (candle ingestion; python-requests/{requests.__version__})"


# The deadline (time.monotonic()) of the download this thread is making; None: no download.
_deadline = threading.local()


class _DeadlineSocket:
    """A connected socket each of whose reads and sends ends by the deadline of the download
    that uses it: its timeout is set to what is left of that deadline (at most the timeout
    urllib3 asked for) before each call, so a server that trickles its status line, headers or
    body one byte at a time is cut at the deadline, not one read timeout per byte later. No
    thread watches it: the waits themselves are bounded."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock, self._timeout = sock, sock.gettimeout()

    def __getattr__(self, name: str) -> object:
        return getattr(self._sock, name)

    def settimeout(self, value: float | None) -> None:
        self._timeout = value
        self._sock.settimeout(value)

    def gettimeout(self) -> float | None:
        return self._timeout

    def _bounded(self) -> socket.socket:
        at = getattr(_deadline, "at", None)
        timeout = self._timeout
        if at is not None:
            left = at - time.monotonic()
            if left <= 0:
                raise TimeoutError("the download's deadline (CDDF_HTTP_DEADLINE) passed")
            timeout = left if timeout is None else min(timeout, left)
        self._sock.settimeout(timeout)
        return self._sock

    def recv(self, *args: int) -> bytes:
        return self._bounded().recv(*args)

    def recv_into(self, *args: object) -> int:
        return self._bounded().recv_into(*args)  # type: ignore[arg-type]

    def send(self, *args: object) -> int:
        return self._bounded().send(*args)  # type: ignore[arg-type]

    def sendall(self, *args: object) -> None:
        self._bounded().sendall(*args)  # type: ignore[arg-type]

    def makefile(self, mode: str = "r", buffering: int | None = None, **kwargs: object) -> object:
        """The response's reader (http.client asks for ``rb``), reading through this socket."""
        if mode != "rb" or kwargs:
            raise ValueError(f"a download's socket reads in mode 'rb' only, not {mode!r}")
        self._sock._io_refs += 1  # type: ignore[attr-defined]  # as socket.makefile does
        size = io.DEFAULT_BUFFER_SIZE if buffering is None or buffering < 0 else buffering
        return io.BufferedReader(socket.SocketIO(self, "rb"), size)  # type: ignore[arg-type]


class _HTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        self.sock = _DeadlineSocket(self.sock)  # type: ignore[assignment]


class _HTTPSConnection(HTTPSConnection):
    def connect(self) -> None:  # the TLS handshake's reads: the connect timeout each
        super().connect()
        self.sock = _DeadlineSocket(self.sock)  # type: ignore[assignment]


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _DeadlineAdapter(HTTPAdapter):
    """An adapter whose connections (direct or through a proxy) are `_DeadlineSocket`s."""

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        super().init_poolmanager(*args, **kwargs)  # type: ignore[arg-type]
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: object) -> object:
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = _POOLS
        return manager


def make_session() -> requests.Session:
    """A session that makes one request per call (``download`` counts and retries them), each
    read and send of it bounded by its download's deadline."""
    session = requests.Session()
    adapter = _DeadlineAdapter(max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.max_redirects = MAX_REDIRECTS
    session.headers["User-Agent"] = user_agent()
    return session


def answers(url: str, *, settings: HttpSettings, within: float = 30.0) -> None:
    """Return once the server of ``url`` answers a HEAD (any status); requests' exception when
    it cannot be reached or has not answered, headers and all, within ``within`` seconds."""
    outer = getattr(_deadline, "at", None)
    _deadline.at = time.monotonic() + within
    try:
        with make_session() as session:
            session.head(
                url,
                timeout=(min(settings.http_connect_timeout, within), within),
                allow_redirects=True,
            ).close()
    finally:
        _deadline.at = outer


def download(
    source: str,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    settings: HttpSettings,
    session: requests.Session | None = None,
    on_progress: Progress | None = None,
) -> Download:
    """Fetch ``source`` (http(s) URL, ``file://`` URL or path) within the size limit and deadline.

    ``etag`` / ``last_modified`` make the GET conditional; a 304 gives ``body=None``. Failed
    connections, 429 and 5xx are retried ``http_retries`` times with backoff; every error says
    the URL (password masked) and how many requests were made.
    """
    if not is_http(source):
        return _read_local(source, settings.http_max_bytes, on_progress)
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    own_session = session is None
    session = session or make_session()
    try:
        return _Transfer(source, settings, session, on_progress).run(headers)
    finally:
        if own_session:
            session.close()


def _requests(count: int) -> str:
    return f"{count} request" if count == 1 else f"{count} requests"


def _connect_failed(error: requests.ConnectionError) -> bool:
    """True when no connection was made (refused, DNS, connect timeout): safe to retry."""
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(error, requests.ConnectTimeout) or isinstance(
        reason, NewConnectionError | ConnectTimeoutError
    )


class _Transfer:
    """One download of an http(s) URL: the retries, the deadline and what the errors say."""

    def __init__(
        self,
        source: str,
        settings: HttpSettings,
        session: requests.Session,
        on_progress: Progress | None,
    ) -> None:
        self.source, self.shown, self.settings = source, shown_url(source), settings
        self.session, self.on_progress = session, on_progress
        self.deadline = time.monotonic() + settings.http_deadline
        self.requests = 0

    def run(self, headers: dict[str, str]) -> Download:
        """The download, every socket wait of it bounded by the deadline (`_DeadlineSocket`)."""
        outer = getattr(_deadline, "at", None)
        _deadline.at = self.deadline
        try:
            return self._attempts(headers)
        finally:
            _deadline.at = outer

    def _past_deadline(self) -> bool:
        return time.monotonic() >= self.deadline

    def _attempts(self, headers: dict[str, str]) -> Download:
        retries = self.settings.http_retries
        for attempt in range(retries + 1):
            self._pause(attempt)
            try:
                response = self._get(headers)
            except requests.ConnectionError as error:
                if self._past_deadline():
                    raise self._deadline_error(0, None) from None
                if _connect_failed(error) and attempt < retries:
                    continue
                raise self._network_error(error) from error
            with response:
                self.requests += len(response.history)
                if response.status_code in RETRY_STATUSES and attempt < retries:
                    continue
                _check_status(response, self.source, self.settings, self.requests)
                if response.status_code == 304:
                    return Download(
                        self.shown,
                        None,
                        headers.get("If-None-Match"),
                        headers.get("If-Modified-Since"),
                    )
                body = self._read_body(response)
                return Download(
                    self.shown,
                    body,
                    response.headers.get("ETag"),
                    response.headers.get("Last-Modified"),
                )
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _pause(self, attempt: int) -> None:
        """Back off before a retry: 0 s, 2 s, 4 s, ... (urllib3's schedule), within the deadline."""
        if attempt == 0:
            return
        pause = 0.0 if attempt == 1 else min(BACKOFF_FACTOR * 2 ** (attempt - 1), BACKOFF_MAX)
        if time.monotonic() + pause > self.deadline:
            raise self._deadline_error(0, None)
        time.sleep(pause)

    def _get(self, headers: dict[str, str]) -> requests.Response:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self._deadline_error(0, None)
        self.requests += 1
        try:
            return self.session.get(
                self.source,
                headers=headers,
                stream=True,
                timeout=(
                    min(self.settings.http_connect_timeout, left),
                    self.settings.http_read_timeout,
                ),
            )
        except requests.TooManyRedirects as error:
            hops = [r.url for r in error.response.history] if error.response is not None else []
            self.requests += len(hops)
            last = shown_url(error.response.url) if error.response is not None else "?"
            raise CDDDownloadError(
                f"{self.shown}: more than {MAX_REDIRECTS} redirects (last to {last}) after "
                f"{_requests(self.requests)}; the server redirects in a loop - check the URL, "
                "or download the file elsewhere and pass it with --source"
            ) from None
        except requests.Timeout as error:
            if self._past_deadline():  # the status line or headers trickled in too slowly
                raise self._deadline_error(0, None) from None
            if isinstance(error, requests.ConnectTimeout):
                raise
            raise CDDNetworkError(
                f"{self.shown}: no answer within the timeouts (connect "
                f"{self.settings.http_connect_timeout:g} s, read "
                f"{self.settings.http_read_timeout:g} s) after {_requests(self.requests)}: "
                f"{_cause(error)}. {_offline_hint(self.source)}"
            ) from error
        except requests.ConnectionError:
            raise
        except requests.RequestException as error:  # invalid URL, a redirect to another scheme
            raise CDDDownloadError(
                f"{self.shown}: the request failed after {_requests(self.requests)}: "
                f"{shown_url(str(error))} - check the URL"
            ) from None

    def _network_error(self, error: requests.ConnectionError) -> CDDNetworkError:
        host = urlsplit(self.source).hostname
        if _connect_failed(error):
            what = f"cannot reach {host} ({_cause(error)})"
        else:
            what = f"the connection to {host} failed after it answered ({_cause(error)})"
        return CDDNetworkError(
            f"{what} for {self.shown} after {_requests(self.requests)}. "
            f"{_offline_hint(self.source)}"
        )

    def _deadline_error(self, read: int, total: int | None) -> DownloadDeadlineError:
        of = f" of {total:,}" if total is not None else ""
        return DownloadDeadlineError(
            f"{self.shown}: the download did not finish within {self.settings.http_deadline:g} s "
            f"(CDDF_HTTP_DEADLINE); {read:,}{of} bytes arrived in {_requests(self.requests)}. "
            "The link or server is too slow: try again later or raise CDDF_HTTP_DEADLINE. "
            f"{_offline_hint(self.source)}"
        )

    def _read_body(self, response: requests.Response) -> bytes:
        """The body, read as it arrives; each read ends by the deadline (`_DeadlineSocket`)."""
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        limit = self.settings.http_max_bytes
        if total is not None and total > limit:
            raise _too_large(self.shown, limit)
        chunks: list[bytes] = []
        read = 0
        try:
            while chunk := response.raw.read1(CHUNK_BYTES, decode_content=True):
                read += len(chunk)
                if read > limit:
                    raise _too_large(self.shown, limit)
                chunks.append(chunk)
                if self.on_progress is not None:
                    self.on_progress(read, total)
        except (ProtocolError, ReadTimeoutError, DecodeError, OSError) as error:
            if self._past_deadline():
                raise self._deadline_error(read, total) from None
            raise self._read_error(error, read, total) from error
        return b"".join(chunks)

    def _read_error(self, error: Exception, read: int, total: int | None) -> CDDDownloadError:
        of = f" of {total:,}" if total is not None else ""
        arrived = f"after {read:,}{of} bytes ({_requests(self.requests)})"
        if isinstance(error, DecodeError):
            return CDDDownloadError(
                f"{self.shown}: cannot decode the body {arrived}: {_cause(error)}; check the URL"
            )
        if isinstance(error, ReadTimeoutError):
            cause = f"no data for {self.settings.http_read_timeout:g} s (CDDF_HTTP_READ_TIMEOUT)"
        else:
            cause = _cause(error)
        return CDDNetworkError(
            f"{self.shown}: the download broke off {arrived}: {cause}. {_offline_hint(self.source)}"
        )


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
    return shown_url(str(reason).rsplit("): ", 1)[-1])


def _offline_hint(source: str) -> str:
    name = Path(urlsplit(source).path).name or "<series>.csv"
    return (
        f"If this host cannot be reached from here, download {name} elsewhere and pass it with "
        f"--source: `cdd-forecast ingest --series {Path(name).stem} --source /path/to/{name}` "
        "(or --source a directory or base URL ending in / that holds <series>.csv files)"
    )


def _check_status(
    response: requests.Response, source: str, settings: HttpSettings, requests_made: int
) -> None:
    code, shown = response.status_code, shown_url(source)
    if code in (200, 304):
        return
    if code == 404:
        name = Path(urlsplit(source).path).stem
        if source.startswith(settings.cdd_base_url):
            raise SeriesNotFoundError(
                f"{shown}: HTTP 404 - series {name!r} is unknown to CryptoDataDownload; check "
                "the exchange, pair and timeframe of the key (e.g. Bitstamp_BTCUSD_d) against "
                "the file names on cryptodatadownload.com"
            )
        raise SeriesNotFoundError(f"{shown}: HTTP 404 - no file {name}.csv there; check --source")
    if code in RETRY_STATUSES:
        raise CDDNetworkError(
            f"{shown}: HTTP {code} {response.reason} still after {settings.http_retries} "
            f"retries ({_requests(requests_made)}); the server is failing or rate-limiting - "
            "try again later"
        )
    raise CDDDownloadError(
        f"{shown}: HTTP {code} {response.reason} after {_requests(requests_made)}; the server "
        "refused the download - check the URL"
    )


def _too_large(source: str, limit: int) -> DownloadTooLargeError:
    return DownloadTooLargeError(
        f"{source}: the file is larger than the limit of {limit:,} bytes (CDDF_HTTP_MAX_BYTES); "
        "check the source, or raise the limit if the file is really that large"
    )


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
