"""The CDD client against a real HTTP server on 127.0.0.1 (pytest-httpserver)."""

from __future__ import annotations

import base64
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from cdd.client import answers, download, names_one_file, resolve_source, shown_url
from cdd.errors import (
    CDDDownloadError,
    CDDNetworkError,
    DownloadDeadlineError,
    DownloadTooLargeError,
    SeriesNotFoundError,
)
from cdd.series_key import SeriesKey
from settings import Settings
from tests.flows.cdd_files import make_candles, make_cdd_csv

KEY = SeriesKey.parse("Bitstamp_BTCUSD_d")
PATH = "/cdd/Bitstamp_BTCUSD_d.csv"
BODY = make_cdd_csv(KEY, make_candles(KEY, 20))


@pytest.fixture
def settings(httpserver: HTTPServer) -> Settings:
    return Settings(
        cdd_base_url=httpserver.url_for("/cdd/"),
        http_connect_timeout=2,
        http_read_timeout=2,
        http_retries=2,
        http_max_bytes=len(BODY) + 100,
    )


def test_downloads_with_validators_and_user_agent(httpserver: HTTPServer, settings) -> None:
    httpserver.expect_request(PATH, method="GET").respond_with_data(
        BODY, headers={"ETag": '"v1"', "Last-Modified": "Wed, 24 Sep 2025 00:05:00 GMT"}
    )
    fetched = download(httpserver.url_for(PATH), settings=settings)
    assert fetched.body == BODY and not fetched.not_modified
    assert (fetched.etag, fetched.last_modified) == ('"v1"', "Wed, 24 Sep 2025 00:05:00 GMT")
    assert fetched.content_hash is not None and len(fetched.content_hash) == 64
    request = httpserver.log[0][0]
    assert request.headers["User-Agent"].startswith("cdd-forecast/")
    assert "If-None-Match" not in request.headers


def test_conditional_get_answered_304(httpserver: HTTPServer, settings) -> None:
    httpserver.expect_request(
        PATH,
        headers={"If-None-Match": '"v1"', "If-Modified-Since": "Wed, 24 Sep 2025 00:05:00 GMT"},
    ).respond_with_data(b"", status=304)
    fetched = download(
        httpserver.url_for(PATH),
        etag='"v1"',
        last_modified="Wed, 24 Sep 2025 00:05:00 GMT",
        settings=settings,
    )
    assert fetched.not_modified and fetched.body is None and fetched.content_hash is None


@pytest.mark.parametrize("status", [500, 503, 429])
def test_retries_a_failing_server_until_it_answers(
    httpserver: HTTPServer, settings, status: int
) -> None:
    httpserver.expect_oneshot_request(PATH).respond_with_data(b"busy", status=status)
    httpserver.expect_request(PATH).respond_with_data(BODY)
    assert download(httpserver.url_for(PATH), settings=settings).body == BODY
    assert [response.status_code for _, response in httpserver.log] == [status, 200]


def test_gives_up_after_the_retries(httpserver: HTTPServer, settings) -> None:
    settings = settings.model_copy(update={"http_retries": 1})
    httpserver.expect_request(PATH).respond_with_data(b"down", status=502)
    with pytest.raises(
        CDDNetworkError, match=r"HTTP 502 .* after 1 retries \(2 requests\); .*try again later"
    ):
        download(httpserver.url_for(PATH), settings=settings)
    assert len(httpserver.log) == 2


def test_client_errors_are_not_retried(httpserver: HTTPServer, settings) -> None:
    httpserver.expect_request(PATH).respond_with_data(b"no", status=403)
    with pytest.raises(CDDDownloadError, match="HTTP 403") as raised:
        download(httpserver.url_for(PATH), settings=settings)
    assert not isinstance(raised.value, CDDNetworkError)
    assert len(httpserver.log) == 1


def test_404_says_the_series_is_unknown(httpserver: HTTPServer, settings) -> None:
    httpserver.expect_request("/cdd/Bitstamp_BTCXYZ_d.csv").respond_with_data(b"", status=404)
    with pytest.raises(SeriesNotFoundError, match="'Bitstamp_BTCXYZ_d' is unknown to Crypto"):
        download(httpserver.url_for("/cdd/Bitstamp_BTCXYZ_d.csv"), settings=settings)
    assert len(httpserver.log) == 1


@pytest.fixture
def released() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def test_slow_server_times_out(httpserver: HTTPServer, settings, released) -> None:
    def stall(request: Request) -> Response:
        released.wait(timeout=10)
        return Response(BODY)

    httpserver.expect_request(PATH).respond_with_handler(stall)
    settings = settings.model_copy(update={"http_read_timeout": 0.3})
    with pytest.raises(
        CDDNetworkError, match=r"no answer within the timeouts .*read 0.3 s.*--source"
    ):
        download(httpserver.url_for(PATH), settings=settings)
    released.set()


