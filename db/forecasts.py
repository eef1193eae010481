"""Forecast runs, their forecasts and their scores.

For example::

    written = write_forecast_run(engine, "Bitstamp_BTCUSD_d", version.id, forecasts)
    written.replaced          # True when this (series, as_of, version) had forecasts before
    # -> False
    series = "Bitstamp_BTCUSD_d"
    for run in unscored_runs(engine, series) + revised_runs(engine, series):
        write_run_metrics(engine, run, score_frame)

A run is written in one transaction: re-running it replaces its forecasts (and drops their
stale scores), never duplicates them. A run's scores are stale once a candle at one of its
targets is revised after they were written (``candle_revisions.revised_at`` later than
``forecast_metrics.scored_at``): ``revised_runs`` lists those runs for scoring again.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from sqlalchemy import Engine, delete, func, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.forecast_tables import (
    METRIC_COLUMNS,
    RUN_KINDS,
    SCORE_COLUMNS,
    SERVING_COLUMNS,
    Forecast,
    ForecastMetric,
    ForecastRun,
    ForecastWeight,
    ModelVersion,
)
from db.models import Candle, Series, UtcDateTime

RunKind = Literal["daily", "backfill"]
VALUE_COLUMNS = ("value", "lower_80", "upper_80", "lower_95", "upper_95", "naive")
FORECAST_COLUMNS = ("as_of", "target_time", "horizon", *VALUE_COLUMNS)


@dataclass(frozen=True)
class RunInfo:
    id: int
    series: str
    as_of: dt.datetime
    model_version_id: int
    created_at: dt.datetime
    kind: str
    flow_run_id: str | None


@dataclass(frozen=True)
class WrittenRun:
    run: RunInfo
    replaced: bool
    n_forecasts: int
    rows: tuple[dict[str, Any], ...] = field(repr=False)  # as stored: a NULL is None


def write_forecast_run(
    engine: Engine,
    series: str,
    model_version_id: int,
    forecasts: pd.DataFrame,
    *,
    kind: RunKind = "daily",
    flow_run_id: str | None = None,
    weights: pd.DataFrame | None = None,
) -> WrittenRun:
    """Store the forecasts of one run, replacing those of the same (series, as_of, version).

    ``forecasts`` has the columns of ``LSTMForecaster.predict`` plus ``naive``, one as_of,
    and any of ``SERVING_COLUMNS`` (a missing or NaN one is NULL); ``weights`` (horizon,
    expert, weight, rounds, from_prior) are the served forecast's, stored with the run.
    """
    rows, as_of = _forecast_rows(forecasts, series)
    if kind not in RUN_KINDS:
        raise ValueError(f"forecast run of {series}: kind must be one of {RUN_KINDS}, got {kind!r}")
    now = dt.datetime.now(dt.UTC)
    values = {
        "series": series,
        "as_of": as_of,
        "model_version_id": model_version_id,
        "created_at": now,
        "kind": kind,
        "flow_run_id": flow_run_id,
    }
    with Session(engine) as session, session.begin():
        statement = _upsert(session, ForecastRun, values, ["series", "as_of", "model_version_id"])
        statement = statement.returning(ForecastRun.id)
        run_id = session.execute(statement).scalar_one()
        removed = session.execute(delete(Forecast).where(Forecast.run_id == run_id)).rowcount
        session.execute(delete(ForecastMetric).where(ForecastMetric.run_id == run_id))
        session.execute(delete(ForecastWeight).where(ForecastWeight.run_id == run_id))
        session.execute(
            insert(Forecast),
            [row | {"run_id": run_id, "series": series, "as_of": as_of} for row in rows],
        )
        if weights is not None and len(weights):
            session.execute(insert(ForecastWeight), _weight_rows(weights, run_id, series))
    run = RunInfo(run_id, series, as_of, model_version_id, now, kind, flow_run_id)
    return WrittenRun(run, replaced=bool(removed), n_forecasts=len(rows), rows=tuple(rows))


def _weight_rows(weights: pd.DataFrame, run_id: int, series: str) -> list[dict[str, Any]]:
    values = weights["weight"].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError(
            f"weights of a forecast run of {series}: not finite or negative: "
            f"{weights.to_dict('records')}"
        )
    return [
        {
            "run_id": run_id,
            "horizon": int(row.horizon),
            "quantity": str(getattr(row, "quantity", "value")),
            "expert": str(row.expert),
            "weight": float(row.weight),
            "rounds": int(row.rounds),
            "from_prior": bool(row.from_prior),
        }
        for row in weights.itertuples()
    ]


def _upsert(session: Session, table: type, values: dict[str, Any], keys: list[str], **where):
    """``INSERT … ON CONFLICT (keys) DO UPDATE`` on SQLite or PostgreSQL."""
    return _upsert_statement(session, table, list(values), keys, values=values, **where)


def _upsert_statement(
    session: Session,
    table: type,
    columns: list[str],
    keys: list[str],
    values: dict[str, Any] | None = None,
    **where,
):
    """The upsert of ``columns``; with ``values`` bound to them, else for an executemany."""
    dialect = session.get_bind().dialect.name
    module = {"postgresql": postgresql, "sqlite": sqlite}.get(dialect)
    if module is None:
        raise ValueError(f"unsupported database {dialect!r}: use SQLite or PostgreSQL")
    statement = module.insert(table)
    if values is not None:
        statement = statement.values(values)
    updates = {name: statement.excluded[name] for name in columns if name not in keys}
    return statement.on_conflict_do_update(index_elements=keys, set_=updates, **where)


def _forecast_rows(forecasts: pd.DataFrame, series: str) -> tuple[list[dict], dt.datetime]:
    where = f"forecasts of {series}"
    missing = [name for name in FORECAST_COLUMNS if name not in forecasts.columns]
    if missing:
        raise ValueError(f"{where}: missing columns {', '.join(missing)}")
    if forecasts.empty:
        raise ValueError(f"{where}: no rows to store")
    as_ofs = pd.DatetimeIndex(forecasts["as_of"]).unique()
    if len(as_ofs) != 1 or as_ofs.tz is None:
        raise ValueError(f"{where}: expected one tz-aware as_of per run, got {list(as_ofs)}")
    horizons = forecasts["horizon"].astype(int)
    if horizons.duplicated().any() or (horizons < 1).any():
        raise ValueError(f"{where}: horizons must be distinct and >= 1, got {horizons.tolist()}")
    values = forecasts.loc[:, list(VALUE_COLUMNS)].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        bad = int(np.argmax(~np.isfinite(values).all(axis=1)))
        raise ValueError(
            f"{where}: a forecast value is missing or not finite at horizon {horizons.iloc[bad]}"
        )
    targets = pd.DatetimeIndex(forecasts["target_time"]).tz_convert("UTC")
    rows = [
        {"horizon": int(h), "target_time": t.to_pydatetime()}
        | dict(zip(VALUE_COLUMNS, map(float, row), strict=True))
        for h, t, row in zip(horizons, targets, values, strict=True)
    ]
    for name in SERVING_COLUMNS:  # optional: NULL when absent, missing or not finite
        column = forecasts[name].to_numpy(dtype=np.float64) if name in forecasts else None
        for i, row in enumerate(rows):
            value = None if column is None else float(column[i])
            row[name] = value if value is not None and math.isfinite(value) else None
    return rows, as_ofs[0].tz_convert("UTC").to_pydatetime()


def run_forecasts(engine: Engine, run_ids: Sequence[int]) -> pd.DataFrame:
    """The forecasts of ``run_ids`` with their run_id and model_version_id, by run and horizon."""
    query = _forecasts_of_runs().where(Forecast.run_id.in_(list(run_ids)))
    return _frame(engine, query.order_by(Forecast.run_id, Forecast.horizon))


def served_forecasts(engine: Engine, series: str, *, as_of_from: dt.datetime) -> pd.DataFrame:
    """What was served for ``series`` at each as_of from ``as_of_from`` on: the forecasts of
    the newest run of each as_of (a run written again for the same as_of replaces the one
    before in ``latest_forecasts`` too), by as_of and horizon. One query, by the series'
    index, however many runs the stretch holds."""
    newest = (
        select(func.max(ForecastRun.id))
        .where(ForecastRun.series == series, ForecastRun.as_of >= as_of_from)
        .group_by(ForecastRun.as_of)
    )
    query = _forecasts_of_runs().where(Forecast.run_id.in_(newest))
    return _frame(engine, query.order_by(Forecast.as_of, Forecast.horizon))


def _forecasts_of_runs():
    """Forecasts with their run's id and model version: every value and serving column."""
    return select(
        Forecast.run_id,
        ForecastRun.model_version_id,
        Forecast.as_of,
        Forecast.target_time,
        Forecast.horizon,
        *(getattr(Forecast, name) for name in (*VALUE_COLUMNS, *SERVING_COLUMNS)),
    ).join(ForecastRun, ForecastRun.id == Forecast.run_id)


