"""forecast_reader tried as a hostile analyst would: every write path and every way to block a
writer is refused, or bounded so that the writer finishes (docs/architecture.md, "Locks and
time limits"). The reader lifts every default it can (read-only transactions, its timeouts)
before each try, so what stops it is a missing privilege or the writer's own limits.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time

import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from cdd.series_key import SeriesKey
from db.candles import load_candles, upsert_candles
from db.engine import SessionLimits, make_engine
from db.roles import _LOCK_KEY, ReaderLimits, RolesError, ensure_roles
from tests.deploy import test_roles as roles

pytestmark = pytest.mark.postgres

roles_db = roles.roles_db  # a fresh migrated database and unused role names, dropped after
KEY = SeriesKey.parse("Bitstamp_BTCUSD_d")
# the advisory lock id every ingest of KEY waited for until issue 24; computable by anyone
OLD_SERIES_LOCK_ID = int.from_bytes(
    hashlib.blake2b(f"cdd-forecast candles {KEY.key}".encode(), digest_size=8).digest(),
    "big",
    signed=True,
)
LIMITS = ReaderLimits(connections=3, statement=300, idle_in_transaction=60, lock=10)

ADVISORY = [
    f"SELECT {function}({arguments})"
    for function in (
        "pg_advisory_lock",
        "pg_advisory_lock_shared",
        "pg_advisory_xact_lock",
        "pg_advisory_xact_lock_shared",
        "pg_try_advisory_lock",
        "pg_try_advisory_lock_shared",
        "pg_try_advisory_xact_lock",
        "pg_try_advisory_xact_lock_shared",
    )
    for arguments in ("1667523686", "99, 1")
] + ["SELECT pg_advisory_unlock_all()"]
LARGE_OBJECTS = [
    "SELECT lo_from_bytea(0, '\\x6869')",
    "SELECT lo_create(0)",
    "SELECT lo_creat(-1)",
    "SELECT lo_import('/etc/hostname')",
    "SELECT lo_put(1, 0, '\\x6869')",
    "SELECT lo_unlink(1)",
    "SELECT lo_open(1, 131072)",
]
WRITES = [
    "INSERT INTO series (key, exchange, pair, timeframe) VALUES ('X_YZ_d', 'X', 'YZ', 'd')",
    "UPDATE series SET pair = 'XX'",
    "DELETE FROM candles",
    "TRUNCATE candles",
    "COPY series FROM '/etc/hostname'",
    "COPY series FROM PROGRAM 'true'",
    "CREATE TABLE mine (id int)",
    "CREATE MATERIALIZED VIEW mine AS SELECT 1 AS one",
    "CREATE FUNCTION public.mine() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE FUNCTION pg_temp.mine() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE SCHEMA mine",
    "CREATE TEMP TABLE scratch (id int)",
    "CREATE TEMP VIEW scratch AS SELECT 1 AS one",
    "CREATE TEMP SEQUENCE scratch",
    "CREATE UNLOGGED TABLE mine (id int)",
]
ROW_AND_TABLE_LOCKS = (
    [
        f"SELECT 1 FROM {table} {clause}"
        for table in ("series", "candles", "latest_forecasts")
        for clause in ("FOR UPDATE", "FOR NO KEY UPDATE", "FOR SHARE", "FOR KEY SHARE")
    ]
    + [
        f"LOCK TABLE {table} IN {mode} MODE"
        for table in ("series", "candles")
        for mode in ("ROW SHARE", "ROW EXCLUSIVE", "SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE")
    ]
    + ["LOCK TABLE candles IN ACCESS EXCLUSIVE MODE"]
)
ROLE_CHANGES = ["ALTER ROLE {reader} CONNECTION LIMIT -1", "SET ROLE {app}"]


def _hostile(db: roles.RolesDatabase) -> psycopg.Connection:
    """The reader's connection with every default it may lift lifted."""
    connection = roles._reader(db)  # default_transaction_read_only off
    for setting in ("statement_timeout", "idle_in_transaction_session_timeout", "lock_timeout"):
        connection.execute(f"SET {setting} = 0")
    return connection


