"""The roles on the real PostgreSQL: forecast_reader reads the analysts' relations and nothing
else; the application role owns the tables; every run of the role step is idempotent.

Each test gets its own database and its own role names (roles are cluster-wide), dropped after.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from db.engine import make_engine, migrate
from db.roles import (
    ANALYST_VIEWS,
    READER_TABLES,
    RolesError,
    ensure_roles,
    project_relations,
)
from tests.conftest import POSTGRES_URL, require_postgres
from tests.deploy.compose import doc_blocks

pytestmark = pytest.mark.postgres

CLI = Path(sys.executable).with_name("cdd-forecast")


@dataclass
class RolesDatabase:
    admin_url: str  # the superuser, as the migrate step connects
    app_role: str
    reader_role: str
    app_password: str
    reader_password: str

    def url_as(self, role: str, password: str) -> str:
        return (
            make_url(self.admin_url)
            .set(username=role, password=password)
            .render_as_string(hide_password=False)
        )

    def ensure(self, **overrides) -> object:
        engine = make_engine(self.admin_url)
        try:
            return ensure_roles(
                engine,
                **{
                    "app_role": self.app_role,
                    "reader_role": self.reader_role,
                    "app_password": SecretStr(self.app_password),
                    "reader_password": SecretStr(self.reader_password),
                    **overrides,
                },
            )
        finally:
            engine.dispose()


@pytest.fixture
def roles_db() -> Iterator[RolesDatabase]:
    """A fresh database at the newest schema, and unused role names."""
    require_postgres()
    tag = uuid.uuid4().hex[:10]
    name = f"cddf_roles_{tag}"
    server = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin_url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    database = RolesDatabase(
        admin_url, f"app_{tag}", f"reader_{tag}", f"app-{uuid.uuid4().hex}", uuid.uuid4().hex
    )
    try:
        engine = make_engine(admin_url)
        migrate(engine)
        engine.dispose()
        yield database
    finally:
        with server.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            for role in (database.app_role, database.reader_role):
                connection.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
        server.dispose()


def _as(db: RolesDatabase, role: str, password: str) -> psycopg.Connection:
    url = make_url(db.url_as(role, password))
    return psycopg.connect(
        host=url.host,
        port=url.port,
        dbname=url.database,
        user=url.username,
        password=password,
        autocommit=True,
    )


def _reader(db: RolesDatabase, *, read_write: bool = True) -> psycopg.Connection:
    """The reader's connection; ``read_write`` lifts its read-only default, so that what stops
    a write below is the lack of a privilege, not the default."""
    connection = _as(db, db.reader_role, db.reader_password)
    if read_write:
        connection.execute("SET default_transaction_read_only = off")
    return connection


def _denied(connection: psycopg.Connection, statement: str) -> bool:
    try:
        connection.execute(statement)
    except psycopg.errors.InsufficientPrivilege:
        return True
    return False


def _seed(db: RolesDatabase) -> None:
    engine = sa.create_engine(db.admin_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO series (key, exchange, pair, timeframe) "
            "VALUES ('Bitstamp_BTCUSD_d', 'Bitstamp', 'BTCUSD', 'd')"
        )
    engine.dispose()


def test_reader_selects_the_analyst_tables_and_views(roles_db):
    report = roles_db.ensure()
    _seed(roles_db)
    with _reader(roles_db) as reader:
        for name in (*READER_TABLES, *ANALYST_VIEWS):
            reader.execute(f"SELECT * FROM {name} LIMIT 1").fetchall()
        assert reader.execute("SELECT key FROM series").fetchall() == [("Bitstamp_BTCUSD_d",)]
        columns = ", ".join(report.model_version_columns)
        reader.execute(f"SELECT {columns} FROM model_versions").fetchall()
    assert set(report.readable) == {*READER_TABLES, *ANALYST_VIEWS}
    assert "artifact" not in report.model_version_columns
    assert {"id", "series", "kind", "artifact_sha256"} <= set(report.model_version_columns)


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO series (key, exchange, pair, timeframe) VALUES ('X_Y_d', 'X', 'Y', 'd')",
        "UPDATE candles SET close = 0",
        "DELETE FROM forecasts",
        "DELETE FROM series",
        "TRUNCATE forecast_metrics",
        "ALTER TABLE forecasts ADD COLUMN note text",
        "ALTER TABLE series RENAME TO series_old",
        "DROP VIEW latest_forecasts",
        "CREATE TABLE mine (id int)",
        "CREATE VIEW mine AS SELECT 1 AS one",
        "CREATE TEMP TABLE scratch (id int)",
        "CREATE INDEX ix_mine ON candles (close)",
        "SELECT artifact FROM model_versions",
        "SELECT * FROM model_versions",
        "SELECT * FROM ingest_runs",
        "SELECT * FROM alembic_version",
        "GRANT SELECT ON ingest_runs TO PUBLIC",
    ],
)
def test_reader_cannot_write_alter_create_or_read_artifacts(roles_db, statement):
    roles_db.ensure()
    with _reader(roles_db) as reader:
        assert _denied(reader, statement), f"forecast_reader was allowed: {statement}"


def test_reader_sessions_are_read_only_by_default(roles_db):
    roles_db.ensure()
    with _reader(roles_db, read_write=False) as reader:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            reader.execute("DELETE FROM forecasts")


def test_application_role_owns_every_table_and_can_write(roles_db):
    report = roles_db.ensure()
    engine = sa.create_engine(roles_db.admin_url)
    with engine.connect() as connection:
        owners = dict(
            connection.execute(
                sa.text(
                    "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v')"
                )
            ).all()
        )
        verifiers = (
            connection.execute(
                sa.text("SELECT rolpassword FROM pg_authid WHERE rolname IN (:a, :r)"),
                {"a": roles_db.app_role, "r": roles_db.reader_role},
            )
            .scalars()
            .all()
        )
    engine.dispose()
    assert set(report.owned) == set(project_relations()) == set(owners)
    assert set(owners.values()) == {roles_db.app_role}
    assert len(verifiers) == 2 and all(v.startswith("SCRAM-SHA-256$") for v in verifiers)
    assert not any(roles_db.app_password in v or roles_db.reader_password in v for v in verifiers)
    with _as(roles_db, roles_db.app_role, roles_db.app_password) as app:
        app.execute(
            "INSERT INTO series (key, exchange, pair, timeframe) VALUES ('A_BC_d', 'A', 'BC', 'd')"
        )
        app.execute("CREATE TEMP TABLE staging (id int)")  # the candles COPY needs this
        assert app.execute("SELECT count(*) FROM series").fetchone() == (1,)


def test_application_role_runs_the_candle_ingestion(roles_db):
    """What a worker does as cddf_app: COPY candles in (twice: the second through a temporary
    table) and read them back."""
    import pandas as pd
    from sqlalchemy.orm import Session

    from cdd.series_key import SeriesKey
    from db.candles import load_candles, upsert_candles

    roles_db.ensure()
    time = pd.date_range("2024-01-01", periods=5, freq="D", tz="UTC", name="time")
    candles = pd.DataFrame(
        {
            "open": 1.0,
            "high": 2.0,
            "low": 0.5,
            "close": [1.0, 1.1, 1.2, 1.3, 1.4],
            "volume_base": 10.0,
            "volume_quote": 11.0,
            "is_final": True,
        },
        index=time,
    )
    key = SeriesKey.parse("Bitstamp_BTCUSD_d")
    engine = make_engine(roles_db.url_as(roles_db.app_role, roles_db.app_password))
    try:
        with Session(engine) as session, session.begin():
            upsert_candles(session, key, candles)
        changed = candles.assign(close=candles["close"] + 1)
        with Session(engine) as session, session.begin():
            counts = upsert_candles(session, key, changed)
        stored = load_candles(engine, key.key)
    finally:
        engine.dispose()
    assert counts.updated == 5
    assert stored["close"].tolist() == changed["close"].tolist()


def test_rerun_is_idempotent_and_takes_back_extra_privileges(roles_db):
    first = roles_db.ensure()
    assert set(first.created) == {roles_db.app_role, roles_db.reader_role}
    reader = roles_db.reader_role
    engine = sa.create_engine(roles_db.admin_url)
    with engine.begin() as connection:  # what a careless administrator might have granted
        for statement in (
            f'GRANT SELECT, INSERT ON ingest_runs TO "{reader}"',
            f'GRANT UPDATE ON forecasts TO "{reader}"',
            f'GRANT SELECT (artifact) ON model_versions TO "{reader}"',
            f'GRANT pg_read_all_data TO "{reader}"',
            f'ALTER ROLE "{reader}" CREATEDB',
            f'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO "{reader}"',
            f'GRANT EXECUTE ON FUNCTION lo_from_bytea(oid, bytea) TO "{reader}"',
            "GRANT EXECUTE ON FUNCTION pg_advisory_lock(bigint) TO PUBLIC",
            f'ALTER ROLE "{reader}" CONNECTION LIMIT -1',
        ):
            connection.exec_driver_sql(statement)
    second = roles_db.ensure(app_password=None, reader_password=None)
    third = roles_db.ensure()
    assert second.created == () and third.created == ()
    assert second.passwords_set == () and set(third.passwords_set) == {roles_db.app_role, reader}
    assert (second.owned, second.readable) == (first.owned, first.readable)
    with engine.begin() as connection:  # a table created after the role step
        connection.exec_driver_sql("CREATE TABLE later_secrets (token text)")
        attributes = connection.execute(
            sa.text("SELECT rolcreatedb, rolsuper, rolconnlimit FROM pg_roles WHERE rolname = :r"),
            {"r": reader},
        ).one()
    engine.dispose()
    assert tuple(attributes) == (False, False, third.reader_limits.connections)
    with _reader(roles_db) as connection:
        for statement in (
            "SELECT * FROM ingest_runs",
            "UPDATE forecasts SET value = 0",
            "SELECT artifact FROM model_versions",
            "SELECT * FROM later_secrets",
            "SELECT lo_from_bytea(0, 'x')",
            "SELECT pg_advisory_lock(1)",
        ):
            assert _denied(connection, statement), f"still allowed after the rerun: {statement}"
        connection.execute("SELECT * FROM latest_forecasts").fetchall()


def test_refuses_bad_names_superusers_and_a_schema_without_tables(roles_db):
    with pytest.raises(RolesError, match="not a plain PostgreSQL name"):
        roles_db.ensure(reader_role="reader; DROP TABLE candles")
    with pytest.raises(RolesError, match="must differ"):
        roles_db.ensure(reader_role=roles_db.app_role)
    with pytest.raises(RolesError, match="connected as 'postgres'|is a superuser"):
        roles_db.ensure(app_role=make_url(POSTGRES_URL).username or "postgres")
    engine = sa.create_engine(roles_db.admin_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE SCHEMA empty_schema")
    engine.dispose()
    with pytest.raises(RolesError, match="run `cdd-forecast db upgrade` first"):
        roles_db.ensure(schema="empty_schema")
    with pytest.raises(RolesError, match="only on PostgreSQL"):
        ensure_roles(make_engine("sqlite://"))


def _cli(url: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [str(CLI), "db", "roles"],
        env={**clean, "CDDF_DATABASE_URL": url, **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent,  # no .env here
    )


def test_cli_creates_the_roles_and_never_prints_a_password(roles_db):
    # trust authentication ignores the password in the URL; it must still never be printed
    url_password = f"url-{uuid.uuid4().hex}"
    url = (
        make_url(roles_db.admin_url)
        .set(password=url_password)
        .render_as_string(hide_password=False)
    )
    env = {
        "CDDF_APP_ROLE": roles_db.app_role,
        "CDDF_READER_ROLE": roles_db.reader_role,
        "CDDF_APP_PASSWORD": roles_db.app_password,
        "CDDF_READER_PASSWORD": roles_db.reader_password,
    }
    done = _cli(url, env)
    assert done.returncode == 0, done.stderr
    assert "***" in done.stdout and roles_db.reader_role in done.stdout
    again = _cli(url, env)
    assert again.returncode == 0, again.stderr
    output = done.stdout + done.stderr + again.stdout + again.stderr
    for secret in (url_password, roles_db.app_password, roles_db.reader_password):
        assert secret not in output
    with _reader(roles_db) as reader:
        reader.execute("SELECT * FROM model_leaderboard").fetchall()


def test_cli_error_names_the_cause_without_the_password(roles_db):
    url_password = f"url-{uuid.uuid4().hex}"
    engine = sa.create_engine(roles_db.admin_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE SCHEMA nothing_here")
    engine.dispose()
    bare = make_url(roles_db.admin_url).set(password=url_password)
    url = bare.set(query={"options": "-csearch_path=nothing_here"}).render_as_string(
        hide_password=False
    )
    done = _cli(url, {"CDDF_APP_ROLE": roles_db.app_role, "CDDF_READER_ROLE": roles_db.reader_role})
    assert done.returncode == 1
    assert "run `cdd-forecast db upgrade` first" in done.stderr
    assert url_password not in done.stdout + done.stderr


def test_the_analyst_queries_of_docs_deploy_run_as_the_reader(roles_db):
    roles_db.ensure()
    _seed(roles_db)
    statements = [s.strip() for block in doc_blocks("sql") for s in block.split(";") if s.strip()]
    assert len(statements) >= 2
    with _reader(roles_db, read_write=False) as reader:
        for statement in statements:
            reader.execute(statement).fetchall()


@pytest.fixture
def other_database(roles_db: RolesDatabase) -> Iterator[str]:
    """Another database on the same server, as the server's postgres or prefect databases."""
    name = f"{make_url(roles_db.admin_url).database}_other"
    server = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with server.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        server.dispose()


