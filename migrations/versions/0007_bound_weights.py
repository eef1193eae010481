"""Weights of the served bounds: the served forecast's intervals are aggregated too.

- ``forecast_weights.quantity``: what a weight is for — ``value`` (the served value; every
  row before this revision) or the bound it aggregated (``lower_80``, ``upper_80``,
  ``lower_95``, ``upper_95``: the LSTM's bound and the naive's empirical one, weighted on
  the pinball loss of that quantile). The primary key becomes (run, horizon, quantity,
  expert). Runs served from this revision on weigh the experts ``lstm`` and ``naive``;
  ``drift`` stays allowed for the rows of earlier runs.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

QUANTITIES = "('value', 'lower_80', 'upper_80', 'lower_95', 'upper_95')"


def upgrade() -> None:
    with op.batch_alter_table("forecast_weights", recreate="auto") as batch:
        batch.add_column(
            sa.Column("quantity", sa.String(length=16), nullable=False, server_default="value")
        )
        batch.create_check_constraint(
            op.f("ck_forecast_weights_quantity"), sa.text(f"quantity IN {QUANTITIES}")
        )
        batch.drop_constraint("pk_forecast_weights", type_="primary")
        batch.create_primary_key(
            op.f("pk_forecast_weights"), ["run_id", "horizon", "quantity", "expert"]
        )


def downgrade() -> None:
    op.execute("DELETE FROM forecast_weights WHERE quantity <> 'value'")
    with op.batch_alter_table("forecast_weights", recreate="auto") as batch:
        batch.drop_constraint("pk_forecast_weights", type_="primary")
        batch.create_primary_key(op.f("pk_forecast_weights"), ["run_id", "horizon", "expert"])
        batch.drop_constraint(op.f("ck_forecast_weights_quantity"), type_="check")
        batch.drop_column("quantity")
