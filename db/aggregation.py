"""What the served forecast is replayed from: the series' scored record and recent closes.

    record = scored_record(engine, "Bitstamp_BTCUSD_d", as_of, period=pd.Timedelta(days=1))
    weights = forecast_weights(engine, run_id)

Point in time: the record holds only forecasts whose target time is at or before ``as_of``
and has a final candle, each beside that candle's close; of several runs of one as_of (a
rerun with another model version) the newest run counts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

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
    return _scored(engine, series, since, as_of).drop(columns="run_id")


def _scored(
    engine: Engine, series: str, since: pd.Timestamp, as_of: dt.datetime | None
) -> pd.DataFrame:
    """The newest run's forecasts of each as_of whose target is in (``since``, ``as_of``]
    (None: no end) and has a final candle, beside its close, with their ``run_id``."""
    columns = ", ".join(f"f.{name}" for name in RECORD_VALUES)
    until = "AND f.target_time <= :as_of" if as_of is not None else ""
    query = (
        text(
            f"""
        SELECT f.run_id, f.as_of, f.target_time, f.horizon, {columns}, c.close AS actual
        FROM forecasts AS f
        JOIN series AS s ON s.key = f.series
        JOIN candles AS c ON c.series_id = s.id AND c.time = f.target_time AND c.is_final
        WHERE f.series = :series AND f.target_time > :since {until}
          AND f.run_id = (SELECT MAX(r.id) FROM forecast_runs AS r
                          WHERE r.series = f.series AND r.as_of = f.as_of)
        ORDER BY f.target_time, f.as_of, f.horizon
        """
        )
        .bindparams(bindparam("since", type_=UtcDateTime()))
        .columns(as_of=UtcDateTime(), target_time=UtcDateTime())
    )
    parameters = {"series": series, "since": since.to_pydatetime()}
    if as_of is not None:
        query = query.bindparams(bindparam("as_of", type_=UtcDateTime()))
        parameters["as_of"] = as_of
    with engine.connect() as connection:
        result = connection.execute(query, parameters)
        frame = pd.DataFrame(result.all(), columns=list(result.keys()))
    for name in ("as_of", "target_time"):
        frame[name] = pd.to_datetime(frame[name], utc=True).astype("datetime64[us, UTC]")
    types = {"run_id": "int64", "horizon": "int64"} | dict.fromkeys(
        (*RECORD_VALUES, "actual"), "float64"
    )
    return frame.astype(types)


def recent_closes(
    engine: Engine, series: str, as_of: dt.datetime | None, *, since: dt.datetime
) -> pd.Series:
    """The final closes of ``series`` in (``since``, ``as_of``] (None: no end), by time."""
    query = (
        select(Candle.time, Candle.close)
        .join(Series, Series.id == Candle.series_id)
        .where(Series.key == series, Candle.is_final, Candle.time > since)
        .order_by(Candle.time)
    )
    if as_of is not None:
        query = query.where(Candle.time <= as_of)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    times = [time for time, _ in rows]
    index = pd.DatetimeIndex(times, dtype="datetime64[us, UTC]", name="time")  # also when empty
    return pd.Series([float(close) for _, close in rows], index=index, name="close", dtype=float)


class WalkRecord:
    """`scored_record` and `recent_closes` of one series for a walk forward from ``first``:
    read from the tables once, then kept current with each run written (``add``).

        record = WalkRecord(engine, series, first, period=period, rounds=1000)
        record.at(as_of)          # what scored_record(engine, series, as_of, ...) reads now
        record.add(run_id, as_of, rows)   # a run just written (write_forecast_run's rows)

    A backfill writes a run at every as_of and serves the next from the record: read back from
    the tables at each (7,000 rows at 1,000 rounds of 7 horizons), it was a quarter of BTC's
    backfill time (0.23 s of 0.89 s per as_of; docs/benchmarks.md). Row for row it is what the
    tables hold: the newest run of each as_of counts (a run replaced in place keeps its older
    id, as there), and a forecast joins it when its target has a final candle. Nothing written
    by another process after it was read is in it: a backfill reads it afresh at each segment.
    """

    def __init__(
        self,
        engine: Engine,
        series: str,
        first: dt.datetime,
        *,
        period: pd.Timedelta,
        rounds: int = 1000,
    ) -> None:
        self.engine, self.series, self.period, self.rounds = engine, series, period, rounds
        self.since = pd.Timestamp(first) - period * (rounds + 1)
        self._closes = recent_closes(engine, series, None, since=self.since.to_pydatetime())
        self._rows = _scored(engine, series, self.since, None)
        self._newest = self._rows.groupby("as_of")["run_id"].max().to_dict()

    def at(self, as_of: dt.datetime) -> pd.DataFrame:
        """The scored record at ``as_of``, as `scored_record` reads it."""
        since = pd.Timestamp(as_of) - self.period * (self.rounds + 1)
        if since < self.since:
            raise ValueError(
                f"the record of {self.series} was read from {self.since}; {as_of} needs it "
                f"from {since}"
            )
        rows = self._rows
        window = (rows["target_time"] > since) & (rows["target_time"] <= pd.Timestamp(as_of))
        return rows[window].drop(columns="run_id").reset_index(drop=True)

    def closes(self, as_of: dt.datetime, *, since: dt.datetime) -> pd.Series:
        """`recent_closes` in (``since``, ``as_of``]: from memory when it was read."""
        if pd.Timestamp(since) < self.since:
            return recent_closes(self.engine, self.series, as_of, since=since)
        index = self._closes.index
        return self._closes[(index > pd.Timestamp(since)) & (index <= pd.Timestamp(as_of))]

    def add(self, run_id: int, as_of: dt.datetime, rows: Sequence[dict]) -> None:
        """A run just written: its ``rows`` (`write_forecast_run`'s) replace the as_of's,
        unless a newer run of that as_of is there."""
        as_of = pd.Timestamp(as_of).tz_convert("UTC")
        if self._newest.get(as_of, run_id) > run_id:
            return
        self._newest[as_of] = run_id
        new = pd.DataFrame(
            [
                {name: row[name] for name in ("target_time", "horizon", *RECORD_VALUES)}
                for row in rows
            ]
        )
        new["target_time"] = pd.to_datetime(new["target_time"], utc=True)
        new["actual"] = self._closes.reindex(pd.DatetimeIndex(new["target_time"])).to_numpy()
        new = new[new["actual"].notna()].assign(run_id=run_id, as_of=as_of)
        kept = self._rows[self._rows["as_of"] != as_of]
        rows = pd.concat([kept, new[kept.columns].astype(kept.dtypes.to_dict())])
        rows = rows.sort_values(["target_time", "as_of", "horizon"], kind="stable")
        self._rows = rows.reset_index(drop=True)


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