def version_scored_forecasts(
    engine: Engine, model_version_id: int, series: str | None = None
) -> pd.DataFrame:
    """Every forecast of the version's runs that have been scored (of ``series`` only, if
    given: a global version forecasts several series)."""
    scored = select(ForecastMetric.run_id).where(
        ForecastMetric.model_version_id == model_version_id, ForecastMetric.run_id.is_not(None)
    )
    query = select(ForecastRun.id).where(ForecastRun.id.in_(scored))
    if series is not None:
        query = query.where(ForecastRun.series == series)
    with engine.connect() as connection:
        run_ids = connection.execute(query).scalars().all()
    return run_forecasts(engine, run_ids)


def recent_run_forecasts(
    engine: Engine,
    series: str,
    *,
    last_runs: int,
    retrain_id: int | None = None,
    targets_until: dt.datetime | None = None,
) -> pd.DataFrame:
    """The forecasts of the newest ``last_runs`` runs whose targets are all up to a time.

    ``targets_until`` defaults to the series' last final candle, so every target has its
    actual. With ``retrain_id``, only runs of that lineage (a retrain and every fine-tune
    descended from it) count.
    """
    last_target = (
        select(func.max(Forecast.target_time))
        .where(Forecast.run_id == ForecastRun.id)
        .scalar_subquery()
    )
    if isinstance(targets_until, pd.Timestamp):
        targets_until = targets_until.to_pydatetime()
    if targets_until is None:
        targets_until = (
            select(func.max(Candle.time))
            .join(Series, Series.id == Candle.series_id)
            .where(Series.key == series, Candle.is_final)
            .scalar_subquery()
        )
    query = select(ForecastRun.id).where(ForecastRun.series == series, last_target <= targets_until)
    if retrain_id is not None:
        lineage = select(ModelVersion.id).where(ModelVersion.retrain_id == retrain_id)
        query = query.where(ForecastRun.model_version_id.in_(lineage))
    query = query.order_by(ForecastRun.as_of.desc(), ForecastRun.id.desc()).limit(last_runs)
    with engine.connect() as connection:
        run_ids = connection.execute(query).scalars().all()
    return run_forecasts(engine, run_ids)


