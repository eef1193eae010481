"""``cdd-forecast db roles``: the application role and the read-only ``forecast_reader``."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli_app import db_app


@db_app.command("roles")
def roles(
    app_role: Annotated[
        str | None,
        typer.Option(
            help="Application role that owns the tables (default: CDDF_APP_ROLE, cddf_app)."
        ),
    ] = None,
    reader_role: Annotated[
        str | None,
        typer.Option(help="Read-only analyst role (default: CDDF_READER_ROLE, forecast_reader)."),
    ] = None,
    schema: Annotated[
        str | None, typer.Option(help="Schema of the tables (default: the current schema).")
    ] = None,
    confine_to: Annotated[
        list[str] | None,
        typer.Option(
            help="Another database of the server the two roles must not connect to or create "
            "temporary tables in (repeatable): revokes CONNECT, TEMPORARY there from PUBLIC "
            "and grants them back to every other existing login role."
        ),
    ] = None,
) -> None:
    """Create or update the PostgreSQL roles (idempotent); run after `db upgrade`.

    Connects with CDDF_DATABASE_URL, as a user with CREATEROLE (e.g. postgres).

    Passwords come only from the environment, CDDF_APP_PASSWORD and CDDF_READER_PASSWORD,
    never from the command line; an unset one leaves that role's password unchanged.
    """
    from db.engine import make_engine, masked_url
    from db.roles import RolesError, ensure_roles, role_summary
    from settings import get_settings

    role_settings = get_settings()
    url = role_settings.database_url
    engine = make_engine(url.get_secret_value())
    try:
        report = ensure_roles(
            engine,
            app_role=app_role or role_settings.app_role,
            reader_role=reader_role or role_settings.reader_role,
            app_password=role_settings.app_password,
            reader_password=role_settings.reader_password,
            schema=schema,
            confine_to=confine_to or (),
        )
    except RolesError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    typer.echo(f"roles ready on {masked_url(url)}")
    for line in role_summary(report):
        typer.echo(f"  {line}")
    for role, variable in (
        (report.app_role, "CDDF_APP_PASSWORD"),
        (report.reader_role, "CDDF_READER_PASSWORD"),
    ):
        if role in report.created and role not in report.passwords_set:
            typer.echo(
                f"note: {role} has no password yet; set {variable} and rerun so it can log in",
                err=True,
            )
