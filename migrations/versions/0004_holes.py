"""Holes: ``forecast_vs_actual`` also shows the forecasts whose target candle never arrived.

A series with holes (an exchange skipped some candles) has forecasts whose target time has
no candle although later candles are final: they can never be scored. The view now lists
them too, with ``scorable`` 0 and NULL actual, errors and hits, instead of leaving them out
(where they looked like forecasts still waiting for their candle). ``scorable`` is 1 for the
forecasts whose target has a final candle (every row of the 0002 view).

On PostgreSQL the view's privileges (the ``forecast_reader`` grant) are kept across the
drop and re-create.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

VIEW = "forecast_vs_actual"

# The 0002 columns, then ``scorable``. A target in a hole (no candle, a later final candle)
# gets a row with NULL actual; a target whose candle is not final yet gets none (as before).
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
       CASE WHEN c.close IS NULL THEN 0 ELSE 1 END AS scorable
FROM forecasts AS f
JOIN forecast_runs AS r ON r.id = f.run_id
JOIN series AS s ON s.key = f.series
LEFT JOIN candles AS c ON c.series_id = s.id AND c.time = f.target_time
WHERE c.is_final
   OR (c.series_id IS NULL
       AND f.target_time < (SELECT MAX(l.time) FROM candles AS l
                            WHERE l.series_id = s.id AND l.is_final))
"""

# The 0002 definition, restored by the downgrade.
FORECAST_VS_ACTUAL_0002 = """
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


def _replace_view(definition: str) -> None:
    """Drop and re-create the view; on PostgreSQL its grants to other roles are restored."""
    bind = op.get_bind()
    grants: list[tuple[str, str]] = []
    if bind.dialect.name == "postgresql":
        grants = [
            (grantee, privilege)
            for grantee, privilege in bind.execute(
                sa.text(
                    "SELECT grantee, privilege_type FROM information_schema.role_table_grants "
                    "WHERE table_schema = current_schema() AND table_name = :view "
                    "AND grantee <> current_user"
                ),
                {"view": VIEW},
            )
        ]
    op.execute(f"DROP VIEW IF EXISTS {VIEW}")
    op.execute(definition)
    preparer = bind.dialect.identifier_preparer
    for grantee, privilege in grants:
        op.execute(f"GRANT {privilege} ON {VIEW} TO {preparer.quote(grantee)}")


def upgrade() -> None:
    _replace_view(FORECAST_VS_ACTUAL)


def downgrade() -> None:
    _replace_view(FORECAST_VS_ACTUAL_0002)