def lineage_series(engine: Engine, retrain_id: int) -> set[str]:
    """The series with a forecast run of the lineage of retrain ``retrain_id`` (the retrain
    and every fine-tune descended from it): those of a global model's members whose recent
    skill it has."""
    lineage = select(ModelVersion.id).where(ModelVersion.retrain_id == retrain_id)
    query = select(ForecastRun.series).where(ForecastRun.model_version_id.in_(lineage)).distinct()
    with engine.connect() as connection:
        return set(connection.execute(query).scalars())


def unscored_runs(engine: Engine, series: str) -> list[RunInfo]:
    """Runs of ``series`` not scored yet whose every target time now has a final candle."""
    query = text(
        """
        SELECT r.id, r.series, r.as_of, r.model_version_id, r.created_at, r.kind, r.flow_run_id
        FROM forecast_runs AS r
        WHERE r.series = :series
          AND NOT EXISTS (SELECT 1 FROM forecast_metrics AS m WHERE m.run_id = r.id)
          AND (SELECT MAX(f.target_time) FROM forecasts AS f WHERE f.run_id = r.id)
              <= (SELECT MAX(c.time) FROM candles AS c JOIN series AS s ON s.id = c.series_id
                  WHERE s.key = :series AND c.is_final)
        ORDER BY r.as_of, r.id
        """
    ).columns(as_of=UtcDateTime(), created_at=UtcDateTime())
    with engine.connect() as connection:
        rows = connection.execute(query, {"series": series}).all()
    return [RunInfo(*row) for row in rows]


