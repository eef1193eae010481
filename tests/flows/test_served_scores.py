"""`cdd-forecast scores`: each series' served forecasts of a stretch against naive, and the
Diebold–Mariano p-values adjusted for the number of series, checked against a reference
computed here from the stored candles and the forecasts as written."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from cdd.series_key import SeriesKey
from db.candles import upsert_candles
from db.engine import get_engine, make_engine, migrate
from db.forecasts import write_forecast_run
from db.registry import NewVersion, register_version
from flows.cli import app
from flows.served_scores import served_scores
from forecaster.scores import diebold_mariano
from tests.flows.cdd_files import make_candles

HORIZON = 3
N = 120  # candles per series: days 0..119, all final
DAYS = 100  # the stretch scored: as_ofs from day 19 on
FIRST, LAST_COMPLETE = N - 1 - DAYS, N - 1 - HORIZON  # 19, 116: its targets all final
SERIES = {  # how far the served value moves from naive towards the actual close (< 0: away)
    "Bitstamp_BTCUSD_d": 0.5,  # better than naive
    "Bitstamp_ETHUSD_d": -0.2,  # worse
    "Bitstamp_LTCUSD_d": 0.0,  # naive's value, other intervals
}


@pytest.fixture
def engine(service_database):
    migrate(make_engine(service_database))
    return get_engine()


def store_series(engine, key: str, *, seed: int) -> pd.DataFrame:
    candles = make_candles(SeriesKey.parse(key), N, seed=seed)
    with Session(engine) as session, session.begin():
        upsert_candles(session, SeriesKey.parse(key), candles)
    return candles


def version(engine, key: str, candles: pd.DataFrame) -> int:
    new = NewVersion(key, "retrain", None, {}, candles.index[0], candles.index[9], 10, {}, b"m",
                     "CPU", 1.0)  # fmt: skip
    return register_version(engine, new).id


def run_frame(candles: pd.DataFrame, as_of: int, towards: float, *, wild: bool = False):
    """One run as of day ``as_of``: h = 1..3 days ahead (past the last candle where it runs out)."""
    close = candles["close"].to_numpy()
    h = np.arange(1, HORIZON + 1)
    actual = close[np.minimum(as_of + h, N - 1)]
    value = close[as_of] + towards * (actual - close[as_of])
    if wild:  # what must not be scored: 10 × the close
        value = value * 10
    return pd.DataFrame(
        {
            "as_of": candles.index[as_of],
            "target_time": candles.index[as_of] + pd.to_timedelta(h, unit="D"),
            "horizon": h,
            "value": value,
            "lower_80": value * 0.97,
            "upper_80": value * 1.03,
            "lower_95": value * 0.94,
            "upper_95": value * 1.06,
            "naive": close[as_of],
        }
    )


def reference(candles: pd.DataFrame, towards: float) -> tuple[float, float, float]:
    """RMSE ÷ naive's, DM and its p over as_ofs FIRST..LAST_COMPLETE, from the definitions."""
    close = candles["close"].to_numpy()
    as_of = np.arange(FIRST, LAST_COMPLETE + 1)[:, None]  # (as_ofs, 1)
    actual = close[as_of + np.arange(1, HORIZON + 1)]  # (as_ofs, horizons)
    naive_error = close[as_of] - actual
    error = naive_error * (
        1 - towards
    )  # value − actual, value = close + towards × (actual − close)
    ratio = math.sqrt((error**2).mean() / (naive_error**2).mean())
    per_as_of = [((e / close[as_of]) ** 2).mean(axis=1) for e in (error, naive_error)]
    test = diebold_mariano(*per_as_of, horizon=HORIZON)
    return ratio, test.statistic, test.p_value


@pytest.fixture
def stored(engine):
    """Three series with a run a day from day 0 to day 118: days 0–18 before the stretch and
    117–118 not final yet carry wild values, as does a first run of day 50 replaced by a
    second one (another model version) for the same as_of."""
    candles = {}
    for seed, (key, towards) in enumerate(SERIES.items()):
        candles[key] = store_series(engine, key, seed=seed)
        first, second = version(engine, key, candles[key]), version(engine, key, candles[key])
        for as_of in range(0, N - 1):
            scored = FIRST <= as_of <= LAST_COMPLETE
            if as_of == 50:
                write_forecast_run(
                    engine, key, first, run_frame(candles[key], 50, towards, wild=True)
                )
            frame = run_frame(candles[key], as_of, towards, wild=not scored)
            write_forecast_run(engine, key, second, frame)
    return candles


