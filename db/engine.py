"""Engines and schema migration for SQLite and PostgreSQL.

>>> engine = make_engine("sqlite:///cdd_forecast.sqlite")
>>> migrate(engine)          # alembic upgrade head; a no-op when already there
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url

import migrations

MIGRATIONS_DIR = Path(migrations.__file__).parent


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and enforced foreign keys."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


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
def _cached_engine(url: str) -> Engine:
    return make_engine(url)


_READY: set[str] = set()  # URLs whose schema was found at the newest revision
_READY_LOCK = threading.Lock()


def get_engine(url: str | None = None) -> Engine:
    """The service's engine (one per URL), its schema ready to use.

    The schema is checked once per URL and process. An empty SQLite file is migrated on first
    use, so the main job needs no extra step; any other database that is behind raises and says
    to run ``cdd-forecast db upgrade``.
    """
    if url is None:
        from settings import get_settings

        url = get_settings().database_url.get_secret_value()
    engine = _cached_engine(url)
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
