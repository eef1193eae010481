"""Train outcomes: what each train flow run did, so that its dispatcher serves exactly that.

- ``train_outcomes``: per (train flow run id, model scope: a series key or ``global <tf>``),
  the action (``retrain``, ``finetune``, ``keep``), its reason and the model version it
  registered or kept. A daily run that dispatched the train run reads it instead of asking
  for the latest version, which another run may have registered in between.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "train_outcomes",
        sa.Column("flow_run_id", sa.String(length=36), nullable=False),
        sa.Column("scope", sa.String(length=110), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "action IN ('retrain', 'finetune', 'keep')", name=op.f("ck_train_outcomes_action")
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_train_outcomes_model_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("flow_run_id", "scope", name=op.f("pk_train_outcomes")),
    )
    op.create_index(
        op.f("ix_train_outcomes_model_version_id"), "train_outcomes", ["model_version_id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_train_outcomes_model_version_id"), table_name="train_outcomes")
    op.drop_table("train_outcomes")
