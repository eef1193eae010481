"""What the served forecast is replayed from: the series' scored record and recent closes.

    record = scored_record(engine, "Bitstamp_BTCUSD_d", as_of, period=pd.Timedelta(days=1))
    weights = forecast_weights(engine, run_id)

Point in time: the record holds only forecasts whose target time is at or before ``as_of``
and has a final candle, each beside that candle's close; of several runs of one as_of (a
rerun with another model version) the newest run counts.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
from sqlalchemy import Engine, bindparam, select, text

from db.forecast_tables import ForecastWeight
from db.models import Candle, Series, UtcDateTime

# The served forecast's columns the replay reads (forecaster.aggregate.RECORD_COLUMNS).
RECORD_VALUES = (
    "value",
    "lstm_value",
    "naive",
    *(
        f"{prefix}{bound}_{level}"
        for prefix in ("", "lstm_", "naive_")
        for level in ("80", "95")
        for bound in ("lower", "upper")
    ),
    "scale_80",
    "scale_95",
)


def scored_record(
    engine: Engine, series: str, as_of: dt.datetime, *, period: pd.Timedelta, rounds: int = 1000
) -> pd.DataFrame:
    """Forecasts of ``series`` whose target is in the ``rounds`` periods up to ``as_of``,
    beside the close at the target (``actual``), by target time."""
    since = pd.Timestamp(as_of) - period * (rounds + 1)
    columns = ", ".join(f"f.{name}" for name in RECORD_VALUES)
    query = (
        text(
            f"""
        SELECT f.as_of, f.target_time, f.horizon, {columns}, c.close AS actual
        FROM forecasts AS f
        JOIN series AS s ON s.key = f.series
        JOIN candles AS c ON c.series_id = s.id AND c.time = f.target_time AND c.is_final
        WHERE f.series = :series AND f.target_time <= :as_of AND f.target_time > :since
          AND f.run_id = (SELECT MAX(r.id) FROM forecast_runs AS r
                          WHERE r.series = f.series AND r.as_of = f.as_of)
        ORDER BY f.target_time, f.as_of, f.horizon
        """
        )
        .bindparams(
            bindparam("as_of", type_=UtcDateTime()), bindparam("since", type_=UtcDateTime())
        )
        .columns(as_of=UtcDateTime(), target_time=UtcDateTime())
    )
    parameters = {"series": series, "as_of": as_of, "since": since.to_pydatetime()}
    with engine.connect() as connection:
        result = connection.execute(query, parameters)
        frame = pd.DataFrame(result.all(), columns=list(result.keys()))
    for name in ("as_of", "target_time"):
        frame[name] = pd.to_datetime(frame[name], utc=True)
    return frame.astype({name: "float64" for name in (*RECORD_VALUES, "actual")})


def recent_closes(
    engine: Engine, series: str, as_of: dt.datetime, *, since: dt.datetime
) -> pd.Series:
    """The final closes of ``series`` in (``since``, ``as_of``], indexed by time."""
    query = (
        select(Candle.time, Candle.close)
        .join(Series, Series.id == Candle.series_id)
        .where(Series.key == series, Candle.is_final, Candle.time > since, Candle.time <= as_of)
        .order_by(Candle.time)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    index = pd.DatetimeIndex([time for time, _ in rows], name="time").tz_convert("UTC")
    return pd.Series([float(close) for _, close in rows], index=index, name="close")


def forecast_weights(engine: Engine, run_id: int) -> pd.DataFrame:
    """The stored weights of one run: horizon, quantity, expert, weight, rounds, from_prior."""
    query = (
        select(
            ForecastWeight.horizon,
            ForecastWeight.quantity,
            ForecastWeight.expert,
            ForecastWeight.weight,
            ForecastWeight.rounds,
            ForecastWeight.from_prior,
        )
        .where(ForecastWeight.run_id == run_id)
        .order_by(ForecastWeight.horizon, ForecastWeight.quantity, ForecastWeight.expert)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return pd.DataFrame(
        rows, columns=["horizon", "quantity", "expert", "weight", "rounds", "from_prior"]
    )