def _in(db: RolesDatabase, database: str, role: str, password: str) -> psycopg.Connection:
    url = make_url(db.url_as(role, password))
    return psycopg.connect(
        host=url.host,
        port=url.port,
        dbname=database,
        user=role,
        password=password,
        autocommit=True,
    )


def test_reader_cannot_create_temporary_tables_in_its_database(roles_db):
    roles_db.ensure()
    assert _denied(_reader(roles_db), "CREATE TEMPORARY TABLE scratch (x int)")


def test_reader_is_kept_out_of_the_other_databases_it_is_confined_from(roles_db, other_database):
    roles_db.ensure()
    # PostgreSQL's default, which docs/deploy.md states: PUBLIC may connect and create
    # temporary tables in every database, so the reader may too
    with _in(roles_db, other_database, roles_db.reader_role, roles_db.reader_password) as other:
        other.execute("SET default_transaction_read_only = off")
        other.execute("CREATE TEMPORARY TABLE scratch (x int)")

    roles_db.ensure(confine_to=[other_database])
    for role, password in (
        (roles_db.reader_role, roles_db.reader_password),
        (roles_db.app_role, roles_db.app_password),
    ):
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            _in(roles_db, other_database, role, password)
    _reader(roles_db).execute("SELECT count(*) FROM candles")  # its own database still works
    with sa.create_engine(POSTGRES_URL).connect() as admin:  # other login roles keep access
        granted = admin.exec_driver_sql(
            "SELECT datacl::text FROM pg_database WHERE datname = %(d)s", {"d": other_database}
        ).scalar_one()
    grants = granted.strip("{}").split(",")
    assert not [grant for grant in grants if grant.startswith("=")]  # none to PUBLIC left
    with pytest.raises(RolesError, match="no such database"):
        roles_db.ensure(confine_to=["no_such_database_here"])
