"""An index on ``model_versions.retrain_id``: a lineage's versions without a scan.

The retrain policy reads a lineage's recent runs at every daily train and at every step of a
backfill (`db.forecasts.recent_run_forecasts`, `db.forecasts.lineage_series`); the table keeps a
row for every version ever trained (hundreds of series, a version a day each), so without the
index each of those reads scans it whole.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_model_versions_retrain_id", "model_versions", ["retrain_id"])


def downgrade() -> None:
    op.drop_index("ix_model_versions_retrain_id", table_name="model_versions")