def test_body_over_the_limit_is_refused(httpserver: HTTPServer, settings) -> None:
    httpserver.expect_request(PATH).respond_with_data(BODY + b"x" * 200)
    with pytest.raises(DownloadTooLargeError, match="larger than the limit"):
        download(httpserver.url_for(PATH), settings=settings)


def test_streamed_body_over_the_limit_is_refused(httpserver: HTTPServer, settings) -> None:
    def chunks(request: Request) -> Response:  # no Content-Length: chunked transfer
        return Response(iter([BODY, b"x" * 200]))

    httpserver.expect_request(PATH).respond_with_handler(chunks)
    settings = settings.model_copy(update={"http_max_bytes": len(BODY) + 100})
    with pytest.raises(DownloadTooLargeError, match="CDDF_HTTP_MAX_BYTES"):
        download(httpserver.url_for(PATH), settings=settings)


def test_unreachable_host_says_how_to_pass_source(settings, unused_port: int) -> None:
    settings = settings.model_copy(update={"http_retries": 0})
    url = f"http://127.0.0.1:{unused_port}/cdd/Bitstamp_BTCUSD_d.csv"
    with pytest.raises(CDDNetworkError) as raised:
        download(url, settings=settings)
    message = str(raised.value)
    assert "cannot reach 127.0.0.1" in message and "Connection refused" in message
    assert "--source /path/to/Bitstamp_BTCUSD_d.csv" in message
    assert "after 1 request." in message


def test_an_unreachable_host_is_retried_and_the_count_is_true(settings, unused_port) -> None:
    url = f"http://127.0.0.1:{unused_port}/cdd/Bitstamp_BTCUSD_d.csv"
    with pytest.raises(CDDNetworkError, match=r"cannot reach 127.0.0.1 .* after 3 requests\."):
        download(url, settings=settings)  # http_retries=2: three connection attempts


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_local_path_and_file_url(tmp_path: Path, settings) -> None:
    path = tmp_path / "Bitstamp_BTCUSD_d.csv"
    path.write_bytes(BODY)
    assert download(str(path), settings=settings).body == BODY
    assert download(path.as_uri(), settings=settings).body == BODY
    with pytest.raises(CDDDownloadError, match="cannot read the file .*--source"):
        download(str(tmp_path / "missing.csv"), settings=settings)
    with pytest.raises(DownloadTooLargeError):
        download(str(path), settings=settings.model_copy(update={"http_max_bytes": 10}))


def test_resolve_source(tmp_path: Path) -> None:
    base = "https://www.cryptodatadownload.com/cdd/"
    assert resolve_source(KEY, None, base_url=base) == base + "Bitstamp_BTCUSD_d.csv"
    assert resolve_source(KEY, None, base_url=base.rstrip("/")) == base + "Bitstamp_BTCUSD_d.csv"
    assert resolve_source(KEY, "http://mirror/x/", base_url=base) == (
        "http://mirror/x/Bitstamp_BTCUSD_d.csv"
    )
    assert resolve_source(KEY, "http://mirror/a.csv", base_url=base) == "http://mirror/a.csv"
    assert resolve_source(KEY, str(tmp_path), base_url=base) == str(tmp_path / KEY.file_name)
    assert resolve_source(KEY, tmp_path.as_uri(), base_url=base) == str(tmp_path / KEY.file_name)
    assert resolve_source(KEY, str(tmp_path / "a.csv"), base_url=base) == str(tmp_path / "a.csv")
    assert names_one_file("http://mirror/a.csv") and names_one_file(str(tmp_path / "a.csv"))
    assert not names_one_file(None) and not names_one_file(str(tmp_path))
    assert not names_one_file("http://mirror/x/")


def test_a_trickling_server_is_cut_at_the_deadline(httpserver: HTTPServer, settings, released):
    def trickle(request: Request) -> Response:  # 10 bytes per 50 ms, for at most 5 s
        def body() -> Iterator[bytes]:
            for _ in range(100):
                if released.wait(0.05):
                    return
                yield b"x" * 10

        return Response(body(), headers={"Content-Length": "1000"})

    httpserver.expect_request(PATH).respond_with_handler(trickle)
    settings = settings.model_copy(update={"http_deadline": 0.6, "http_max_bytes": 10_000})
    started = time.monotonic()
    with pytest.raises(DownloadDeadlineError) as raised:
        download(httpserver.url_for(PATH), settings=settings)
    assert time.monotonic() - started < 2.0  # the read timeout (2 s) never fired
    message = str(raised.value)
    assert "did not finish within 0.6 s (CDDF_HTTP_DEADLINE)" in message
    arrived = int(message.split(" of 1,000 bytes arrived")[0].rsplit(" ", 1)[1].replace(",", ""))
    assert 10 <= arrived < 1000 and "in 1 request" in message
    assert not isinstance(raised.value, CDDNetworkError)  # a retry would only wait again


