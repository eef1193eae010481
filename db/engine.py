"""Engines and schema migration for SQLite and PostgreSQL.

>>> engine = make_engine("sqlite:///cdd_forecast.sqlite")
>>> migrate(engine)          # alembic upgrade head; a no-op when already there

Every PostgreSQL session is bounded by :class:`SessionLimits` (docs/architecture.md, "Locks and
time limits"); the caller passes its own, db/ reads no settings for them.
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import psycopg
from pydantic import SecretStr
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import OperationalError, StatementError

import migrations

MIGRATIONS_DIR = Path(migrations.__file__).parent


@dataclass(frozen=True)
class SessionLimits:
    """How long a PostgreSQL session may wait, in seconds; each must be positive.

    ``connect``: to open a connection, per address the host name resolves to (libpq's
    ``connect_timeout``, at least 2 s); a server that accepts and never answers ends here.
    ``lock``: for any one lock (``lock_timeout``): a writer queued behind another ingest of the
    same series, a migration behind a reader's open transaction.
    ``statement``: for one statement (``statement_timeout``); the longest legitimate ones, a
    minute file's COPY (1,000,000 candles: 4 s) and a migration, fit many times over.
    ``idle_in_transaction``: between two statements of one transaction; the server then ends
    the session and frees its locks (a frozen or stopped worker).
    ``keepalive_idle``/``keepalive_interval``/``keepalive_count``: TCP keepalives on an idle
    connection; a peer that stopped answering is found dead after idle + interval x count.
    ``unacknowledged``: how long sent data may stay unacknowledged (``tcp_user_timeout``).

    The client waits for any one answer of the server at most ``answer_within`` (statement +
    unacknowledged): by then the server has answered or cancelled the statement itself, so a
    server that hung while its kernel still acknowledges (keepalives cannot tell) is given up:
    the connection is closed and the error names the server.

    SessionLimits(lock=5)   # a caller that would rather fail fast than queue
    """

    connect: float = 10
    lock: float = 60
    statement: float = 600
    idle_in_transaction: float = 120
    keepalive_idle: float = 30
    keepalive_interval: float = 10
    keepalive_count: int = 3
    unacknowledged: float = 30

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(
                    f"session limit {name}={value!r}: give a positive number of seconds "
                    "(a missing limit would let a silent server or a held lock wait forever)"
                )

    @property
    def answer_within(self) -> float:
        return self.statement + self.unacknowledged

    def connect_args(self) -> dict[str, int]:
        """The libpq connection parameters (seconds rounded up; tcp_user_timeout in ms)."""
        return {
            "connect_timeout": max(2, math.ceil(self.connect)),
            "keepalives": 1,
            "keepalives_idle": math.ceil(self.keepalive_idle),
            "keepalives_interval": math.ceil(self.keepalive_interval),
            "keepalives_count": int(self.keepalive_count),
            "tcp_user_timeout": math.ceil(self.unacknowledged * 1000),
        }

    def server_options(self) -> str:
        """The server's session settings, as libpq ``options``."""
        milliseconds = {
            "lock_timeout": self.lock,
            "statement_timeout": self.statement,
            "idle_in_transaction_session_timeout": self.idle_in_transaction,
            "tcp_user_timeout": self.unacknowledged,
        }
        seconds = {  # the server's side of the keepalives: it finds a vanished worker dead
            "tcp_keepalives_idle": self.keepalive_idle,
            "tcp_keepalives_interval": self.keepalive_interval,
            "tcp_keepalives_count": self.keepalive_count,
        }
        return " ".join(
            [f"-c {name}={math.ceil(value * 1000)}" for name, value in milliseconds.items()]
            + [f"-c {name}={math.ceil(value)}" for name, value in seconds.items()]
        )


class DatabaseUnreachableError(OperationalError):
    """No connection to the database; the message names the (masked) URL and what to do."""

    def __init__(self, message: str, orig: BaseException) -> None:
        StatementError.__init__(self, message, None, None, orig)


class _AnsweringConnection(psycopg.Connection):
    """A psycopg connection that waits for each answer of the server ``answer_within`` s at
    most, then closes itself; psycopg alone would wait forever for a server that hung."""

    answer_within: float | None = None

    def wait(self, gen, *args, **kwargs):  # every round trip of psycopg's sync API goes here
        if self.answer_within is None or args or kwargs.get("timeout") is not None:
            return super().wait(gen, *args, **kwargs)
        try:
            return super().wait(gen, timeout=self.answer_within, **kwargs)
        except psycopg.OperationalError as error:
            if type(error).__name__ != "_WaitTimeout":  # psycopg's own wait timed out
                raise
        where = f"{self.info.user}@{self.info.host}:{self.info.port}/{self.info.dbname}"
        self.close()
        raise psycopg.OperationalError(
            f"no answer from the database {where} within {self.answer_within:g} s "
            "(statement_timeout and tcp_user_timeout passed): the server hangs or the network "
            "drops its replies; the connection was closed, run the command again when the "
            "server answers"
        )


