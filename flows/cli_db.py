"""``cdd-forecast db upgrade``: migrate the configured database to the newest schema."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli_app import db_app


@db_app.command("upgrade")
def upgrade(
    revision: Annotated[
        str, typer.Option(help="Alembic revision to reach (default: the newest, head).")
    ] = "head",
) -> None:
    """Create or upgrade the tables of CDDF_DATABASE_URL (idempotent; SQLite or PostgreSQL)."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy.exc import SQLAlchemyError

    from db.engine import make_engine, masked_url, migrate
    from settings import get_settings

    url = get_settings().database_url
    shown = masked_url(url)
    engine = make_engine(url.get_secret_value())
    try:
        migrate(engine, revision)
        with engine.connect() as connection:
            reached = MigrationContext.configure(connection).get_current_heads()
    except SQLAlchemyError as error:
        cause = getattr(error, "orig", None) or error
        typer.echo(
            f"error: cannot migrate {shown}: {type(cause).__name__}: {cause}; "
            "check CDDF_DATABASE_URL and that the server is running",
            err=True,
        )
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    typer.echo(f"database {shown} is at revision {', '.join(reached) or 'base'}")
