"""Forecasting tables: model versions, forecast runs, forecasts, their scores and weights.

Tables ``model_versions``, ``forecast_runs``, ``forecasts``, ``forecast_metrics`` and
``forecast_weights`` (the weights behind each served forecast, revision 0005).

Every timestamp is UTC (:class:`db.models.UtcDateTime`). A model version keeps its artifact
(the forecaster's ``to_bytes``) in the database with its sha256, so that workers on different
machines share models through the database alone. ``forecasts`` repeats its run's ``series`` and
``as_of`` so that "the newest forecast of each target time of one series" is one index range
(``ix_forecasts_series_target_time``), which the ``latest_forecasts`` view relies on.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base
from db.models import UtcDateTime

MODEL_KINDS = ("retrain", "finetune")
TRAIN_ACTIONS = ("retrain", "finetune", "keep")
RUN_KINDS = ("daily", "backfill")
# The forecasts the served one aggregates (drift: in runs before revision 0007 only).
EXPERTS = ("lstm", "naive", "drift")
# What a weight is for: the served value, or one of its bounds (revision 0007).
QUANTITIES = ("value", "lower_80", "upper_80", "lower_95", "upper_95")
# Columns of ``forecasts`` added by revision 0005 (NULL on rows written before it but the
# lstm_* ones, which it copied from the LSTM's forecast that value then was).
SERVING_COLUMNS = (
    "lstm_value",
    "lstm_lower_80",
    "lstm_upper_80",
    "lstm_lower_95",
    "lstm_upper_95",
    "drift",
    "naive_lower_80",
    "naive_upper_80",
    "naive_lower_95",
    "naive_upper_95",
    "volatility",
    "scale_80",
    "scale_95",
)
# Probabilistic scores, each for the served forecast, the LSTM's (lstm_) and the naive with
# empirical intervals (naive_): interval score and pinball loss at the bounds (÷ the close at
# as_of) and 80 % coverage per volatility tercile of the scored as_of times.
PROBABILISTIC = (
    "interval_score_80",
    "interval_score_95",
    "pinball_80",
    "pinball_95",
    "coverage_80_low_vol",
    "coverage_80_mid_vol",
    "coverage_80_high_vol",
)
SCORE_COLUMNS = (
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
METRIC_COLUMNS = (
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
    *SCORE_COLUMNS,
)


class ModelVersion(Base):
    """One trained model of a series: a retrain from scratch or a fine-tune of ``parent_id``.

    ``retrain_id`` is the retrain its lineage started from (itself for a retrain); the
    ``artifact`` column is deferred, so listing versions does not read the models.
    """

    __tablename__ = "model_versions"
    __table_args__ = (
        CheckConstraint(f"kind IN {MODEL_KINDS!r}", name="kind"),
        Index("ix_model_versions_series_train_last", "series", "train_last", "id"),
        Index("ix_model_versions_flow_run_id", "flow_run_id"),
        Index("ix_model_versions_group_train_last", "model_group", "train_last", "id"),
        Index("ix_model_versions_retrain_id", "retrain_id"),  # a lineage's versions
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series: Mapped[str] = mapped_column(ForeignKey("series.key", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    kind: Mapped[str] = mapped_column(String(16))
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL")
    )
    retrain_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL")
    )
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    train_first: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    train_last: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    n_windows: Mapped[int] = mapped_column(Integer)
    validation_metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    artifact: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    artifact_size: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(32))
    train_seconds: Mapped[float] = mapped_column(Double)
    flow_run_id: Mapped[str | None] = mapped_column(String(36))
    # a global model of this timeframe's group (0006; None: a model of ``series`` alone)
    model_group: Mapped[str | None] = mapped_column(String(16))


class ModelVersionSeries(Base):
    """The series a global model version was given: trained on, or kept out (too short)."""

    __tablename__ = "model_version_series"
    __table_args__ = (Index("ix_model_version_series_series", "series"),)

    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    series: Mapped[str] = mapped_column(
        ForeignKey("series.key", ondelete="CASCADE"), primary_key=True
    )
    trained: Mapped[bool] = mapped_column(Boolean)


class TrainOutcomeRow(Base):
    """What a train flow run did for a model scope (revision 0008): the version it registered,
    or the one it kept, which is what the run that dispatched it serves."""

    __tablename__ = "train_outcomes"
    __table_args__ = (CheckConstraint(f"action IN {TRAIN_ACTIONS!r}", name="action"),)

    flow_run_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    scope: Mapped[str] = mapped_column(String(110), primary_key=True)  # a key, or global <tf>
    action: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), index=True
    )


class ForecastRun(Base):
    """The forecasts one model version made for a series from the candles up to ``as_of``."""

    __tablename__ = "forecast_runs"
    __table_args__ = (
        UniqueConstraint("series", "as_of", "model_version_id"),
        CheckConstraint(f"kind IN {RUN_KINDS!r}", name="kind"),
        Index("ix_forecast_runs_model_version_id", "model_version_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series: Mapped[str] = mapped_column(ForeignKey("series.key", ondelete="CASCADE"))
    as_of: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE")
    )
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    kind: Mapped[str] = mapped_column(String(16))
    flow_run_id: Mapped[str | None] = mapped_column(String(36))


class Forecast(Base):
    """One forecast of a run: ``horizon`` periods after ``as_of``, beside the naive forecast."""

    __tablename__ = "forecasts"
    __table_args__ = (
        Index("ix_forecasts_series_target_time", "series", "target_time", "as_of", "run_id"),
    )

    run_id: Mapped[int] = mapped_column(
        ForeignKey("forecast_runs.id", ondelete="CASCADE"), primary_key=True
    )
    horizon: Mapped[int] = mapped_column(Integer, primary_key=True)
    series: Mapped[str] = mapped_column(String(100))  # the run's, for the index
    as_of: Mapped[dt.datetime] = mapped_column(UtcDateTime())  # the run's, for the index
    target_time: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    value: Mapped[float] = mapped_column(Double)
    lower_80: Mapped[float] = mapped_column(Double)
    upper_80: Mapped[float] = mapped_column(Double)
    lower_95: Mapped[float] = mapped_column(Double)
    upper_95: Mapped[float] = mapped_column(Double)
    naive: Mapped[float] = mapped_column(Double)
    lstm_value: Mapped[float | None] = mapped_column(Double)
    lstm_lower_80: Mapped[float | None] = mapped_column(Double)
    lstm_upper_80: Mapped[float | None] = mapped_column(Double)
    lstm_lower_95: Mapped[float | None] = mapped_column(Double)
    lstm_upper_95: Mapped[float | None] = mapped_column(Double)
    drift: Mapped[float | None] = mapped_column(Double)
    naive_lower_80: Mapped[float | None] = mapped_column(Double)
    naive_upper_80: Mapped[float | None] = mapped_column(Double)
    naive_lower_95: Mapped[float | None] = mapped_column(Double)
    naive_upper_95: Mapped[float | None] = mapped_column(Double)
    volatility: Mapped[float | None] = mapped_column(Double)
    scale_80: Mapped[float | None] = mapped_column(Double)
    scale_95: Mapped[float | None] = mapped_column(Double)


class ForecastMetric(Base):
    """Scores of forecasts against final candles, per horizon (``0``: all horizons pooled).

    A row with ``run_id`` scores one run; a row without scores every scored run of its model
    version together. Metrics that are undefined (no spread in the naive errors) are NULL.
    """

    __tablename__ = "forecast_metrics"
    __table_args__ = (
        UniqueConstraint("run_id", "horizon"),
        Index(
            "uq_forecast_metrics_version_series_horizon",  # 0006: a global version, per series
            "model_version_id",
            "series",
            "horizon",
            unique=True,
            sqlite_where=text("run_id IS NULL"),
            postgresql_where=text("run_id IS NULL"),
        ),
        Index("ix_forecast_metrics_series_version", "series", "model_version_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series: Mapped[str] = mapped_column(ForeignKey("series.key", ondelete="CASCADE"))
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE")
    )
    run_id: Mapped[int | None] = mapped_column(ForeignKey("forecast_runs.id", ondelete="CASCADE"))
    horizon: Mapped[int] = mapped_column(Integer)
    n: Mapped[int] = mapped_column(Integer)
    n_runs: Mapped[int] = mapped_column(Integer)
    first_target: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    last_target: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    rmse: Mapped[float | None] = mapped_column(Double)
    mae: Mapped[float | None] = mapped_column(Double)
    mape: Mapped[float | None] = mapped_column(Double)
    smape: Mapped[float | None] = mapped_column(Double)
    mase: Mapped[float | None] = mapped_column(Double)
    direction: Mapped[float | None] = mapped_column(Double)
    coverage_80: Mapped[float | None] = mapped_column(Double)
    width_80: Mapped[float | None] = mapped_column(Double)
    coverage_95: Mapped[float | None] = mapped_column(Double)
    width_95: Mapped[float | None] = mapped_column(Double)
    naive_rmse: Mapped[float | None] = mapped_column(Double)
    skill: Mapped[float | None] = mapped_column(Double)
    interval_score_80: Mapped[float | None] = mapped_column(Double)
    interval_score_95: Mapped[float | None] = mapped_column(Double)
    pinball_80: Mapped[float | None] = mapped_column(Double)
    pinball_95: Mapped[float | None] = mapped_column(Double)
    coverage_80_low_vol: Mapped[float | None] = mapped_column(Double)
    coverage_80_mid_vol: Mapped[float | None] = mapped_column(Double)
    coverage_80_high_vol: Mapped[float | None] = mapped_column(Double)
    dm_statistic: Mapped[float | None] = mapped_column(Double)
    dm_p_value: Mapped[float | None] = mapped_column(Double)
    lstm_rmse: Mapped[float | None] = mapped_column(Double)
    lstm_skill: Mapped[float | None] = mapped_column(Double)
    lstm_coverage_80: Mapped[float | None] = mapped_column(Double)
    lstm_coverage_95: Mapped[float | None] = mapped_column(Double)
    lstm_interval_score_80: Mapped[float | None] = mapped_column(Double)
    lstm_interval_score_95: Mapped[float | None] = mapped_column(Double)
    lstm_pinball_80: Mapped[float | None] = mapped_column(Double)
    lstm_pinball_95: Mapped[float | None] = mapped_column(Double)
    lstm_coverage_80_low_vol: Mapped[float | None] = mapped_column(Double)
    lstm_coverage_80_mid_vol: Mapped[float | None] = mapped_column(Double)
    lstm_coverage_80_high_vol: Mapped[float | None] = mapped_column(Double)
    lstm_dm_statistic: Mapped[float | None] = mapped_column(Double)
    lstm_dm_p_value: Mapped[float | None] = mapped_column(Double)
    naive_coverage_80: Mapped[float | None] = mapped_column(Double)
    naive_coverage_95: Mapped[float | None] = mapped_column(Double)
    naive_interval_score_80: Mapped[float | None] = mapped_column(Double)
    naive_interval_score_95: Mapped[float | None] = mapped_column(Double)
    naive_pinball_80: Mapped[float | None] = mapped_column(Double)
    naive_pinball_95: Mapped[float | None] = mapped_column(Double)
    naive_coverage_80_low_vol: Mapped[float | None] = mapped_column(Double)
    naive_coverage_80_mid_vol: Mapped[float | None] = mapped_column(Double)
    naive_coverage_80_high_vol: Mapped[float | None] = mapped_column(Double)
    scored_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class ForecastWeight(Base):
    """The weight an expert had in the served forecast of one run and horizon.

    ``quantity``: ``value`` (the served value) or the bound it aggregated (``lower_80`` …);
    ``rounds``: the scored forecasts of that horizon the weights were learnt from;
    ``from_prior``: fewer than ``forecaster.online.MIN_ROUNDS``, so the prior weights served.
    """

    __tablename__ = "forecast_weights"
    __table_args__ = (
        CheckConstraint(f"expert IN {EXPERTS!r}", name="expert"),
        CheckConstraint(f"quantity IN {QUANTITIES!r}", name="quantity"),
    )

    run_id: Mapped[int] = mapped_column(
        ForeignKey("forecast_runs.id", ondelete="CASCADE"), primary_key=True
    )
    horizon: Mapped[int] = mapped_column(Integer, primary_key=True)
    quantity: Mapped[str] = mapped_column(String(16), primary_key=True, server_default="value")
    expert: Mapped[str] = mapped_column(String(16), primary_key=True)
    weight: Mapped[float] = mapped_column(Double)
    rounds: Mapped[int] = mapped_column(Integer)
    from_prior: Mapped[bool] = mapped_column(Boolean)
