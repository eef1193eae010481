"""Aggregation: the served forecast beside the LSTM's own, its weights, probabilistic scores.

- ``forecasts`` gains the LSTM's own forecast and bounds (``lstm_*``; ``value`` and its bounds
  are now the served forecast), ``drift``, the naive forecast's empirical bounds
  (``naive_lower_80`` …), the as_of's ``volatility`` and the interval scales ``scale_80`` /
  ``scale_95``. Rows written before this revision were the LSTM's: their ``lstm_*`` are
  copied from ``value`` and its bounds, the others stay NULL.
- ``forecast_weights``: per run, horizon and expert (lstm, naive, drift) the weight in the
  served forecast, the scored rounds it was learnt from and whether the prior served.
- ``forecast_metrics`` gains interval scores, pinball losses, 80 % coverage per volatility
  tercile and the Diebold–Mariano test against naive, for the served forecast, the LSTM's
  (``lstm_``) and the naive with empirical intervals (``naive_``).
- The views show the new columns (``latest_forecasts``: ``lstm_value``, ``drift``;
  ``forecast_vs_actual``: the LSTM's forecast and error, drift, the naive's bounds,
  volatility; ``model_leaderboard``: the scores and DM columns). On PostgreSQL their grants
  are kept across the drop and re-create.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

LSTM_COPIES = {
    "lstm_value": "value",
    "lstm_lower_80": "lower_80",
    "lstm_upper_80": "upper_80",
    "lstm_lower_95": "lower_95",
    "lstm_upper_95": "upper_95",
}
FORECAST_COLUMNS = (
    *LSTM_COPIES,
    "drift",
    "naive_lower_80",
    "naive_upper_80",
    "naive_lower_95",
    "naive_upper_95",
    "volatility",
    "scale_80",
    "scale_95",
)
PROBABILISTIC = (
    "interval_score_80",
    "interval_score_95",
    "pinball_80",
    "pinball_95",
    "coverage_80_low_vol",
    "coverage_80_mid_vol",
    "coverage_80_high_vol",
)
METRIC_COLUMNS = (
    *PROBABILISTIC,
    "dm_statistic",
    "dm_p_value",
    "lstm_rmse",
    "lstm_skill",
    "lstm_coverage_80",
    "lstm_coverage_95",
    *(f"lstm_{name}" for name in PROBABILISTIC),
    "lstm_dm_statistic",
    "lstm_dm_p_value",
    "naive_coverage_80",
    "naive_coverage_95",
    *(f"naive_{name}" for name in PROBABILISTIC),
)

LATEST_FORECASTS = """
CREATE VIEW latest_forecasts AS
SELECT f.series, f.target_time, f.horizon, f.as_of, f.value,
       f.lower_80, f.upper_80, f.lower_95, f.upper_95, f.naive,
       r.model_version_id, f.run_id, r.kind AS run_kind, r.created_at,
       f.lstm_value, f.drift
FROM forecasts AS f
JOIN forecast_runs AS r ON r.id = f.run_id
WHERE NOT EXISTS (
    SELECT 1 FROM forecasts AS newer
    WHERE newer.series = f.series
      AND newer.target_time = f.target_time
      AND (newer.as_of > f.as_of OR (newer.as_of = f.as_of AND newer.run_id > f.run_id))
)
"""

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
       CASE WHEN c.close IS NULL THEN NULL
            WHEN c.close >= f.lower_80 AND c.close <= f.upper_80 THEN 1 ELSE 0 END AS inside_80,
       CASE WHEN c.close IS NULL THEN NULL
            WHEN c.close >= f.lower_95 AND c.close <= f.upper_95 THEN 1 ELSE 0 END AS inside_95,
       CASE WHEN c.close IS NULL THEN NULL
            WHEN (f.value - f.naive) * (c.close - f.naive) > 0 THEN 1 ELSE 0 END
           AS direction_hit,
       CASE WHEN c.close IS NULL THEN 0 ELSE 1 END AS scorable,
       f.lstm_value AS lstm_forecast, c.close - f.lstm_value AS lstm_error,
       f.lstm_lower_80, f.lstm_upper_80, f.lstm_lower_95, f.lstm_upper_95, f.drift,
       f.naive_lower_80, f.naive_upper_80, f.naive_lower_95, f.naive_upper_95, f.volatility
FROM forecasts AS f
JOIN forecast_runs AS r ON r.id = f.run_id
JOIN series AS s ON s.key = f.series
LEFT JOIN candles AS c ON c.series_id = s.id AND c.time = f.target_time
WHERE c.is_final
   OR (c.series_id IS NULL
       AND f.target_time < (SELECT MAX(l.time) FROM candles AS l
                            WHERE l.series_id = s.id AND l.is_final))
"""

