"""Ingest quality: rejected rows, revisions of stored candles, series locks, richer ingest_runs.

- ``ingest_rejects``: each bad row of an accepted (or rejected) file, with its 1-based line, the
  candle time when it could be read, the reason and the raw line, so an operator can query them.
- ``candle_revisions``: every change to a stored *final* candle (old and new values, when, which
  ingest run); candles are never overwritten without a row here.
- ``series_locks``: leases that make one backfill per series exclusive and die with their holder
  (a lease expires unless it is renewed).
- ``ingest_runs`` gains counts of what the parser skipped or dropped (all-zero rows, rejected
  rows, superseded duplicates, unix/date disagreements, revised candles) and the status
  ``interrupted`` for runs whose process died.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OLD_STATUSES = "status IN ('running', 'success', 'not_modified', 'failed')"
NEW_STATUSES = "status IN ('running', 'success', 'not_modified', 'failed', 'interrupted')"
COUNTS = ("zero_rows", "rejected_rows", "superseded_rows", "time_mismatches", "revised")
CANDLE_VALUES = ("open", "high", "low", "close", "volume_base", "volume_quote")


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("ingest_runs") as batch:
        for name in COUNTS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=True))
        batch.drop_constraint(op.f("ck_ingest_runs_status"), type_="check")
        batch.create_check_constraint("status", NEW_STATUSES)

    op.create_table(
        "ingest_rejects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ingest_run_id", sa.Integer(), nullable=False),
        sa.Column("series", sa.String(length=100), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("time", _utc(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["ingest_run_id"],
            ["ingest_runs.id"],
            name=op.f("fk_ingest_rejects_ingest_run_id_ingest_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingest_rejects")),
    )
    op.create_index("ix_ingest_rejects_series_time", "ingest_rejects", ["series", "time"])
    op.create_index("ix_ingest_rejects_ingest_run_id", "ingest_rejects", ["ingest_run_id"])

    old_new = [
        sa.Column(f"{age}_{name}", sa.Double(), nullable=True)
        for age in ("old", "new")
        for name in CANDLE_VALUES
    ]
    op.create_table(
        "candle_revisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("time", _utc(), nullable=False),
        sa.Column("ingest_run_id", sa.Integer(), nullable=True),
        sa.Column("revised_at", _utc(), nullable=False),
        *old_new,
        sa.Column("old_is_final", sa.Boolean(), nullable=False),
        sa.Column("new_is_final", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_candle_revisions")),
    )
    op.create_index("ix_candle_revisions_series_id_time", "candle_revisions", ["series_id", "time"])

    op.create_table(
        "series_locks",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("holder", sa.Text(), nullable=False),
        sa.Column("acquired_at", _utc(), nullable=False),
        sa.Column("expires_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_series_locks")),
    )


def downgrade() -> None:
    op.drop_table("series_locks")
    op.drop_index("ix_candle_revisions_series_id_time", table_name="candle_revisions")
    op.drop_table("candle_revisions")
    op.drop_index("ix_ingest_rejects_ingest_run_id", table_name="ingest_rejects")
    op.drop_index("ix_ingest_rejects_series_time", table_name="ingest_rejects")
    op.drop_table("ingest_rejects")
    op.execute("UPDATE ingest_runs SET status = 'failed' WHERE status = 'interrupted'")
    with op.batch_alter_table("ingest_runs") as batch:
        batch.drop_constraint(op.f("ck_ingest_runs_status"), type_="check")
        batch.create_check_constraint("status", OLD_STATUSES)
        for name in reversed(COUNTS):
            batch.drop_column(name)
