"""PostgreSQL roles: the application role that owns the tables, and the read-only analyst role.

Run by ``cdd-forecast db roles`` (the ``migrate`` step of docker-compose.yml) on a connection
with CREATEROLE (the PostgreSQL superuser), after ``cdd-forecast db upgrade``. Idempotent:
every run brings both roles back to exactly the privileges below.

    report = ensure_roles(make_engine(admin_url), app_password=SecretStr("s3cret"),
                          reader_password=SecretStr("an4lyst"))
    report.readable  # -> ('candles', 'forecast_metrics', 'forecast_runs', ...)

- the application role (``cddf_app``) owns every table and view of the service; workers
  connect as it. It may connect and create temporary tables (the candles COPY needs them).
- ``forecast_reader`` may connect and SELECT the tables and views in ``READER_TABLES`` and
  ``ANALYST_VIEWS``, and the columns of ``model_versions`` except the artifact. Nothing else:
  no writes, no DDL, no temporary tables, no large objects, no advisory locks, no role
  memberships, read-only transactions by default, at most ``ReaderLimits.connections``
  sessions, each with default statement, idle-in-transaction and lock timeouts; tables
  created later are not readable until a rerun grants them (it never will unless they are
  added here).

Large objects and advisory locks are built-in functions that PostgreSQL lets PUBLIC execute;
a privilege of PUBLIC cannot be denied to one role, so this revokes EXECUTE on them from PUBLIC
in the service's database (``BUILTINS_REVOKED``). Only a superuser may: run it as one.

Passwords are stored as SCRAM-SHA-256 verifiers computed on the client, so the plain password
never reaches the server, its logs, or an error message.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from psycopg.errors import LockNotAvailable
from pydantic import SecretStr
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

READER_TABLES = (
    "series",
    "candles",
    "candle_revisions",
    "ingest_rejects",
    "forecast_runs",
    "forecasts",
    "forecast_metrics",
    "forecast_weights",
    "model_version_series",
)
ANALYST_VIEWS = ("latest_forecasts", "forecast_vs_actual", "model_leaderboard")
MODEL_VERSIONS = "model_versions"
ARTIFACT_COLUMNS = frozenset({"artifact"})  # besides every bytea column, never granted
ROLE_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SCRAM_VERIFIER = re.compile(r"^SCRAM-SHA-256\$[0-9]+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=:]+$")
_LOCK_KEY = 0x63646466  # serializes concurrent runs ("cddf"); PUBLIC may not take it
# built-in functions nobody but a superuser may run in the service's database: large objects
# (lo_from_bytea, lo_create, lo_import, ...: writes outside the tables) and advisory locks
# (a lock anyone may take, and hold against whoever waits for it)
BUILTINS_REVOKED = (
    "proname LIKE 'lo\\_%' OR proname IN ('loread', 'lowrite') OR proname LIKE '%advisory%'"
)
_KINDS = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW"}


@dataclass(frozen=True)
class ReaderLimits:
    """What the reader role's sessions may take: ``connections`` at once, and these defaults
    (seconds) for each session. The role may SET the timeouts away in its own session; what
    still bounds it is the writers' own lock_timeout (docs/architecture.md)."""

    connections: int = 10
    statement: float = 300
    idle_in_transaction: float = 60
    lock: float = 10

    def __post_init__(self) -> None:
        if not (isinstance(self.connections, int) and self.connections >= 1):
            raise ValueError(
                f"reader connections={self.connections!r}: give a whole number of at least 1"
            )
        for name in ("statement", "idle_in_transaction", "lock"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 < value < 2_000_000):
                raise ValueError(
                    f"reader limit {name}={value!r}: give a positive number of seconds "
                    "(below 2,000,000)"
                )

    def role_settings(self) -> dict[str, int]:
        """The role's session defaults, in milliseconds."""
        return {
            "statement_timeout": round(self.statement * 1000),
            "idle_in_transaction_session_timeout": round(self.idle_in_transaction * 1000),
            "lock_timeout": round(self.lock * 1000),
        }


class RolesError(RuntimeError):
    """The roles could not be created; the message names the cause and never a password."""


@dataclass(frozen=True)
class RolesReport:
    """What a run of :func:`ensure_roles` left in place."""

    database: str
    schema: str
    app_role: str
    reader_role: str
    created: tuple[str, ...]  # roles that did not exist before this run
    passwords_set: tuple[str, ...]  # roles whose password this run set
    owned: tuple[str, ...]  # relations the application role owns
    readable: tuple[str, ...]  # relations the reader may SELECT whole
    model_version_columns: tuple[str, ...]  # columns of model_versions the reader may SELECT
    reader_limits: ReaderLimits = ReaderLimits()  # its connection limit and session defaults


