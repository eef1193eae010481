"""Alembic environment: the engine comes from the caller (db.engine.migrate) or the settings."""

from __future__ import annotations

from alembic import context

import db.forecast_tables  # noqa: F401  (registers the forecast tables)
import db.models  # noqa: F401  (registers the ingestion tables)
from db.base import Base

target_metadata = Base.metadata


def _engine():
    engine = context.config.attributes.get("engine")
    if engine is not None:
        return engine
    from db.engine import make_engine
    from settings import get_settings

    url = context.config.get_main_option("sqlalchemy.url") or (
        get_settings().database_url.get_secret_value()
    )
    return make_engine(url)


def run_migrations() -> None:
    engine = _engine()
    with engine.begin() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            compare_type=True,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run `cdd-forecast db upgrade`")
run_migrations()