def revised_runs(engine: Engine, series: str) -> list[RunInfo]:
    """Scored runs of ``series`` with a target candle revised since they were scored."""
    query = text(
        """
        SELECT r.id, r.series, r.as_of, r.model_version_id, r.created_at, r.kind, r.flow_run_id
        FROM forecast_runs AS r
        WHERE r.series = :series
          AND r.id IN (
              SELECT f.run_id
              FROM candle_revisions AS cr
              JOIN series AS s ON s.id = cr.series_id
              JOIN forecasts AS f ON f.series = s.key AND f.target_time = cr.time
              JOIN forecast_metrics AS m ON m.run_id = f.run_id AND m.horizon = 0
              WHERE s.key = :series AND cr.revised_at > m.scored_at)
        ORDER BY r.as_of, r.id
        """
    ).columns(as_of=UtcDateTime(), created_at=UtcDateTime())
    with engine.connect() as connection:
        rows = connection.execute(query, {"series": series}).all()
    return [RunInfo(*row) for row in rows]


def write_run_metrics(engine: Engine, run: RunInfo, metrics: pd.DataFrame) -> int:
    """Store the scores of one run (``score_forecasts`` output plus first/last_target)."""
    return write_scores(engine, runs=[(run, metrics)])


def write_version_metrics(
    engine: Engine, series: str, model_version_id: int, metrics: pd.DataFrame, *, n_runs: int
) -> int:
    """Store the scores of a model version over all its scored runs (replacing older ones)."""
    return write_scores(engine, versions=[VersionScores(series, model_version_id, metrics, n_runs)])


@dataclass(frozen=True)
class VersionScores:
    """A model version's scores over its ``n_runs`` scored runs of ``series``."""

    series: str
    model_version_id: int
    metrics: pd.DataFrame
    n_runs: int


def write_scores(
    engine: Engine,
    runs: Sequence[tuple[RunInfo, pd.DataFrame]] = (),
    versions: Sequence[VersionScores] = (),
) -> int:
    """Store runs' and versions' scores in one transaction (replacing older ones); returns
    the rows written. A backfill's evaluation scores thousands at once."""
    now = dt.datetime.now(dt.UTC)
    run_rows = [
        row
        for run, metrics in runs
        for row in _stored_metric_rows(
            metrics, f"scores of forecast run {run.id} of {run.series}",
            series=run.series, model_version_id=run.model_version_id, run_id=run.id, n_runs=1,
            scored_at=now,
        )
    ]  # fmt: skip
    version_rows = [
        row
        for v in versions
        for row in _stored_metric_rows(
            v.metrics, f"scores of model version {v.model_version_id} of {v.series}",
            series=v.series, model_version_id=v.model_version_id, run_id=None, n_runs=v.n_runs,
            scored_at=now,
        )
    ]  # fmt: skip
    with Session(engine) as session, session.begin():
        _upsert_many(session, ForecastMetric, run_rows, ["run_id", "horizon"])
        _upsert_many(
            session,
            ForecastMetric,
            version_rows,
            ["model_version_id", "series", "horizon"],  # 0006: per series
            index_where=ForecastMetric.run_id.is_(None),
        )
    return len(run_rows) + len(version_rows)


def _upsert_many(
    session: Session, table: type, rows: list[dict[str, Any]], keys: list[str], **where
) -> None:
    """`_upsert` of many rows with the same columns, one executemany (a statement each took
    ~7 ms on SQLite: a backfill's evaluation writes thousands of rows)."""
    if not rows:
        return
    statement = _upsert_statement(session, table, list(rows[0]), keys, **where)
    session.connection().execute(statement, rows)