@pytest.fixture
def trickling_head(released) -> Iterator[str]:
    """A raw 127.0.0.1 server that sends its status line and headers one byte per 0.5 s (for
    at most 30 s), never a body: each byte is well within any read timeout."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\n" + b"X-Pad: x\r\n" * 5 + b"\r\n"

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.recv(65536)
            for byte in answer:
                if released.wait(0.5):
                    return
                self.request.sendall(bytes([byte]))

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler) as server:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield f"http://127.0.0.1:{server.server_address[1]}{PATH}"
        released.set()
        server.shutdown()


def test_the_deadline_covers_a_trickled_status_line_and_headers(trickling_head, settings):
    """The deadline once bounded the body only: a server trickling its status line and headers
    held the download past 200 s with CDDF_HTTP_DEADLINE=20."""
    settings = settings.model_copy(update={"http_deadline": 1.5})
    started = time.monotonic()
    with pytest.raises(DownloadDeadlineError) as raised:
        download(trickling_head, settings=settings)
    assert time.monotonic() - started < 1.5 + 2.0  # the read timeout (2 s) never fired
    message = str(raised.value)
    assert message.startswith(trickling_head)
    assert "did not finish within 1.5 s (CDDF_HTTP_DEADLINE)" in message


def test_the_reachability_probe_ends_within_its_bound(trickling_head, settings) -> None:
    """`cdd-forecast run` asks each host for a HEAD first; a trickled answer held it 30 s a
    byte."""
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        answers(trickling_head, settings=settings, within=1.0)
    assert time.monotonic() - started < 1.0 + 2.0


def test_a_redirect_loop_names_the_url(httpserver: HTTPServer, settings) -> None:
    httpserver.expect_request(PATH).respond_with_data(
        b"", status=302, headers={"Location": httpserver.url_for(PATH)}
    )
    with pytest.raises(CDDDownloadError, match="redirects in a loop") as raised:
        download(httpserver.url_for(PATH), settings=settings)
    message = str(raised.value)
    assert message.startswith(httpserver.url_for(PATH)) and "after 6 requests" in message
    assert len(httpserver.log) == 6


@pytest.fixture
def breaking_server() -> Iterator[tuple[str, list[bytes]]]:
    """A server that answers 200 with 10 of 1,000 promised bytes, then hangs up."""
    requests: list[bytes] = []

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            requests.append(self.request.recv(65536))
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"Unix,Date,")
            self.request.shutdown(socket.SHUT_RDWR)

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield f"http://127.0.0.1:{server.server_address[1]}{PATH}", requests
        server.shutdown()


def test_a_host_that_answered_is_not_called_unreachable(breaking_server, settings) -> None:
    url, requests = breaking_server
    with pytest.raises(CDDNetworkError) as raised:
        download(url, settings=settings)
    message = str(raised.value)
    assert "cannot reach" not in message and "tried" not in message
    assert "broke off after 10 of 1,000 bytes (1 request)" in message
    assert len(requests) == 1


def test_credentials_in_a_url_are_never_shown(httpserver: HTTPServer, settings) -> None:
    httpserver.expect_request(PATH).respond_with_data(b"no", status=403)
    url = httpserver.url_for(PATH).replace("://", "://alice:s3cret@")
    with pytest.raises(CDDDownloadError) as raised:
        download(url, settings=settings)
    assert "s3cret" not in str(raised.value) and "alice:***@127.0.0.1" in str(raised.value)
    httpserver.clear()
    httpserver.expect_request(PATH).respond_with_data(BODY)
    assert download(url, settings=settings).source == shown_url(url)
    assert "s3cret" not in shown_url(url)


def test_shown_url_masks_any_userinfo() -> None:
    assert shown_url("https://u:p%40ss@host:8443/x.csv?a=1") == "https://u:***@host:8443/x.csv?a=1"
    assert shown_url("https://token@host/x.csv") == "https://***@host/x.csv"
    assert shown_url("https://host/x.csv") == "https://host/x.csv"


def test_credentials_from_a_netrc_file_are_sent(
    httpserver: HTTPServer, settings, tmp_path, monkeypatch
) -> None:
    """Where `refuse_credentials` sends them: a netrc file (NETRC or ~/.netrc) for the host."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login alice password s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    basic = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    httpserver.expect_request(PATH, headers={"Authorization": basic}).respond_with_data(BODY)
    assert download(httpserver.url_for(PATH), settings=settings).body == BODY