def make_engine(url: str, *, limits: SessionLimits | None = None) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and enforced foreign keys,
    PostgreSQL sessions the time limits of ``limits`` (default :class:`SessionLimits`).

    Parameters written into the URL (``?connect_timeout=3``, ``options=-c lock_timeout=5s``)
    win over ``limits``; the client's own bound on each answer (``answer_within``) follows
    ``limits`` alone, so a longer ``statement_timeout`` belongs in ``limits``, not the URL.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    limits = limits or SessionLimits()
    connect_args: dict[str, object] = {
        name: value for name, value in limits.connect_args().items() if name not in parsed.query
    }
    given = parsed.query.get("options", ())
    given = (given,) if isinstance(given, str) else given
    connect_args["options"] = " ".join((limits.server_options(), *given))  # later -c wins
    engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    shown = masked_url(url)

    @event.listens_for(engine, "do_connect")
    def _bounded_connection(_dialect, _record, cargs, cparams) -> psycopg.Connection:
        connection = _AnsweringConnection.connect(*cargs, **cparams)
        connection.answer_within = limits.answer_within
        return connection

    ping = engine.dialect.do_ping

    def _ping_within_connect(dbapi_connection: _AnsweringConnection) -> bool:
        """A pooled connection's pre-ping waits as long as a new connection would, no more."""
        patience = dbapi_connection.answer_within
        dbapi_connection.answer_within = limits.connect
        try:
            return ping(dbapi_connection)
        finally:
            dbapi_connection.answer_within = patience

    engine.dialect.do_ping = _ping_within_connect  # this engine's own dialect instance

    @event.listens_for(engine, "handle_error")
    def _name_the_database(context: ExceptionContext) -> None:
        unreachable = isinstance(context.sqlalchemy_exception, OperationalError)
        # a failed pre-ping is not an answer: the pool then replaces that connection
        if unreachable and context.connection is None and not context.is_pre_ping:
            raise DatabaseUnreachableError(
                f"cannot connect to the database {shown}: {context.original_exception}. "
                f"Check that PostgreSQL runs there and answers (each attempt waits at most "
                f"{limits.connect:g} s), or fix CDDF_DATABASE_URL",
                context.original_exception,
            )

    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def alembic_config(engine: Engine):
    """An Alembic config that runs the project's revisions against ``engine``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to ``revision`` (idempotent)."""
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(engine), revision)


def needs_migration(engine: Engine) -> bool:
    """True when the database is not at the newest revision."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    heads = set(ScriptDirectory.from_config(alembic_config(engine)).get_heads())
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return True
        current = set(MigrationContext.configure(connection).get_current_heads())
    return current != heads


@lru_cache(maxsize=8)
def _cached_engine(url: str, limits: SessionLimits | None) -> Engine:
    return make_engine(url, limits=limits)


_READY: set[str] = set()  # URLs whose schema was found at the newest revision
_READY_LOCK = threading.Lock()


def get_engine(url: str | None = None, *, limits: SessionLimits | None = None) -> Engine:
    """The service's engine (one per URL and limits), its schema ready to use.

    The schema is checked once per URL and process. An empty SQLite file is migrated on first
    use, so the main job needs no extra step; any other database that is behind raises and says
    to run ``cdd-forecast db upgrade``.
    """
    if url is None:
        from settings import get_settings

        url = get_settings().database_url.get_secret_value()
    engine = _cached_engine(url, limits)
    if url in _READY:
        return engine
    with _READY_LOCK:
        if url not in _READY:
            _ensure_schema(engine, url)
            _READY.add(url)
    return engine


def _ensure_schema(engine: Engine, url: str) -> None:
    if not needs_migration(engine):
        return
    if engine.dialect.name != "sqlite":
        raise RuntimeError(
            f"the database {masked_url(url)} is not at the newest schema revision: "
            "run `cdd-forecast db upgrade` first"
        )
    migrate(engine)


def clear_engine_cache() -> None:
    """Dispose every cached engine and forget the schema checks (tests, settings changes)."""
    with _READY_LOCK:
        _READY.clear()
    _cached_engine.cache_clear()


def masked_url(url: str | SecretStr) -> str:
    """The database URL with its password hidden, safe for logs and error messages."""
    raw = url.get_secret_value() if isinstance(url, SecretStr) else url
    try:
        return make_url(raw).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"
