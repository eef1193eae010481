"""Every wait on PostgreSQL has a bound: a silent server, a stuck writer, a server that goes
silent in the middle of a query (docs/architecture.md, "Locks and time limits").

Bounds are asserted generously (three times the documented time or more): a busy machine may
be slow, but never unbounded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InternalError, OperationalError
from sqlalchemy.orm import Session

from cdd.series_key import SeriesKey
from db.candles import upsert_candles
from db.candles_postgresql import lock_series
from db.engine import DatabaseUnreachableError, SessionLimits, make_engine, migrate
from tests.db.factory import make_candles
from tests.system.stack import interrupt_by_default

ROOT = Path(__file__).resolve().parents[2]
KEY = SeriesKey.parse("Bitstamp_BTCUSD_1h")


@contextmanager
def silent_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections and never sends a byte; its port."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        server.close()


class FreezingProxy:
    """Forwards TCP between clients and PostgreSQL until ``freeze()``; then keeps every socket
    open (the kernel still acknowledges) and forwards nothing more, as a hung server would."""

    url: str  # the database URL through the proxy (set by the fixture)

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.frozen = threading.Event()
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = []
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> None:
        self.frozen.set()

    def close(self) -> None:
        self.closed.set()
        for sock in [*self.sockets, self.server]:
            sock.close()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client = self.server.accept()[0]
            except (TimeoutError, OSError):
                continue
            self.sockets.append(client)
            if self.frozen.is_set():
                continue  # a new connection (a cancel request) is accepted, then ignored
            upstream = socket.create_connection(self.target)
            self.sockets.append(upstream)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                if self.frozen.is_set():
                    self.frozen.wait()  # swallow: read on (so the kernel ACKs), send nothing
                    continue
                sink.sendall(chunk)
        except OSError:
            return


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[FreezingProxy]:
    """A freezing proxy in front of the test database; ``proxy.url`` connects through it."""
    url = make_url(postgres_url)
    proxy = FreezingProxy(url.host or "127.0.0.1", url.port or 5432)
    proxy.url = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    yield proxy
    proxy.close()


def test_a_silent_server_ends_in_a_clear_error_naming_the_masked_url():
    with silent_server() as port:
        url = f"postgresql+psycopg://cddf:s3cret-pw@127.0.0.1:{port}/cddf"
        engine = make_engine(url, limits=SessionLimits(connect=2))
        started = time.monotonic()
        with pytest.raises(DatabaseUnreachableError) as raised:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        waited = time.monotonic() - started
        engine.dispose()
    message = str(raised.value)
    shown = f"cannot connect to the database postgresql+psycopg://cddf:***@127.0.0.1:{port}/cddf"
    assert message.startswith(shown)
    assert "s3cret-pw" not in message and "connection timeout expired" in message
    assert "at most 2 s" in message and "CDDF_DATABASE_URL" in message
    assert 2 <= waited < 10  # connect=2 s; never libpq's or psycopg's default of minutes


def test_the_default_connect_timeout_is_seconds_not_minutes():
    with silent_server() as port:
        engine = make_engine(f"postgresql+psycopg://cddf@127.0.0.1:{port}/cddf")
        started = time.monotonic()
        with pytest.raises(DatabaseUnreachableError, match="at most 10 s"):
            engine.connect().close()
        waited = time.monotonic() - started
        engine.dispose()
    assert SessionLimits().connect == 10
    assert waited < 40  # 10 s documented; psycopg's own default would be 130 s


@pytest.mark.parametrize(
    "field, value", [("lock", 0), ("statement", -1), ("connect", float("inf")), ("lock", None)]
)
def test_a_limit_that_is_not_a_positive_number_is_refused_by_name(field, value):
    with pytest.raises(ValueError, match=f"session limit {field}="):
        SessionLimits(**{field: value})


def test_sessions_carry_the_limits_and_the_url_wins(postgres_url):
    engine = make_engine(postgres_url, limits=SessionLimits(lock=7, idle_in_transaction=90))
    with engine.connect() as connection:
        shown = {
            name: connection.execute(text(f"SHOW {name}")).scalar()
            for name in (
                "lock_timeout",
                "statement_timeout",
                "idle_in_transaction_session_timeout",
                "tcp_keepalives_idle",
                "search_path",
            )
        }
        client = connection.connection.driver_connection.info.get_parameters()
    engine.dispose()
    assert shown["lock_timeout"] == "7s"
    assert shown["statement_timeout"] == "10min"
    assert shown["idle_in_transaction_session_timeout"] == "90s"
    assert shown["tcp_keepalives_idle"] == "30"
    assert shown["search_path"].startswith("t_")  # the fixture's own options survive
    assert client["connect_timeout"] == "10" and client["keepalives"] == "1"
    assert client["tcp_user_timeout"] == "30000" and client["keepalives_count"] == "3"

    url = make_url(postgres_url)
    options = f"{url.query['options']} -c lock_timeout=3s"
    explicit = url.update_query_dict({"options": options, "connect_timeout": "4"})
    engine = make_engine(explicit.render_as_string(hide_password=False))
    with engine.connect() as connection:
        assert connection.execute(text("SHOW lock_timeout")).scalar() == "3s"
        client = connection.connection.driver_connection.info.get_parameters()
    engine.dispose()
    assert client["connect_timeout"] == "4"


def test_a_stuck_writer_loses_its_series_lock_after_the_idle_timeout(postgres_url):
    """A worker frozen inside its transaction (SIGSTOP, a debugger) holds the series; the server
    ends its session after idle_in_transaction and the next writer proceeds."""
    stuck_engine = make_engine(postgres_url, limits=SessionLimits(idle_in_transaction=1))
    migrate(stuck_engine)
    engine = make_engine(postgres_url)
    with Session(engine) as session, session.begin():
        upsert_candles(session, KEY, make_candles(periods=3, timeframe="1h"))
    stuck = Session(stuck_engine)
    stuck.begin()
    lock_series(stuck, KEY)  # ... and then nothing more
    started = time.monotonic()
    try:
        with Session(engine) as session, session.begin():
            counts = upsert_candles(session, KEY, make_candles(periods=4, timeframe="1h"))
        waited = time.monotonic() - started
        with pytest.raises(InternalError, match="idle-in-transaction timeout"):
            stuck.commit()  # the server ended the frozen session, and its lock with it
    finally:
        stuck.close()
        stuck_engine.dispose()
        engine.dispose()
    assert counts.inserted == 1
    assert waited < 30  # 1 s idle_in_transaction_session_timeout; the writer's lock_timeout 60 s


def test_a_server_silent_mid_query_ends_in_a_clear_error_after_its_limits(postgres_url, proxy):
    """The server hangs after a first answer while its kernel still acknowledges (the proxy
    reads on and forwards nothing): keepalives cannot tell, statement_timeout runs on that
    server; the client gives up after statement + unacknowledged and names the server."""
    url, through = make_url(postgres_url), proxy.url
    limits = SessionLimits(statement=2, unacknowledged=2, connect=2)
    engine = make_engine(through, limits=limits)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            proxy.freeze()
            started = time.monotonic()
            with pytest.raises(OperationalError) as raised:
                connection.execute(text("SELECT 2"))
            waited = time.monotonic() - started
            assert connection.invalidated  # never handed out again
        with pytest.raises(DatabaseUnreachableError):  # the next connection finds no server
            engine.connect().close()
    finally:
        engine.dispose()
    where = f"{url.username}@127.0.0.1:{proxy.port}/{url.database}"
    assert f"no answer from the database {where} within 4 s" in str(raised.value)
    assert 4 <= waited < 20  # answer_within = 2 + 2 s


def _within(seconds: float, work) -> object:
    """``work()``'s result or exception, failing the test if it takes over ``seconds``."""
    outcome: list[object] = []
    thread = threading.Thread(target=lambda: outcome.append(_outcome(work)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still waiting after {seconds} s"
    return outcome[0]


def _outcome(work) -> object:
    try:
        return work()
    except Exception as error:  # returned for the test to inspect
        return error


def test_a_pooled_connection_to_a_server_gone_silent_is_given_up_within_seconds(proxy):
    """Between two statements the server hangs: the next checkout's pre-ping waits no longer
    than a connect would (not the minutes a statement may take), then a new connection is
    tried and the error names the database."""
    through = proxy.url
    engine = make_engine(through, limits=SessionLimits(connect=2))
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        proxy.freeze()
        started = time.monotonic()
        error = _within(60, lambda: engine.connect().close())
        waited = time.monotonic() - started
    finally:
        engine.dispose()
    assert isinstance(error, DatabaseUnreachableError), error
    assert f"127.0.0.1:{proxy.port}" in str(error)
    assert waited < 20  # ping 2 s + connect 2 s


def test_a_pooled_connection_the_server_ended_is_replaced_silently(postgres_url):
    engine = make_engine(postgres_url)
    admin = make_engine(postgres_url)
    try:
        with engine.connect() as connection:
            pid = connection.execute(text("SELECT pg_backend_pid()")).scalar()
        with admin.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with engine.connect() as connection:  # the pre-ping fails, the pool reconnects
            assert connection.execute(text("SELECT pg_backend_pid()")).scalar() != pid
    finally:
        admin.dispose()
        engine.dispose()


QUERY_THROUGH_PROXY = textwrap.dedent(
    """
    import sys
    from sqlalchemy import text
    from db.engine import make_engine
    engine = make_engine(sys.argv[1])
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
        print("connected", flush=True)
        sys.stdin.readline()   # the test freezes the proxy, then says go
        connection.execute(text("SELECT 2"))
    print("answered", flush=True)
    """
)


def test_a_server_silent_mid_query_is_ended_by_an_interrupt_within_seconds(proxy):
    """Keepalives cannot tell a hung server whose kernel still acknowledges from a slow one,
    and statement_timeout runs on that server: what ends the wait is the caller's interrupt
    (Ctrl-C, or SIGTERM turned into SystemExit). psycopg then tries to cancel (5 s), closes the
    connection (5 s more at most) and the interrupt goes on."""
    through = proxy.url
    process = subprocess.Popen(
        [sys.executable, "-c", QUERY_THROUGH_PROXY, through],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=interrupt_by_default,
    )
    try:
        assert process.stdout.readline().strip() == "connected"
        proxy.freeze()
        process.stdin.write("go\n")
        process.stdin.flush()
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=2)  # no answer comes: the query hangs
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        waited = time.monotonic() - started
    finally:
        process.kill()
        process.wait()
    assert process.returncode != 0 and "KeyboardInterrupt" in stderr
    assert waited < 40  # documented: about 10 s