def project_relations() -> tuple[str, ...]:
    """Every table and view of the service, including Alembic's ``alembic_version``."""
    import db.forecast_tables  # noqa: F401  (registers the forecast tables)
    import db.models  # noqa: F401  (registers the ingestion tables)
    from db.base import Base

    return tuple(sorted({*Base.metadata.tables, *ANALYST_VIEWS, "alembic_version"}))


def ensure_roles(
    engine: Engine,
    *,
    app_role: str = "cddf_app",
    reader_role: str = "forecast_reader",
    app_password: SecretStr | None = None,
    reader_password: SecretStr | None = None,
    schema: str | None = None,
    confine_to: Sequence[str] = (),
    reader_limits: ReaderLimits | None = None,
) -> RolesReport:
    """Create or update both roles and their privileges in one transaction.

    ``schema`` defaults to the connection's current schema. A password of ``None`` leaves the
    role's password as it is (a new role then has none and cannot log in with a password).
    ``confine_to``: other databases of the server the two roles must not reach (PostgreSQL
    grants CONNECT and TEMPORARY on every database to PUBLIC); see :func:`shut_out`.
    ``reader_limits``: the reader's connection limit and session defaults (``ReaderLimits()``).
    Waits for locks end after the engine's ``lock_timeout`` (db.engine.SessionLimits).
    """
    _check_names(app_role, reader_role)
    where = engine.url.render_as_string(hide_password=True)
    if engine.dialect.name != "postgresql":
        raise RolesError(
            f"database roles exist only on PostgreSQL, not on {where}: point CDDF_DATABASE_URL "
            "at the PostgreSQL server (as a user with CREATEROLE, e.g. postgres)"
        )
    try:
        with engine.begin() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            report = _ensure(
                connection, schema, app_role, reader_role, app_password, reader_password
            )
            limits = reader_limits or ReaderLimits()
            _limit_reader(connection, reader_role, limits)
            report = replace(report, reader_limits=limits)
            for database in confine_to:
                shut_out(connection, database, (app_role, reader_role))
            return report
    except DBAPIError as error:
        hint = ""
        if isinstance(error.orig, LockNotAvailable):
            hint = (
                ": another session held a lock this step needs (another `db roles`, a migration, "
                "a reader's open transaction on a table); wait for it or end it "
                "(pg_stat_activity, pg_terminate_backend), then run `cdd-forecast db roles` again"
            )
        raise RolesError(f"creating the roles on {where} failed: {_cause(error)}{hint}") from None


def _ensure(
    connection: Connection,
    schema: str | None,
    app_role: str,
    reader_role: str,
    app_password: SecretStr | None,
    reader_password: SecretStr | None,
) -> RolesReport:
    admin = connection.scalar(text("SELECT current_user"))
    database = connection.scalar(text("SELECT current_database()"))
    schema = schema or connection.scalar(text("SELECT current_schema()"))
    if schema is None:
        raise RolesError(
            "the connection's search_path names no existing schema: fix the search_path of "
            "CDDF_DATABASE_URL or pass the schema (`cdd-forecast db roles --schema ...`)"
        )
    if admin in (app_role, reader_role):
        raise RolesError(
            f"connected as {admin!r}, one of the roles to manage: connect as an administrator "
            "(e.g. postgres) to run `cdd-forecast db roles`"
        )
    relations = _relations(connection, schema)
    needed = {*READER_TABLES, *ANALYST_VIEWS, MODEL_VERSIONS}
    if missing := sorted(needed - relations.keys()):
        raise RolesError(
            f"schema {schema!r} of database {database!r} lacks {', '.join(missing)}: "
            "run `cdd-forecast db upgrade` first"
        )

    created = [role for role in (app_role, reader_role) if _ensure_role(connection, role)]
    passwords_set = []
    for role, password in ((app_role, app_password), (reader_role, reader_password)):
        if password is not None:
            _set_password(connection, role, password)
            passwords_set.append(role)

    app, reader = _quote(connection, app_role), _quote(connection, reader_role)
    q_schema, q_database = _quote(connection, schema), _quote(connection, database)
    owned = tuple(name for name in project_relations() if name in relations)
    for name in owned:
        kind = _KINDS[relations[name]]
        _run(connection, f"ALTER {kind} {q_schema}.{_quote(connection, name)} OWNER TO {app}")

    _run(connection, f"ALTER ROLE {reader} SET default_transaction_read_only = on")
    for (member,) in connection.execute(
        text(
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = :role"
        ),
        {"role": reader_role},
    ):
        _run(connection, f"REVOKE {_quote(connection, member)} FROM {reader}")

    for statement in (
        f"REVOKE TEMPORARY ON DATABASE {q_database} FROM PUBLIC",
        f"REVOKE ALL ON DATABASE {q_database} FROM {reader}",
        f"GRANT CONNECT ON DATABASE {q_database} TO {reader}",
        f"GRANT CONNECT, TEMPORARY ON DATABASE {q_database} TO {app}",
        f"REVOKE CREATE ON SCHEMA {q_schema} FROM PUBLIC",
        f"REVOKE ALL ON SCHEMA {q_schema} FROM {reader}",
        f"GRANT USAGE ON SCHEMA {q_schema} TO {reader}, {app}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {q_schema} FROM {reader}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {q_schema} FROM {reader}",
        f"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {q_schema} FROM {reader}",
    ):
        _run(connection, statement)
    for owner in (app, _quote(connection, admin)):
        for objects in ("TABLES", "SEQUENCES"):
            _run(
                connection,
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {q_schema} "
                f"REVOKE ALL ON {objects} FROM {reader}",
            )

    readable = tuple(sorted((*READER_TABLES, *ANALYST_VIEWS)))
    for name in readable:
        _run(connection, f"GRANT SELECT ON {q_schema}.{_quote(connection, name)} TO {reader}")
    columns = _public_columns(connection, schema, MODEL_VERSIONS)
    if columns:
        column_list = ", ".join(_quote(connection, column) for column in columns)
        target = f"{q_schema}.{_quote(connection, MODEL_VERSIONS)}"
        _run(connection, f"GRANT SELECT ({column_list}) ON {target} TO {reader}")
    return RolesReport(
        database=database,
        schema=schema,
        app_role=app_role,
        reader_role=reader_role,
        created=tuple(created),
        passwords_set=tuple(passwords_set),
        owned=owned,
        readable=readable,
        model_version_columns=columns,
    )