def scored_runs_of(engine: Engine, version_ids: Sequence[int], series: str) -> dict[int, list[int]]:
    """The ids of each version's scored runs of ``series``, in id order (one query)."""
    scored = select(ForecastMetric.run_id).where(
        ForecastMetric.model_version_id.in_(list(version_ids)), ForecastMetric.run_id.is_not(None)
    )
    query = (
        select(ForecastRun.model_version_id, ForecastRun.id)
        .where(ForecastRun.id.in_(scored), ForecastRun.series == series)
        .order_by(ForecastRun.id)
    )
    found: dict[int, list[int]] = {version_id: [] for version_id in version_ids}
    with engine.connect() as connection:
        for version_id, run_id in connection.execute(query):
            found[version_id].append(run_id)
    return found


def _stored_metric_rows(metrics: pd.DataFrame, where: str, **columns: Any) -> list[dict[str, Any]]:
    """`_metric_rows` with the columns that say whose scores they are (series, run, ...)."""
    return [row | columns for row in _metric_rows(metrics, where)]


def _metric_rows(metrics: pd.DataFrame, where: str) -> list[dict[str, Any]]:
    needed = ["n", *METRIC_COLUMNS, "first_target", "last_target"]
    missing = [name for name in needed if name not in metrics.columns and name not in SCORE_COLUMNS]
    if missing:
        raise ValueError(f"{where}: missing columns {', '.join(missing)}")
    rows = []
    for horizon, record in metrics.iterrows():
        row: dict[str, Any] = {"horizon": int(horizon), "n": int(record["n"])}
        for name in METRIC_COLUMNS:  # the probabilistic scores may be absent: NULL
            value = float(record[name]) if name in record.index else math.nan
            row[name] = value if math.isfinite(value) else None
        for name in ("first_target", "last_target"):
            row[name] = pd.Timestamp(record[name]).tz_convert("UTC").to_pydatetime()
        rows.append(row)
    return rows


def has_run(engine: Engine, series: str, kind: str) -> bool:
    """Whether ``series`` has a forecast run of ``kind`` (``daily``, ``backfill``): one row read."""
    query = select(ForecastRun.id).where(ForecastRun.series == series, ForecastRun.kind == kind)
    with Session(engine) as session:
        return session.execute(query.limit(1)).first() is not None


def runs(engine: Engine, series: str) -> list[RunInfo]:
    """Every forecast run of ``series``, by as_of."""
    query = (
        select(ForecastRun)
        .where(ForecastRun.series == series)
        .order_by(ForecastRun.as_of, ForecastRun.id)
    )
    with Session(engine) as session:
        return [
            RunInfo(
                r.id, r.series, r.as_of, r.model_version_id, r.created_at, r.kind, r.flow_run_id
            )
            for r in session.execute(query).scalars()
        ]


def latest_forecasts(engine: Engine, series: str) -> pd.DataFrame:
    """The forecasts of the series' newest run, read from the ``latest_forecasts`` view.

    Index lookups only (see docs/sql.md); empty when the series has no forecast yet.
    """
    query = text(
        """
        SELECT lf.series, lf.as_of, lf.target_time, lf.horizon, lf.value,
               lf.lower_80, lf.upper_80, lf.lower_95, lf.upper_95, lf.naive,
               lf.model_version_id, lf.run_id
        FROM latest_forecasts AS lf
        WHERE lf.series = :series
          AND lf.run_id = (SELECT r.id FROM forecast_runs AS r WHERE r.series = :series
                           ORDER BY r.as_of DESC, r.id DESC LIMIT 1)
        ORDER BY lf.target_time
        """
    ).columns(as_of=UtcDateTime(), target_time=UtcDateTime())
    return _frame(engine, query, {"series": series})


def _frame(engine: Engine, query, params: dict[str, Any] | None = None) -> pd.DataFrame:
    with engine.connect() as connection:
        result = connection.execute(query, params or {})
        frame = pd.DataFrame(result.all(), columns=list(result.keys()))
    for name in ("as_of", "target_time"):
        if name in frame.columns:
            frame[name] = pd.to_datetime(frame[name], utc=True)
    for name in (*VALUE_COLUMNS, *SERVING_COLUMNS):
        if name in frame.columns:
            frame[name] = frame[name].astype("float64")
    return frame
