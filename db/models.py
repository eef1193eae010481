"""Tables of ingestion: ``series``, ``candles``, ``ingest_runs``, ``ingest_rejects``,
``candle_revisions`` and ``series_locks``.

Every timestamp is UTC. Columns use :class:`UtcDateTime`, a ``DateTime(timezone=True)`` that
refuses naive datetimes and always reads back tz-aware UTC values, also on SQLite (which stores
no offset).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from cdd.series_key import MAX_LENGTH
from db.base import Base

RUN_STATUSES = ("running", "success", "not_modified", "failed", "interrupted")


class UtcDateTime(TypeDecorator[dt.datetime]):
    """``DateTime(timezone=True)`` that stores UTC and returns tz-aware UTC datetimes.

    >>> UtcDateTime().process_bind_param(dt.datetime(2024, 1, 1), None)
    Traceback (most recent call last):
    ValueError: naive datetime 2024-01-01 00:00:00: pass a tz-aware (UTC) datetime
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect | None):
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value}: pass a tz-aware (UTC) datetime")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect | None):
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite keeps no offset; every stored value is UTC
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Series(Base):
    """A CryptoDataDownload series, keyed by its file stem (``Bitstamp_BTCUSD_d``)."""

    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(MAX_LENGTH["key"]), unique=True)
    exchange: Mapped[str] = mapped_column(String(MAX_LENGTH["exchange"]))
    pair: Mapped[str] = mapped_column(String(20))
    timeframe: Mapped[str] = mapped_column(String(10))


class Candle(Base):
    """One OHLCV candle; ``time`` is its open time, ``is_final`` false while its period is open.

    ``series_id`` is ``series.id`` but deliberately not a foreign key: PostgreSQL checks a
    foreign key with one trigger call per inserted row, which tripled the time of a bulk COPY
    (bench/ingest.py). db.candles.upsert_candles, the only writer, creates the series row
    first, and series rows are never deleted. On SQLite the table is ``WITHOUT ROWID``: one
    B-tree clustered by (series_id, time) instead of a table plus a primary-key index, which
    halves the work of range reads and bulk inserts.
    """

    __tablename__ = "candles"
    __table_args__ = {"sqlite_with_rowid": False}

    series_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[dt.datetime] = mapped_column(UtcDateTime(), primary_key=True)
    open: Mapped[float] = mapped_column(Double)
    high: Mapped[float] = mapped_column(Double)
    low: Mapped[float] = mapped_column(Double)
    close: Mapped[float] = mapped_column(Double)
    volume_base: Mapped[float] = mapped_column(Double)
    volume_quote: Mapped[float] = mapped_column(Double)
    is_final: Mapped[bool] = mapped_column(Boolean)
    first_seen_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class IngestRun(Base):
    """One attempt to download and store a series; failures keep their error here."""

    __tablename__ = "ingest_runs"
    __table_args__ = (
        CheckConstraint(f"status IN {RUN_STATUSES!r}", name="status"),
        Index("ix_ingest_runs_series_started_at", "series", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # the key as requested, not a foreign key: a run for a key unknown to CDD is still recorded
    series: Mapped[str] = mapped_column(String(100))
    source_url: Mapped[str] = mapped_column(Text)
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    status: Mapped[str] = mapped_column(String(16))
    rows_read: Mapped[int | None] = mapped_column(Integer)
    inserted: Mapped[int | None] = mapped_column(Integer)
    updated: Mapped[int | None] = mapped_column(Integer)
    unchanged: Mapped[int | None] = mapped_column(Integer)
    etag: Mapped[str | None] = mapped_column(Text)
    last_modified: Mapped[str | None] = mapped_column(Text)
    content_hash: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    # what the parser skipped or dropped, and how many stored final candles the file revised
    zero_rows: Mapped[int | None] = mapped_column(Integer)
    rejected_rows: Mapped[int | None] = mapped_column(Integer)
    superseded_rows: Mapped[int | None] = mapped_column(Integer)
    time_mismatches: Mapped[int | None] = mapped_column(Integer)
    revised: Mapped[int | None] = mapped_column(Integer)


class IngestReject(Base):
    """A bad row of a downloaded file: not stored as a candle, kept here with its line and why."""

    __tablename__ = "ingest_rejects"
    __table_args__ = (
        Index("ix_ingest_rejects_series_time", "series", "time"),
        Index("ix_ingest_rejects_ingest_run_id", "ingest_run_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ingest_run_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("ingest_runs.id", ondelete="CASCADE")
    )
    series: Mapped[str] = mapped_column(String(100))
    line: Mapped[int] = mapped_column(Integer)  # 1-based line of the file
    time: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[str | None] = mapped_column(Text)


class CandleRevision(Base):
    """A change to a stored final candle: its values before and after, when and by which run."""

    __tablename__ = "candle_revisions"
    __table_args__ = (Index("ix_candle_revisions_series_id_time", "series_id", "time"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(Integer)
    time: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    ingest_run_id: Mapped[int | None] = mapped_column(Integer)
    revised_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    old_open: Mapped[float | None] = mapped_column(Double)
    old_high: Mapped[float | None] = mapped_column(Double)
    old_low: Mapped[float | None] = mapped_column(Double)
    old_close: Mapped[float | None] = mapped_column(Double)
    old_volume_base: Mapped[float | None] = mapped_column(Double)
    old_volume_quote: Mapped[float | None] = mapped_column(Double)
    new_open: Mapped[float | None] = mapped_column(Double)
    new_high: Mapped[float | None] = mapped_column(Double)
    new_low: Mapped[float | None] = mapped_column(Double)
    new_close: Mapped[float | None] = mapped_column(Double)
    new_volume_base: Mapped[float | None] = mapped_column(Double)
    new_volume_quote: Mapped[float | None] = mapped_column(Double)
    old_is_final: Mapped[bool] = mapped_column(Boolean)
    new_is_final: Mapped[bool] = mapped_column(Boolean)


class SeriesLock(Base):
    """A lease on a named piece of work (``backfill-<series>``), renewed while its holder runs."""

    __tablename__ = "series_locks"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(Text)
    acquired_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