def _limit_reader(connection: Connection, reader_role: str, limits: ReaderLimits) -> None:
    """No large objects, no advisory locks, a connection limit and session defaults."""
    reader = _quote(connection, reader_role)
    functions = connection.execute(
        text(
            "SELECT oid::regprocedure::text FROM pg_proc "
            f"WHERE pronamespace = 'pg_catalog'::regnamespace AND ({BUILTINS_REVOKED})"
        )
    ).scalars()
    for function in functions:
        _run(connection, f"REVOKE EXECUTE ON FUNCTION {function} FROM PUBLIC, {reader}")
    still = connection.execute(
        text(
            "SELECT oid::regprocedure::text FROM pg_proc "
            f"WHERE pronamespace = 'pg_catalog'::regnamespace AND ({BUILTINS_REVOKED}) "
            "AND has_function_privilege(:role, oid, 'EXECUTE') ORDER BY 1"
        ),
        {"role": reader_role},
    ).scalars()
    if left := list(still):
        raise RolesError(
            f"role {reader_role!r} may still execute {', '.join(left[:3])} "
            f"({len(left)} functions): EXECUTE on built-in functions can be revoked from "
            "PUBLIC only by a superuser; run `cdd-forecast db roles` as one (e.g. postgres)"
        )
    _run(connection, f"ALTER ROLE {reader} CONNECTION LIMIT {int(limits.connections)}")
    for name, milliseconds in limits.role_settings().items():
        _run(connection, f"ALTER ROLE {reader} SET {name} = {int(milliseconds)}")


