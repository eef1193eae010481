"""Small helpers that build candles frames and read tables back for the db tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from cdd.series_key import TIMEFRAMES
from db.forecast_tables import METRIC_COLUMNS, ForecastMetric

TABLES = {
    "series": "id",
    "candles": "series_id, time",
    "ingest_runs": "id",
}


def make_candles(
    start: str = "2024-01-01",
    periods: int = 10,
    timeframe: str = "d",
    *,
    seed: int = 0,
    partial_last: bool = False,
) -> pd.DataFrame:
    """A valid candles frame: ``periods`` candles of ``timeframe`` from ``start`` (UTC)."""
    rng = np.random.default_rng(seed)
    index = pd.date_range(
        pd.Timestamp(start, tz="UTC"), periods=periods, freq=TIMEFRAMES[timeframe], name="time"
    )
    close = 100 + np.cumsum(rng.normal(0, 1, periods)) + 10
    open_ = close + rng.normal(0, 0.5, periods)
    frame = pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) + rng.random(periods),
            "low": np.minimum(open_, close) - rng.random(periods),
            "close": close,
            "volume_base": rng.random(periods) * 10,
            "volume_quote": rng.random(periods) * 1000,
            "is_final": np.ones(periods, dtype=bool),
        },
        index=index,
    )
    if partial_last and periods:
        frame.iloc[-1, frame.columns.get_loc("is_final")] = False
    return frame


def table_rows(engine: sa.Engine, table: str) -> list[tuple]:
    """Every row of ``table`` in primary-key order, for before/after comparisons."""
    with engine.connect() as connection:
        rows = connection.execute(sa.text(f"SELECT * FROM {table} ORDER BY {TABLES[table]}"))
        return [tuple(row) for row in rows]


def snapshot(engine: sa.Engine) -> dict[str, list[tuple]]:
    return {table: table_rows(engine, table) for table in TABLES}


def run_metrics(engine: Engine, run_id: int) -> pd.DataFrame:
    """The stored scores of one run, indexed by horizon (0: pooled)."""
    query = select(ForecastMetric).where(ForecastMetric.run_id == run_id)
    return _metrics_frame(engine, query)


def version_metrics(engine: Engine, model_version_id: int) -> pd.DataFrame:
    """The stored scores of a model version over all its scored runs, indexed by horizon."""
    query = select(ForecastMetric).where(
        ForecastMetric.model_version_id == model_version_id, ForecastMetric.run_id.is_(None)
    )
    return _metrics_frame(engine, query)


def _metrics_frame(engine: Engine, query: sa.Select) -> pd.DataFrame:
    """The ForecastMetric rows of ``query`` as a frame indexed by horizon."""
    columns = ["horizon", "n", "n_runs", *METRIC_COLUMNS, "first_target", "last_target"]
    with Session(engine) as session:
        records = [
            {name: getattr(row, name) for name in columns}
            for row in session.execute(query).scalars()
        ]
    frame = pd.DataFrame.from_records(records, columns=columns).set_index("horizon")
    return frame.sort_index().astype({name: "float64" for name in METRIC_COLUMNS})
