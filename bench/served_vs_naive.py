"""Where a served forecast's Diebold–Mariano result against naive comes from, read from a
service database:

    .venv/bin/python bench/served_vs_naive.py --database sqlite:///cdd.sqlite -s Bitstamp_XRPUSD_d

The served forecast is the naive's close moved by w × (LSTM − naive) (in log space; w the
LSTM's weight, `forecaster.aggregate`). Per forecast, its square loss minus the naive's (both
÷ the close at as_of, the service's DM loss) is exactly

    d = 2 m e + m²,   m = (served − naive) / close,   e = (naive − actual) / close,

a *signal* term (negative where the LSTM's move went the way the price did) and a *variance*
term (the cost of moving at all). For each series this prints:

- the served and the LSTM's DM against naive, computed as the service does (per as_of mean
  of the horizons' losses, HAC over h − 1 lags), with `score_forecasts`' served DM beside it
  as a check;
- each term's mean and its own DM statistic: which of the two the result comes from;
- the LSTM's weight in the value (median over horizons and as_ofs) by quarter, and how far
  the served value lay from the naive's (median and largest |m|);
- the share of served values equal to the naive's at the precision of the series' stored
  closes (their most decimals, at most 8), and the DM of the forecasts rounded to it: what a
  reader of the file's own figures would see.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import make_url, select
from sqlalchemy.exc import ArgumentError, DBAPIError

from db.candles import UnknownSeriesError, load_candles
from db.engine import get_engine, masked_url
from db.forecast_tables import ForecastRun, ForecastWeight
from db.forecasts import served_forecasts
from forecaster.metrics import score_forecasts
from forecaster.scores import diebold_mariano

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MAX_DECIMALS = 8


def lstm_weights(engine, series: str) -> pd.DataFrame:
    """The LSTM's weight in the served value of every run of ``series``: as_of, horizon, weight."""
    query = (
        select(ForecastRun.id, ForecastWeight.horizon, ForecastWeight.weight)
        .join(ForecastRun, ForecastRun.id == ForecastWeight.run_id)
        .where(
            ForecastRun.series == series,
            ForecastWeight.quantity == "value",
            ForecastWeight.expert == "lstm",
        )
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return pd.DataFrame(rows, columns=["run_id", "horizon", "weight"])


def decimals(closes: pd.Series) -> int:
    """The most decimals any of ``closes`` is written with (at most `MAX_DECIMALS`)."""
    written = closes.map(lambda close: f"{close:.{MAX_DECIMALS}f}".rstrip("0").split(".")[1])
    return int(written.str.len().max())


def dm(per_as_of: pd.DataFrame, horizon: int) -> str:
    """``model`` against ``naive`` losses, one row per as_of, as `forecaster.probabilistic`."""
    test = diebold_mariano(
        per_as_of["model"].to_numpy(), per_as_of["naive"].to_numpy(), horizon=horizon
    )
    return f"{test.statistic:+.2f} (p {test.p_value:.3f})"


def report(engine, series: str) -> None:
    forecasts = served_forecasts(engine, series, as_of_from=EPOCH)
    actuals = load_candles(engine, series)["close"]
    actuals.index = actuals.index.as_unit("ns")
    frame = forecasts.assign(
        actual=actuals.reindex(pd.DatetimeIndex(forecasts["target_time"]).as_unit("ns")).values
    )
    frame = frame[frame["actual"].notna()].merge(
        lstm_weights(engine, series), on=["run_id", "horizon"], how="left"
    )
    if frame.empty:
        print(f"{series}: no served forecast with an actual")
        return
    close, actual = frame["naive"], frame["actual"]
    move = (frame["value"] - close) / close
    naive_error = (close - actual) / close
    horizon = int(frame["horizon"].max())
    as_of = pd.to_datetime(frame["as_of"], utc=True)

    def losses(model: pd.Series, naive: pd.Series | None = None) -> pd.DataFrame:
        naive = close if naive is None else naive
        pair = pd.DataFrame(
            {"model": ((model - actual) / close) ** 2, "naive": ((naive - actual) / close) ** 2}
        )
        return pair.groupby(as_of.to_numpy()).mean()

    served = losses(frame["value"])
    check = score_forecasts(frame.drop(columns="actual"), actuals).loc[0]
    print(
        f"\n{series}: {len(served)} as_ofs, {len(frame)} forecasts with an actual\n"
        f"  served against naive: DM {dm(served, horizon)} (score_forecasts: "
        f"{check['dm_statistic']:+.2f}, p {check['dm_p_value']:.3f}); the LSTM alone: "
        f"DM {dm(losses(frame['lstm_value']), horizon)}"
    )
    terms = pd.DataFrame({"signal": 2 * move * naive_error, "variance": move**2})
    per = terms.groupby(as_of.to_numpy()).mean()
    difference = served["model"] - served["naive"]
    scale = float(difference.abs().max()) or 1.0
    if not np.allclose(difference, per["signal"] + per["variance"], rtol=0, atol=1e-9 * scale):
        raise SystemExit(f"{series}: the loss difference is not signal + variance; a bug here")
    zero = np.zeros(len(per))
    print(
        f"  mean loss difference {served['model'].mean() - served['naive'].mean():+.3e} = "
        f"signal {per['signal'].mean():+.3e} (alone: DM "
        f"{dm(pd.DataFrame({'model': per['signal'], 'naive': zero}), horizon)}) + variance "
        f"{per['variance'].mean():.3e} (alone: DM "
        f"{dm(pd.DataFrame({'model': per['variance'], 'naive': zero}), horizon)})"
    )
    quarters = frame.assign(move=move.abs()).groupby(as_of.dt.tz_localize(None).dt.to_period("Q"))
    table = quarters.agg(
        as_ofs=("as_of", "nunique"),
        lstm_weight=("weight", "median"),
        median_move=("move", "median"),
        largest_move=("move", "max"),
    )
    print("  by quarter: the LSTM's weight in the value, |served − naive| / close")
    print(table.to_string(float_format=lambda v: f"{v:.2e}"))
    places = decimals(actuals)
    rounded = frame["value"].round(places), close.round(places)
    same = float((rounded[0] == rounded[1]).mean())
    at_precision = losses(*rounded)
    differing = int((at_precision["model"] != at_precision["naive"]).sum())
    print(
        f"  at the closes' precision ({places} decimals): {same:.2%} of the served values equal "
        f"the naive's; DM of the rounded forecasts {dm(at_precision, horizon)}, "
        f"{differing} as_ofs differing"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", required=True, help="the service's database URL")
    parser.add_argument("-s", "--series", action="append", required=True, help="series key")
    args = parser.parse_args()
    try:
        url = make_url(args.database)
    except ArgumentError:
        raise SystemExit(f"--database {args.database!r}: not a database URL") from None
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        raise SystemExit(f"--database {args.database}: no such SQLite file; give the service's")
    try:  # get_engine: a schema behind the code's is a RuntimeError that says what to do
        engine = get_engine(args.database)
        for series in args.series:
            try:
                report(engine, series)
            except UnknownSeriesError as error:
                raise SystemExit(f"--series {series}: {error}") from None
    except (DBAPIError, RuntimeError) as error:
        reason = error.orig if isinstance(error, DBAPIError) and error.orig else error
        raise SystemExit(f"--database {masked_url(args.database)}: {reason}") from None


if __name__ == "__main__":
    main()