MODEL_LEADERBOARD = """
CREATE VIEW model_leaderboard AS
SELECT m.series,
       RANK() OVER (
           PARTITION BY m.series
           ORDER BY CASE WHEN m.skill IS NULL THEN 1 ELSE 0 END, m.skill DESC
       ) AS skill_rank,
       m.model_version_id, v.kind, v.parent_id, v.created_at, v.train_last,
       m.n_runs, m.n, m.first_target, m.last_target, m.skill, m.rmse, m.naive_rmse, m.mae,
       m.mape, m.mase, m.direction, m.coverage_80, m.coverage_95, m.scored_at,
       m.interval_score_80, m.interval_score_95, m.dm_statistic, m.dm_p_value,
       m.coverage_80_low_vol, m.coverage_80_mid_vol, m.coverage_80_high_vol,
       m.lstm_skill, m.lstm_coverage_80, m.lstm_interval_score_80, m.lstm_interval_score_95,
       m.lstm_dm_statistic, m.lstm_dm_p_value,
       m.naive_coverage_80, m.naive_coverage_95, m.naive_interval_score_80,
       m.naive_interval_score_95
FROM forecast_metrics AS m
JOIN model_versions AS v ON v.id = m.model_version_id
WHERE m.run_id IS NULL AND m.horizon = 0
"""

# The 0002 definitions of latest_forecasts and model_leaderboard, the 0004 one of
# forecast_vs_actual: restored by the downgrade.
OLD_LATEST_FORECASTS = """
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

OLD_MODEL_LEADERBOARD = """
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


def _old_forecast_vs_actual() -> str:
    """The 0004 view: the new one without the columns this revision added."""
    head, _ = FORECAST_VS_ACTUAL.split(",\n       f.lstm_value AS lstm_forecast")
    _, tail = FORECAST_VS_ACTUAL.split("f.naive_upper_95, f.volatility\n")
    return f"{head}\n{tail}"


def _grants(names: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(view, grantee, privilege) of the views' grants to other roles, on PostgreSQL."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return []
    query = sa.text(
        "SELECT table_name, grantee, privilege_type FROM information_schema.role_table_grants "
        "WHERE table_schema = current_schema() AND table_name IN :views "
        "AND grantee <> current_user"
    ).bindparams(sa.bindparam("views", expanding=True))
    return [tuple(row) for row in bind.execute(query, {"views": list(names)})]


def _restore(grants: list[tuple[str, str, str]]) -> None:
    preparer = op.get_bind().dialect.identifier_preparer
    for view, grantee, privilege in grants:
        op.execute(f"GRANT {privilege} ON {view} TO {preparer.quote(grantee)}")


def _reader_role(grants: list[tuple[str, str, str]]) -> list[str]:
    return sorted({grantee for _, grantee, privilege in grants if privilege == "SELECT"})


def upgrade() -> None:
    views = {
        "latest_forecasts": LATEST_FORECASTS,
        "forecast_vs_actual": FORECAST_VS_ACTUAL,
        "model_leaderboard": MODEL_LEADERBOARD,
    }
    grants = _grants(tuple(views))
    for name in views:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    with op.batch_alter_table("forecasts") as batch:
        for name in FORECAST_COLUMNS:
            batch.add_column(sa.Column(name, sa.Double(), nullable=True))
    op.execute(
        "UPDATE forecasts SET " + ", ".join(f"{new} = {old}" for new, old in LSTM_COPIES.items())
    )
    with op.batch_alter_table("forecast_metrics") as batch:
        for name in METRIC_COLUMNS:
            batch.add_column(sa.Column(name, sa.Double(), nullable=True))
    op.create_table(
        "forecast_weights",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("horizon", sa.Integer(), nullable=False),
        sa.Column("expert", sa.String(length=16), nullable=False),
        sa.Column("weight", sa.Double(), nullable=False),
        sa.Column("rounds", sa.Integer(), nullable=False),
        sa.Column("from_prior", sa.Boolean(), nullable=False),
        sa.CheckConstraint(
            "expert IN ('lstm', 'naive', 'drift')", name=op.f("ck_forecast_weights_expert")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["forecast_runs.id"],
            name=op.f("fk_forecast_weights_run_id_forecast_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "horizon", "expert", name=op.f("pk_forecast_weights")),
    )
    for sql in views.values():
        op.execute(sql)
    _restore(grants)
    preparer = op.get_bind().dialect.identifier_preparer
    for reader in _reader_role(grants):  # who reads the views reads the weights too
        op.execute(f"GRANT SELECT ON forecast_weights TO {preparer.quote(reader)}")


def downgrade() -> None:
    views = {
        "latest_forecasts": OLD_LATEST_FORECASTS,
        "forecast_vs_actual": _old_forecast_vs_actual(),
        "model_leaderboard": OLD_MODEL_LEADERBOARD,
    }
    grants = _grants(tuple(views))
    for name in views:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_table("forecast_weights")
    with op.batch_alter_table("forecast_metrics") as batch:
        for name in METRIC_COLUMNS:
            batch.drop_column(name)
    with op.batch_alter_table("forecasts") as batch:
        for name in FORECAST_COLUMNS:
            batch.drop_column(name)
    for sql in views.values():
        op.execute(sql)
    _restore(grants)