def test_each_series_is_scored_on_what_was_served_in_its_stretch(engine, stored):
    scored = served_scores(engine, list(SERIES), days=DAYS)
    assert [one.series for one in scored.series] == list(SERIES) and scored.unscored == []
    p_values = []
    for one in scored.series:
        ratio, statistic, p_value = reference(stored[one.series], SERIES[one.series])
        assert one.as_ofs == LAST_COMPLETE - FIRST + 1
        assert (one.first_as_of, one.last_as_of) == (
            stored[one.series].index[FIRST],
            stored[one.series].index[LAST_COMPLETE],
        )
        assert one.rmse_ratio == pytest.approx(ratio, rel=1e-9)
        assert one.dm_statistic == pytest.approx(statistic, rel=1e-9)
        assert one.dm_p_value == pytest.approx(p_value, rel=1e-9, abs=1e-300)
        p_values.append(p_value)
    assert scored.series[0].rmse_ratio == pytest.approx(0.5)  # halfway to the actual close
    assert scored.series[1].dm_statistic > 0 > scored.series[0].dm_statistic
    ranked = sorted(range(3), key=p_values.__getitem__)  # Holm by hand for three
    expected = {}
    for step, i in enumerate(ranked):
        expected[i] = min(1.0, max([(3 - step) * p_values[i], *expected.values()]))
    assert [one.dm_p_holm for one in scored.series] == pytest.approx(
        [expected[i] for i in range(3)], rel=1e-9, abs=1e-300
    )


def test_the_command_prints_the_table_and_what_holds_over_the_series(engine, stored):
    result = CliRunner().invoke(app, ["scores", "--days", str(DAYS), "-s", "Bitstamp_*USD_d"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stdout.split())
    assert "Bitstamp_ETHUSD_d" in said and "0.5000" in said  # BTC's RMSE ratio
    assert "3 series, the forecasts served in the last 100 days of each" in said
    assert "RMSE below naive's on 1, above on 1, equal to 4 decimals on 1" in said
    worse = said.split("Worse than naive by Diebold–Mariano at p < 0.05: ")[1]
    assert worse.startswith("Bitstamp_ETHUSD_d (p ")
    assert "after Holm's adjustment for the 3 series tested: Bitstamp_ETHUSD_d" in worse


def test_a_series_without_scored_forecasts_is_named_and_none_scored_exits_1(engine, stored):
    store_series(engine, "Bitstamp_XRPUSD_d", seed=9)  # candles, no forecast
    runner = CliRunner()
    result = runner.invoke(app, ["scores", "-s", "Bitstamp_XRPUSD_d", "-s", "Bitstamp_BTCUSD_d"])
    assert result.exit_code == 0, result.output
    assert "no scored forecasts of Bitstamp_XRPUSD_d in its last 365 days" in " ".join(
        result.stderr.split()
    )
    alone = runner.invoke(app, ["scores", "-s", "Bitstamp_XRPUSD_d"])
    assert alone.exit_code == 1 and "Served forecasts against naive" not in alone.stdout
    century = runner.invoke(app, ["scores", "-s", "Bitstamp_BTCUSD_d", "--days", "36600"])
    assert century.exit_code == 0 and "last 36600 days" in " ".join(century.stdout.split())
    beyond = runner.invoke(app, ["scores", "--days", "1000000"])
    assert beyond.exit_code == 2 and "--days" in beyond.stderr
    unknown = runner.invoke(app, ["scores", "-s", "Kraken_*_d"])
    assert unknown.exit_code == 1 and "no stored series matches Kraken_*_d" in unknown.stderr


def test_a_series_with_too_few_as_ofs_for_a_test_shows_none_and_is_not_counted(engine, stored):
    key = "Bitstamp_LTCBTC_d"
    candles = store_series(engine, key, seed=7)
    model = version(engine, key, candles)
    for as_of in (100, 101):  # two as_ofs: Diebold–Mariano needs three
        write_forecast_run(engine, key, model, run_frame(candles, as_of, 0.5))
    scored = served_scores(engine, [key, *SERIES], days=DAYS)
    assert math.isnan(scored.series[0].dm_p_holm) and scored.series[0].as_ofs == 2
    alone = served_scores(engine, list(SERIES), days=DAYS)
    assert [s.dm_p_holm for s in scored.series[1:]] == [s.dm_p_holm for s in alone.series]
    result = CliRunner().invoke(app, ["scores", "--days", str(DAYS), "-s", key, "-s", "*USD_d"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stdout.split())
    assert "4 series, the forecasts served" in said and "for the 3 series tested" in said
    row = next(line for line in result.stdout.splitlines() if key in line)
    assert [cell.strip() for cell in row.split("│")[-4:-1]] == ["-", "-", "-"]  # DM, p, p Holm
