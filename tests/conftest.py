"""Shared fixtures: a fresh empty database on SQLite and on PostgreSQL for each test.

PostgreSQL is ``CDDF_TEST_POSTGRES_URL`` (default: the local server, database ``test``).
Where it is unreachable its tests skip with the reason, unless ``CDDF_REQUIRE_POSTGRES=1``
(set by .ci/run), where they fail instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import sqlalchemy as sa

POSTGRES_URL = os.environ.get(
    "CDDF_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _postgres_problem() -> str | None:
    try:
        engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as error:  # any failure to connect is a reason to skip
        return f"PostgreSQL at {POSTGRES_URL} unreachable: {type(error).__name__}: {error}"
    return None


_POSTGRES_PROBLEM: list[str | None] = []


def require_postgres() -> None:
    """Skip (or fail under CDDF_REQUIRE_POSTGRES=1) when the PostgreSQL server is unreachable."""
    if not _POSTGRES_PROBLEM:
        _POSTGRES_PROBLEM.append(_postgres_problem())
    problem = _POSTGRES_PROBLEM[0]
    if problem is None:
        return
    if os.environ.get("CDDF_REQUIRE_POSTGRES") == "1":
        pytest.fail(problem + " (CDDF_REQUIRE_POSTGRES=1: PostgreSQL tests must run)")
    pytest.skip(problem)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL to an empty, private schema on the PostgreSQL server, dropped afterwards."""
    require_postgres()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    with admin.begin() as connection:
        connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'cddf.sqlite'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request) -> str:
    """Tests taking this run twice: on a fresh SQLite file and a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch) -> Iterator[None]:
    """Every test reads the settings anew: a ``CDDF_`` variable it sets applies at once; no
    first run warms up unless the test sets ``CDDF_WARMUP_PERIODS`` (or deletes it).

    ``monkeypatch.setenv`` of a ``CDDF_`` variable clears the cached settings (and the
    engines, which hang off ``CDDF_DATABASE_URL``), so no test clears a cache by hand.
    """
    from db.engine import clear_engine_cache
    from settings import get_settings

    def forget() -> None:
        get_settings.cache_clear()
        clear_engine_cache()

    setenv, delenv = monkeypatch.setenv, monkeypatch.delenv

    def set_and_forget(name: str, value: str, prepend: str | None = None) -> None:
        setenv(name, value, prepend)
        if name.startswith("CDDF_"):
            forget()

    def del_and_forget(name: str, raising: bool = True) -> None:
        delenv(name, raising)
        if name.startswith("CDDF_"):
            forget()

    monkeypatch.setenv, monkeypatch.delenv = set_and_forget, del_and_forget
    # a first run's warm-up (flows/warmup.py) is tested where it is named (test_warmup.py):
    # elsewhere a first run forecasts at once, as the tests of the other steps expect
    setenv("CDDF_WARMUP_PERIODS", "0")
    # a backfill retrains in its own process unless the test says otherwise
    # (test_backfill_parallel.py): a worker process imports TensorFlow anew, seconds a test
    setenv("CDDF_BACKFILL_PROCESSES", "1")
    forget()
    yield
    monkeypatch.undo()  # the environment first, then the caches built from it
    forget()


@pytest.fixture
def service_database(database_url, monkeypatch) -> str:
    """Point the service's settings (CDDF_DATABASE_URL) at a fresh database of each kind."""
    monkeypatch.setenv("CDDF_DATABASE_URL", database_url)
    return database_url