def shut_out(connection: Connection, database: str, roles: Sequence[str]) -> None:
    """Keep ``roles`` out of ``database``: no CONNECT, no TEMPORARY there.

    A privilege granted to PUBLIC cannot be denied to one role, so this revokes CONNECT and
    TEMPORARY on ``database`` from PUBLIC and grants them back to every other role that can log
    in now: only ``roles`` lose them. A login role created later needs its own GRANT CONNECT
    there, which is why this is the operator's choice (``cdd-forecast db roles --confine-to``).
    """
    if database == connection.scalar(text("SELECT current_database()")):
        raise RolesError(f"--confine-to {database}: that is the service's own database")
    if connection.scalar(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": database}):
        q_database = _quote(connection, database)
        _run(connection, f"REVOKE CONNECT, TEMPORARY ON DATABASE {q_database} FROM PUBLIC")
        others = connection.scalars(
            text(
                "SELECT rolname FROM pg_roles WHERE rolcanlogin AND NOT rolname = ANY(:roles) "
                "AND left(rolname, 3) <> 'pg_'"
            ),
            {"roles": list(roles)},
        )
        for role in others:
            grant = f"GRANT CONNECT, TEMPORARY ON DATABASE {q_database} TO "
            _run(connection, grant + _quote(connection, role))
        for role in roles:
            _run(connection, f"REVOKE ALL ON DATABASE {q_database} FROM {_quote(connection, role)}")
        return
    raise RolesError(f"--confine-to {database}: no such database on this server")


def _check_names(app_role: str, reader_role: str) -> None:
    for what, name in (("application role", app_role), ("reader role", reader_role)):
        if not _ROLE_NAME.match(name):
            raise RolesError(
                f"{what} name {name!r} is not a plain PostgreSQL name: use lowercase letters, "
                "digits and underscores, starting with a letter (CDDF_APP_ROLE, CDDF_READER_ROLE)"
            )
    if app_role == reader_role:
        raise RolesError(f"the application and reader roles must differ (both {app_role!r})")


def _relations(connection: Connection, schema: str) -> dict[str, str]:
    rows = connection.execute(
        text(
            "SELECT c.relname, c.relkind FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :schema AND c.relkind IN ('r', 'p', 'v', 'm')"
        ),
        {"schema": schema},
    )
    return {name: kind for name, kind in rows}


def _public_columns(connection: Connection, schema: str, table: str) -> tuple[str, ...]:
    """The columns of ``table`` except the artifact and any other binary column."""
    rows = connection.execute(
        text(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = :schema AND table_name = :table ORDER BY ordinal_position"
        ),
        {"schema": schema, "table": table},
    )
    return tuple(
        name for name, data_type in rows if name not in ARTIFACT_COLUMNS and data_type != "bytea"
    )


def _ensure_role(connection: Connection, role: str) -> bool:
    """Create ``role`` or reset its attributes; True when it was created."""
    superuser = connection.scalar(
        text("SELECT rolsuper FROM pg_roles WHERE rolname = :role"), {"role": role}
    )
    quoted = _quote(connection, role)
    if superuser is None:
        _run(connection, f"CREATE ROLE {quoted} {ROLE_ATTRIBUTES}")
        return True
    if superuser:
        raise RolesError(
            f"role {role!r} exists and is a superuser: choose another name "
            "(CDDF_APP_ROLE, CDDF_READER_ROLE) rather than demoting it"
        )
    _run(connection, f"ALTER ROLE {quoted} WITH {ROLE_ATTRIBUTES}")
    return False


def _set_password(connection: Connection, role: str, password: SecretStr) -> None:
    """Store the SCRAM-SHA-256 verifier of ``password``, computed here by libpq."""
    plain = password.get_secret_value()
    if not plain:
        raise RolesError(f"the password for role {role!r} is empty: set a non-empty one")
    driver = connection.connection.driver_connection
    pgconn = getattr(driver, "pgconn", None)
    if pgconn is None:
        raise RolesError("setting role passwords needs the psycopg driver (postgresql+psycopg://)")
    verifier = pgconn.encrypt_password(plain.encode(), role.encode(), b"scram-sha-256").decode()
    if not _SCRAM_VERIFIER.match(verifier):
        raise RolesError(f"libpq returned an unexpected password verifier for role {role!r}")
    _run(connection, f"ALTER ROLE {_quote(connection, role)} PASSWORD '{verifier}'")


def _quote(connection: Connection, name: str) -> str:
    return connection.dialect.identifier_preparer.quote_identifier(name)


def _run(connection: Connection, statement: str) -> None:
    connection.exec_driver_sql(statement)


def _cause(error: DBAPIError) -> str:
    """The server's message without the statement (which may hold a password verifier)."""
    diag = getattr(error.orig, "diag", None)
    primary = getattr(diag, "message_primary", None)
    return primary or type(error.orig).__name__


def role_summary(report: RolesReport) -> Sequence[str]:
    """Lines describing ``report`` for the CLI; names only, never a password."""
    lines = [
        f"database {report.database!r}, schema {report.schema!r}",
        f"{report.app_role}: owns {', '.join(report.owned)}",
        f"{report.reader_role}: SELECT on {', '.join(report.readable)}",
        f"{report.reader_role}: SELECT on model_versions "
        f"({', '.join(report.model_version_columns)}), not the artifact",
        f"{report.reader_role}: at most {report.reader_limits.connections} connections, "
        f"statements of {report.reader_limits.statement:g} s, no large objects, "
        "no advisory locks",
    ]
    if report.created:
        lines.append(f"created: {', '.join(report.created)}")
    if report.passwords_set:
        lines.append(f"password set: {', '.join(report.passwords_set)}")
    return lines
