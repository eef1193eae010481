"""A throwaway PostgreSQL schema for the benchmarks (``CDDF_TEST_POSTGRES_URL``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import sqlalchemy as sa

from db.engine import make_engine, migrate

POSTGRES_URL = os.environ.get(
    "CDDF_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@contextmanager
def scratch_schema() -> Iterator[tuple[sa.Engine, sa.Engine]]:
    """(engine on a fresh migrated schema, dropped on exit; admin engine on the server)."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    engine = make_engine(f"{POSTGRES_URL}{separator}options={quote(f'-csearch_path={schema}')}")
    try:
        migrate(engine)
        yield engine, admin
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
