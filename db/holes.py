"""Holes in stored series: candle times missing between two stored candles.

For example::

    series_holes(engine, "Binance_ADAUSDT_1h")[-1]
    # -> StoredHole(after=2021-04-25 04:00+00:00, before=2021-04-25 08:00+00:00, missing=3)

The database compares each candle with the one before it (a window function), so only the
holes come back, however long the series.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Engine, text

from cdd.series_key import SeriesKey
from db.models import UtcDateTime

# seconds between a candle and the one before it, per dialect
_SECONDS = {
    "postgresql": "EXTRACT(EPOCH FROM (time - previous))",
    "sqlite": "ROUND((julianday(time) - julianday(previous)) * 86400)",
}


@dataclass(frozen=True)
class StoredHole:
    """Candle times missing between the stored candles ``after`` and ``before``."""

    after: dt.datetime
    before: dt.datetime
    missing: int

    def __str__(self) -> str:
        step = (self.before - self.after) / (self.missing + 1)
        first, last = self.after + step, self.before - step
        span = f"{first:%Y-%m-%d %H:%M}"
        if self.missing > 1:
            span += f" .. {last:%Y-%m-%d %H:%M}"
        return f"{span} ({self.missing} missing)"


def series_holes(engine: Engine, series: str) -> list[StoredHole]:
    """Every hole of ``series`` (final or not), oldest first; [] for an unknown series."""
    period = SeriesKey.of(series).period.total_seconds()
    seconds = _SECONDS.get(engine.dialect.name)
    if seconds is None:
        raise ValueError(f"unsupported database {engine.dialect.name!r}: use SQLite or PostgreSQL")
    query = text(
        f"""
        SELECT previous, time, {seconds} AS seconds
        FROM (SELECT c.time, LAG(c.time) OVER (ORDER BY c.time) AS previous
              FROM candles AS c JOIN series AS s ON s.id = c.series_id
              WHERE s.key = :series) AS steps
        WHERE previous IS NOT NULL AND {seconds} > :period
        ORDER BY time
        """
    ).columns(previous=UtcDateTime(), time=UtcDateTime())
    with engine.connect() as connection:
        rows = connection.execute(query, {"series": series, "period": period * 1.5}).all()
    return [
        StoredHole(previous, time, int(round(float(gap) / period)) - 1)
        for previous, time, gap in rows
    ]