def _refused(connection: psycopg.Connection, statement: str, *, in_transaction: bool) -> bool:
    """Whether ``statement`` is refused for lack of a privilege, alone or in BEGIN READ WRITE
    (LOCK TABLE exists only in a transaction)."""
    in_transaction = in_transaction or statement.startswith("LOCK")
    try:
        if in_transaction:
            connection.execute("BEGIN READ WRITE")
        connection.execute(statement)
        if in_transaction:
            connection.execute("COMMIT")
    except psycopg.errors.InsufficientPrivilege:
        return True
    except psycopg.Error:  # allowed, and failed on something else (no such large object)
        return False
    finally:
        if in_transaction:
            connection.execute("ROLLBACK")
    return False


@pytest.mark.parametrize("in_transaction", [False, True], ids=["alone", "begin-read-write"])
def test_every_write_lock_and_large_object_path_is_refused(roles_db, in_transaction):
    roles_db.ensure(reader_limits=LIMITS)
    roles._seed(roles_db)
    statements = ADVISORY + LARGE_OBJECTS + WRITES + ROW_AND_TABLE_LOCKS
    statements += [
        s.format(reader=f'"{roles_db.reader_role}"', app=f'"{roles_db.app_role}"')
        for s in ROLE_CHANGES
    ]
    with _hostile(roles_db) as reader:
        allowed = [s for s in statements if not _refused(reader, s, in_transaction=in_transaction)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with reader.cursor().copy("COPY series FROM STDIN") as copy:
                copy.write_row(("X_YZ_d", "X", "YZ", "d"))
    assert allowed == []
    engine = sa.create_engine(roles_db.admin_url)
    with engine.connect() as connection:
        large_objects = connection.execute(sa.text("SELECT count(*) FROM pg_largeobject_metadata"))
        assert large_objects.scalar() == 0
        assert connection.execute(sa.text("SELECT key FROM series")).scalars().all() == [KEY.key]
    engine.dispose()


def test_the_reader_cannot_end_or_cancel_a_writer_session(roles_db):
    roles_db.ensure(reader_limits=LIMITS)
    with roles._as(roles_db, roles_db.app_role, roles_db.app_password) as app:
        pid = app.execute("SELECT pg_backend_pid()").fetchone()[0]
        with _hostile(roles_db) as reader:
            for function in ("pg_cancel_backend", "pg_terminate_backend"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    reader.execute(f"SELECT {function}({pid})")
        assert app.execute("SELECT 1").fetchone() == (1,)


def _candles(first: str, periods: int, close: float) -> pd.DataFrame:
    time_ = pd.date_range(first, periods=periods, freq="D", tz="UTC", name="time")
    return pd.DataFrame(
        {
            "open": close,
            "high": close + 1,
            "low": close - 1,
            "close": close,
            "volume_base": 10.0,
            "volume_quote": 11.0,
            "is_final": True,
        },
        index=time_,
    )


def test_a_reader_holding_every_lock_it_may_take_does_not_block_a_writer(roles_db):
    """The probe of issue 24: the reader sits in a transaction (its timeouts lifted) holding
    what it can on every table it reads, LISTENs and NOTIFYs, then sleeps 150 s; two ingests
    as the application role, the first of a new series and a re-ingest, finish meanwhile."""
    roles_db.ensure(reader_limits=LIMITS)
    roles._seed(roles_db)
    app_url = roles_db.url_as(roles_db.app_role, roles_db.app_password)
    writer = make_engine(app_url, limits=SessionLimits(lock=5))
    with _hostile(roles_db) as reader:
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):  # refused, see above
            reader.execute("SELECT pg_advisory_lock(%s)", [OLD_SERIES_LOCK_ID])
        reader.execute("BEGIN READ WRITE")
        for name in roles.READER_TABLES:
            reader.execute(f"LOCK TABLE {name} IN ACCESS SHARE MODE")
            reader.execute(f"SELECT * FROM {name}").fetchall()
        reader.execute("LISTEN cddf")
        reader.execute("NOTIFY cddf, 'hostile'")
        sleeping = threading.Thread(
            target=lambda: _ignore_cancel(reader, "SELECT pg_sleep(150)"), daemon=True
        )
        sleeping.start()
        time.sleep(0.5)  # let the sleep begin; the writers must not wait for it
        started = time.monotonic()
        try:
            for close in (1.0, 2.0):
                with Session(writer) as session, session.begin():
                    upsert_candles(session, KEY, _candles("2024-01-01", 5, close))
            waited = time.monotonic() - started
            stored = load_candles(writer, KEY.key)
        finally:
            reader.cancel_safe(timeout=5)
            sleeping.join(timeout=30)
            writer.dispose()
    assert stored["close"].tolist() == [2.0] * 5
    assert waited < 30  # unhindered: the writers took no lock the reader could hold


def _ignore_cancel(connection: psycopg.Connection, statement: str) -> None:
    try:
        connection.execute(statement)
    except psycopg.errors.QueryCanceled:
        pass


def test_ddl_behind_a_reader_transaction_ends_at_its_lock_timeout(roles_db):
    """What the reader can hold, ACCESS SHARE, only blocks DDL: `db roles` (and a migration)
    then ends at its own lock_timeout with a clear error, instead of waiting for the reader."""
    roles_db.ensure(reader_limits=LIMITS)
    with _hostile(roles_db) as reader:
        reader.execute("BEGIN")
        reader.execute("SELECT * FROM candles LIMIT 1").fetchall()
        engine = make_engine(roles_db.admin_url, limits=SessionLimits(lock=1))
        started = time.monotonic()
        try:
            with pytest.raises(RolesError, match="another session held a lock") as raised:
                ensure_roles(engine, app_role=roles_db.app_role, reader_role=roles_db.reader_role)
        finally:
            engine.dispose()
        waited = time.monotonic() - started
        reader.execute("ROLLBACK")
    assert "lock timeout" in str(raised.value) and "pg_terminate_backend" in str(raised.value)
    assert waited < 20  # lock_timeout 1 s


def test_a_second_role_step_waits_for_the_first_at_most_its_lock_timeout(roles_db):
    roles_db.ensure(reader_limits=LIMITS)
    engine = make_engine(roles_db.admin_url, limits=SessionLimits(lock=1))
    admin = make_url(roles_db.admin_url)
    with roles._as(roles_db, admin.username, admin.password or "") as first:
        first.execute("SELECT pg_advisory_lock(%s)", [_LOCK_KEY])  # a run in progress
        started = time.monotonic()
        try:
            with pytest.raises(RolesError, match="another `db roles`"):
                ensure_roles(engine, app_role=roles_db.app_role, reader_role=roles_db.reader_role)
        finally:
            engine.dispose()
        waited = time.monotonic() - started
    assert waited < 20  # lock_timeout 1 s


def test_the_reader_has_a_connection_limit_and_session_defaults(roles_db):
    report = roles_db.ensure(reader_limits=LIMITS)
    assert report.reader_limits == LIMITS
    with roles._reader(roles_db, read_write=False) as first:
        shown = {
            name: first.execute(f"SHOW {name}").fetchone()[0]
            for name in ("statement_timeout", "idle_in_transaction_session_timeout", "lock_timeout")
        }
        with roles._reader(roles_db), roles._reader(roles_db):
            with pytest.raises(psycopg.OperationalError, match="too many connections for role"):
                roles._reader(roles_db)
        # the defaults are only defaults: the role may lift them in its own session (which is
        # why no writer relies on them; see the tests above)
        first.execute("SET statement_timeout = 0")
        assert first.execute("SHOW statement_timeout").fetchone() == ("0",)
    assert shown == {
        "statement_timeout": "5min",
        "idle_in_transaction_session_timeout": "1min",
        "lock_timeout": "10s",
    }


def test_reader_limits_must_be_positive():
    with pytest.raises(ValueError, match="reader connections=0"):
        ReaderLimits(connections=0)
    with pytest.raises(ValueError, match="reader limit statement=-1"):
        ReaderLimits(statement=-1)
