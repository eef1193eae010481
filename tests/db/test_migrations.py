"""Every revision upgrades and downgrades on a fresh database; models and migrations agree."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

import db.forecast_tables  # noqa: F401  (registers the forecast tables on Base.metadata)
import db.models  # noqa: F401  (registers the ingestion tables)
from db.base import Base
from db.engine import alembic_config, downgrade, make_engine, migrate, needs_migration


@pytest.fixture
def fresh(database_url: str):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_then_downgrade_to_base_then_upgrade_again(fresh):
    model_tables = set(Base.metadata.tables)
    assert {"series", "candles", "ingest_runs"} <= model_tables
    assert needs_migration(fresh)

    migrate(fresh, "head")
    assert tables(fresh) == model_tables and not needs_migration(fresh)

    downgrade(fresh, "base")
    assert tables(fresh) == set() and needs_migration(fresh)
    assert inspect(fresh).get_view_names() == []

    migrate(fresh, "head")
    assert tables(fresh) == model_tables and not needs_migration(fresh)


def test_each_revision_downgrades_and_upgrades_again(fresh):
    script = ScriptDirectory.from_config(alembic_config(fresh))
    revisions = list(reversed(list(script.walk_revisions())))  # base first
    assert [revision.revision for revision in revisions][:1] == ["0001"]
    for revision in revisions:
        migrate(fresh, revision.revision)
        created = tables(fresh)
        downgrade(fresh, revision.down_revision or "base")
        migrate(fresh, revision.revision)
        assert tables(fresh) == created, revision.revision
    assert not needs_migration(fresh)


def test_autogenerate_finds_no_difference_between_models_and_migrations(fresh):
    migrate(fresh, "head")
    with fresh.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []
