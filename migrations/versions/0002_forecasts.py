"""Forecasting tables and the analysts' views.

Tables: model_versions, forecast_runs, forecasts, forecast_metrics.
Views (plain SQL that SQLite and PostgreSQL both run): latest_forecasts, forecast_vs_actual,
model_leaderboard. docs/sql.md shows the queries an analyst runs on them.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Per series and target time, the forecast of the newest run (latest as_of, then latest run).
# The anti-join probes ix_forecasts_series_target_time, so one series is an index range.
LATEST_FORECASTS = """
CREATE VIEW latest_forecasts AS
SELECT f.series, f.target_time, f.horizon, f.as_of, f.value,
       f.lower_80, f.upper_80, f.lower_95, f.upper_95, f.naive,
       r.model_version_id, f.run_id, r.kind AS run_kind, r.created_at
FROM forecasts AS f
JOIN forecast_runs AS r ON r.id = f.run_id
WHERE NOT EXISTS (
    SELECT 1 FROM forecasts AS newer
    WHERE newer.series = f.series
      AND newer.target_time = f.target_time
      AND (newer.as_of > f.as_of OR (newer.as_of = f.as_of AND newer.run_id > f.run_id))
)
"""

# Each forecast whose target has a final candle, beside the actual close and the errors.
# error = actual - forecast; direction_hit: forecast and actual moved the same way from
# the last close (the naive forecast); inside_80/95: 1 when the actual fell in the interval.
FORECAST_VS_ACTUAL = """
CREATE VIEW forecast_vs_actual AS
SELECT f.series, f.run_id, r.model_version_id, r.kind AS run_kind, f.as_of,
       f.target_time, f.horizon, f.value AS forecast, f.naive, c.close AS actual,
       c.close - f.value AS error,
       ABS(c.close - f.value) AS abs_error,
       CASE WHEN c.close <> 0 THEN 100.0 * ABS(c.close - f.value) / ABS(c.close) END
           AS abs_pct_error,
       c.close - f.naive AS naive_error,
       f.lower_80, f.upper_80, f.lower_95, f.upper_95,
       CASE WHEN c.close >= f.lower_80 AND c.close <= f.upper_80 THEN 1 ELSE 0 END AS inside_80,
       CASE WHEN c.close >= f.lower_95 AND c.close <= f.upper_95 THEN 1 ELSE 0 END AS inside_95,
       CASE WHEN (f.value - f.naive) * (c.close - f.naive) > 0 THEN 1 ELSE 0 END
           AS direction_hit
FROM forecasts AS f
JOIN forecast_runs AS r ON r.id = f.run_id
JOIN series AS s ON s.key = f.series
JOIN candles AS c ON c.series_id = s.id AND c.time = f.target_time
WHERE c.is_final
"""

# Model versions ranked per series by their skill over all their scored forecasts
# (the pooled rows of forecast_metrics: run_id NULL, horizon 0). Unscored skill ranks last.
MODEL_LEADERBOARD = """
CREATE VIEW model_leaderboard AS
SELECT m.series,
       RANK() OVER (
           PARTITION BY m.series
           ORDER BY CASE WHEN m.skill IS NULL THEN 1 ELSE 0 END, m.skill DESC
       ) AS skill_rank,
       m.model_version_id, v.kind, v.parent_id, v.created_at, v.train_last,
       m.n_runs, m.n, m.first_target, m.last_target, m.skill, m.rmse, m.naive_rmse, m.mae,
       m.mape, m.mase, m.direction, m.coverage_80, m.coverage_95, m.scored_at
FROM forecast_metrics AS m
JOIN model_versions AS v ON v.id = m.model_version_id
WHERE m.run_id IS NULL AND m.horizon = 0
"""

VIEWS = {
    "latest_forecasts": LATEST_FORECASTS,
    "forecast_vs_actual": FORECAST_VS_ACTUAL,
    "model_leaderboard": MODEL_LEADERBOARD,
}


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _metric(name: str) -> sa.Column:
    return sa.Column(name, sa.Double(), nullable=True)


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("series", sa.String(length=100), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("retrain_id", sa.Integer(), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("train_first", _utc(), nullable=False),
        sa.Column("train_last", _utc(), nullable=False),
        sa.Column("n_windows", sa.Integer(), nullable=False),
        sa.Column("validation_metrics", sa.JSON(), nullable=False),
        sa.Column("artifact", sa.LargeBinary(), nullable=False),
        sa.Column("artifact_sha256", sa.String(length=64), nullable=False),
        sa.Column("artifact_size", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(length=32), nullable=False),
        sa.Column("train_seconds", sa.Double(), nullable=False),
        sa.Column("flow_run_id", sa.String(length=36), nullable=True),
        sa.CheckConstraint("kind IN ('retrain', 'finetune')", name=op.f("ck_model_versions_kind")),
        sa.ForeignKeyConstraint(
            ["series"],
            ["series.key"],
            name=op.f("fk_model_versions_series_series"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["model_versions.id"],
            name=op.f("fk_model_versions_parent_id_model_versions"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["retrain_id"],
            ["model_versions.id"],
            name=op.f("fk_model_versions_retrain_id_model_versions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
    )
    op.create_index(
        "ix_model_versions_series_train_last", "model_versions", ["series", "train_last", "id"]
    )
    op.create_index("ix_model_versions_flow_run_id", "model_versions", ["flow_run_id"])

    op.create_table(
        "forecast_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("series", sa.String(length=100), nullable=False),
        sa.Column("as_of", _utc(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("flow_run_id", sa.String(length=36), nullable=True),
        sa.CheckConstraint("kind IN ('daily', 'backfill')", name=op.f("ck_forecast_runs_kind")),
        sa.ForeignKeyConstraint(
            ["series"],
            ["series.key"],
            name=op.f("fk_forecast_runs_series_series"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_forecast_runs_model_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_forecast_runs")),
        sa.UniqueConstraint(
            "series", "as_of", "model_version_id", name=op.f("uq_forecast_runs_series")
        ),
    )
    op.create_index("ix_forecast_runs_model_version_id", "forecast_runs", ["model_version_id"])

    op.create_table(
        "forecasts",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("horizon", sa.Integer(), nullable=False),
        sa.Column("series", sa.String(length=100), nullable=False),
        sa.Column("as_of", _utc(), nullable=False),
        sa.Column("target_time", _utc(), nullable=False),
        *(
            sa.Column(name, sa.Double(), nullable=False)
            for name in ("value", "lower_80", "upper_80", "lower_95", "upper_95", "naive")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["forecast_runs.id"],
            name=op.f("fk_forecasts_run_id_forecast_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "horizon", name=op.f("pk_forecasts")),
    )
    op.create_index(
        "ix_forecasts_series_target_time",
        "forecasts",
        ["series", "target_time", "as_of", "run_id"],
    )

    op.create_table(
        "forecast_metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("series", sa.String(length=100), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("horizon", sa.Integer(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("n_runs", sa.Integer(), nullable=False),
        sa.Column("first_target", _utc(), nullable=False),
        sa.Column("last_target", _utc(), nullable=False),
        *(
            _metric(name)
            for name in (
                "rmse",
                "mae",
                "mape",
                "smape",
                "mase",
                "direction",
                "coverage_80",
                "width_80",
                "coverage_95",
                "width_95",
                "naive_rmse",
                "skill",
            )
        ),
        sa.Column("scored_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(
            ["series"],
            ["series.key"],
            name=op.f("fk_forecast_metrics_series_series"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_forecast_metrics_model_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["forecast_runs.id"],
            name=op.f("fk_forecast_metrics_run_id_forecast_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_forecast_metrics")),
        sa.UniqueConstraint("run_id", "horizon", name=op.f("uq_forecast_metrics_run_id")),
    )
    op.create_index(
        "uq_forecast_metrics_version_horizon",
        "forecast_metrics",
        ["model_version_id", "horizon"],
        unique=True,
        sqlite_where=sa.text("run_id IS NULL"),
        postgresql_where=sa.text("run_id IS NULL"),
    )
    op.create_index(
        "ix_forecast_metrics_series_version", "forecast_metrics", ["series", "model_version_id"]
    )

    for sql in VIEWS.values():
        op.execute(sql)


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_index("ix_forecast_metrics_series_version", table_name="forecast_metrics")
    op.drop_index("uq_forecast_metrics_version_horizon", table_name="forecast_metrics")
    op.drop_table("forecast_metrics")
    op.drop_index("ix_forecasts_series_target_time", table_name="forecasts")
    op.drop_table("forecasts")
    op.drop_index("ix_forecast_runs_model_version_id", table_name="forecast_runs")
    op.drop_table("forecast_runs")
    op.drop_index("ix_model_versions_flow_run_id", table_name="model_versions")
    op.drop_index("ix_model_versions_series_train_last", table_name="model_versions")
    op.drop_table("model_versions")
