"""Global models: one model version serving every series of a timeframe group.

- ``model_versions.model_group``: NULL for a model of one series (every version before this
  revision); the timeframe (``d``, ``1h``, ``minute``) for a global model of that timeframe's
  group. A global version's ``series`` column holds the group's first series (in key order),
  so the NOT NULL foreign key and every existing query stay as they are.
- ``model_version_series``: the series a version was given, ``trained`` 1 for those it
  trained (or fine-tuned) on and 0 for those kept out (too little history); written for
  global versions.
- ``forecast_metrics``: a version's pooled scores (the rows without ``run_id``) are unique
  per (version, series, horizon), no longer per (version, horizon): one global version is
  scored per series, each against its own candles.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OLD_INDEX = "uq_forecast_metrics_version_horizon"
NEW_INDEX = "uq_forecast_metrics_version_series_horizon"


def upgrade() -> None:
    op.add_column("model_versions", sa.Column("model_group", sa.String(length=16), nullable=True))
    op.create_index(
        "ix_model_versions_group_train_last",
        "model_versions",
        ["model_group", "train_last", "id"],
    )
    op.create_table(
        "model_version_series",
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("series", sa.String(length=100), nullable=False),
        sa.Column("trained", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_model_version_series_model_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["series"],
            ["series.key"],
            name=op.f("fk_model_version_series_series_series"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("model_version_id", "series", name=op.f("pk_model_version_series")),
    )
    op.create_index("ix_model_version_series_series", "model_version_series", ["series"])
    op.drop_index(OLD_INDEX, table_name="forecast_metrics")
    op.create_index(
        NEW_INDEX,
        "forecast_metrics",
        ["model_version_id", "series", "horizon"],
        unique=True,
        sqlite_where=sa.text("run_id IS NULL"),
        postgresql_where=sa.text("run_id IS NULL"),
    )


def downgrade() -> None:
    # a global version's per-series scores do not fit the old index: keep its first series'
    op.execute(
        "DELETE FROM forecast_metrics WHERE run_id IS NULL AND EXISTS ("
        "SELECT 1 FROM forecast_metrics AS other WHERE other.run_id IS NULL "
        "AND other.model_version_id = forecast_metrics.model_version_id "
        "AND other.horizon = forecast_metrics.horizon AND other.id < forecast_metrics.id)"
    )
    op.drop_index(NEW_INDEX, table_name="forecast_metrics")
    op.create_index(
        OLD_INDEX,
        "forecast_metrics",
        ["model_version_id", "horizon"],
        unique=True,
        sqlite_where=sa.text("run_id IS NULL"),
        postgresql_where=sa.text("run_id IS NULL"),
    )
    op.drop_index("ix_model_version_series_series", table_name="model_version_series")
    op.drop_table("model_version_series")
    op.drop_index("ix_model_versions_group_train_last", table_name="model_versions")
    op.drop_column("model_versions", "model_group")  # native on SQLite >= 3.35; keeps views
