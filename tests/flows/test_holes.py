"""Series with holes through the service: daily run, backfill, scoring, the series listing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from db.engine import downgrade, make_engine, migrate
from db.forecasts import run_forecasts, runs, write_forecast_run
from db.holes import series_holes
from flows.backfill import backfill_flow
from flows.cli import app
from flows.daily import daily_flow
from tests.flows.cdd_files import write_cdd_file
from tests.flows.forecast_service import ALL_CANDLES, KEY, SERIES, TINY, store

DAY = pd.Timedelta(days=1)
# holes at the start, the middle and the end of the training range, and right before as_of
# 100 (row 96; window 7 fills at most 1): rows of ALL_CANDLES that the exchange skipped
HOLES = (2, 3, 50, 51, 90, 91, 96)


def candles(until: int, also_missing: tuple[int, ...] = ()) -> pd.DataFrame:
    """Rows 0..until of the synthetic series without the holes."""
    rows = [i for i in range(until + 1) if i not in HOLES + also_missing]
    return ALL_CANDLES.iloc[rows]


def at(row: int) -> pd.Timestamp:
    return ALL_CANDLES.index[row]


@pytest.fixture
def service(service_database, monkeypatch, prefect_harness, tmp_path):
    """A fresh migrated service database (SQLite and PostgreSQL), tiny model, no candles."""
    monkeypatch.setenv("CDDF_FORECASTER", TINY)
    monkeypatch.setenv("CDDF_CHART_DIR", str(tmp_path / "charts"))
    fresh = make_engine(service_database)
    migrate(fresh)
    yield fresh
    fresh.dispose()


def vs_actual(engine, run_id: int) -> list[tuple]:
    with engine.connect() as connection:
        return connection.execute(
            sa.text(
                "SELECT horizon, target_time, actual, error, inside_95, scorable "
                "FROM forecast_vs_actual WHERE run_id = :run ORDER BY horizon"
            ),
            {"run": run_id},
        ).all()


def test_daily_run_trains_forecasts_and_scores_across_holes(service, tmp_path):
    source = write_cdd_file(tmp_path, KEY, candles(100))
    [first] = daily_flow([SERIES], source=str(source))
    assert first.failed_step is None, first.error
    assert first.trained.action == "retrain"
    forecast = first.forecast.forecasts
    assert first.forecast.as_of == at(100)
    assert list(forecast["target_time"]) == [at(100) + h * DAY for h in (1, 2, 3)]
    assert (forecast["filled"] == 1).all()  # row 96 is carried over in the window 94..100

    # the next days arrive, but the exchange skipped row 102: run 1's horizon 2 never arrives
    write_cdd_file(tmp_path, KEY, candles(104, also_missing=(102,)))
    [second] = daily_flow([SERIES], source=str(source))
    assert second.failed_step is None, second.error
    assert second.trained.version.train_last == at(104)  # retrained or fine-tuned across 102
    assert second.forecast.as_of == at(104)
    assert second.evaluate.runs_scored == 1
    rows = vs_actual(service, first.forecast.run_id)
    assert [(h, scorable) for h, _, _, _, _, scorable in rows] == [(1, 1), (2, 0), (3, 1)]
    hole = rows[1]
    assert hole[2] is None and hole[3] is None and hole[4] is None  # no actual, no error
    closes = ALL_CANDLES["close"]
    assert rows[0][2] == pytest.approx(closes.iloc[101])
    assert rows[2][2] == pytest.approx(closes.iloc[103])  # not the neighbour's close
    with service.connect() as connection:
        n = connection.execute(
            sa.text("SELECT n FROM forecast_metrics WHERE run_id = :run AND horizon = 0"),
            {"run": first.forecast.run_id},
        ).scalar_one()
    assert n == 2  # the hole's forecast is not scored


def test_backfill_skips_the_holes_and_the_windows_it_cannot_fill(service):
    store(service, candles(100))
    summary = backfill_flow(SERIES, at(85).date(), at(100).date(), retrain_every=5)
    done = [pd.Timestamp(run.as_of) for run in runs(service, SERIES)]
    # 90, 91, 96: no candle; 92..95 and 97: the window misses 2 candles (at most 1 filled)
    forecastable = [at(i) for i in (85, 86, 87, 88, 89, 98, 99, 100)]
    assert done == forecastable
    assert summary.as_ofs == len(forecastable) and len(summary.steps) == len(forecastable)
    lines = "\n".join(summary.lines())
    hole = "2020-03-31 00:00 .. 2020-04-01 00:00 (2 candles missing)"
    assert f"skipped {hole}: inside a hole" in lines
    assert "skipped 2020-04-02 00:00: the 7 periods up to 2020-04-02 00:00 miss 2 candles" in lines
    assert sum(line.startswith("skipped") for line in summary.lines()) == 2 + 5
    # as_of 89's targets 90 and 91 fall in the hole: reported unscorable, not dropped
    run_89 = next(run for run in runs(service, SERIES) if pd.Timestamp(run.as_of) == at(89))
    assert [row[-1] for row in vs_actual(service, run_89.id)] == [0, 0, 1]
    stored = run_forecasts(service, [run_89.id])
    assert list(stored["target_time"]) == [at(89) + h * DAY for h in (1, 2, 3)]


def test_backfill_of_a_range_with_no_forecastable_as_of_says_why(service):
    store(service, candles(100))
    with pytest.raises(ValueError, match="no final candle between .* can be forecast.*hole"):
        backfill_flow(SERIES, at(90).date(), at(91).date())


def test_series_lists_the_holes(service):
    store(service, candles(100))
    holes = series_holes(service, SERIES)
    assert [(h.after, h.before, h.missing) for h in holes] == [
        (at(1), at(4), 2),
        (at(49), at(52), 2),
        (at(89), at(92), 2),
        (at(95), at(97), 1),
    ]
    result = CliRunner().invoke(app, ["series"])
    assert result.exit_code == 0, result.output
    assert f"{SERIES}: 4 holes" in result.output
    assert "2020-03-31 00:00 .. 2020-04-01 00:00 (2 missing)" in result.output
    assert "2020-04-06 00:00 (1 missing)" in result.output


def test_forecast_vs_actual_reports_a_target_in_a_hole_and_downgrades_to_0002(service):
    store(service, candles(100))
    from db.registry import NewVersion, register_version

    version = register_version(
        service,
        NewVersion(
            series=SERIES,
            kind="retrain",
            parent_id=None,
            config={},
            train_first=at(0),
            train_last=at(88),
            n_windows=1,
            validation_metrics={},
            artifact=b"x",
            device="CPU",
            train_seconds=0.0,
            flow_run_id=None,
        ),
    )
    forecasts = pd.DataFrame(
        {
            "as_of": at(88),
            "target_time": [at(89), at(90), at(101)],
            "horizon": [1, 2, 3],
            "value": 1.0,
            "lower_80": 0.5,
            "upper_80": 2.0,
            "lower_95": 0.1,
            "upper_95": 9.0,
            "naive": 1.0,
        }
    )
    run = write_forecast_run(service, SERIES, version.id, forecasts).run
    # 89 scored, 90 in a hole (unscorable), 101 after the last candle (waiting: not shown)
    assert [(row[0], row[-1]) for row in vs_actual(service, run.id)] == [(1, 1), (2, 0)]
    downgrade(service, "0003")
    with service.connect() as connection:
        shown = connection.execute(sa.text("SELECT horizon FROM forecast_vs_actual")).all()
    assert [row[0] for row in shown] == [1]  # the 0002 view: the hole's forecast vanished
    migrate(service)
    assert len(vs_actual(service, run.id)) == 2


def test_a_hole_early_in_the_history_moves_the_first_possible_as_of(service):
    store(service, candles(100))
    # rows 0..1 hold no window; 13 candles without a hole from row 4 end at row 16
    with pytest.raises(ValueError, match="first possible as_of is 2020-01-17 00:00"):
        backfill_flow(SERIES, dt.date(2020, 1, 10), at(20).date())
    assert runs(service, SERIES) == []


REAL_HOURLY = Path(__file__).resolve().parents[3] / "shared/data/multi/Binance_ADAUSDT_1h.csv"
REAL_CONFIG = (
    '{"units": 4, "max_epochs": 2, "patience": 1, "window": 8, "horizon": 3, '
    '"batch_size": 256, "finetune_windows": 16}'
)  # max_filled 2: the 3-hour hole of 2021-04-25 05:00..07:00 is too long to fill


@pytest.mark.skipif(not REAL_HOURLY.exists(), reason=f"real data {REAL_HOURLY} is absent")
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_real_hourly_series_runs_and_backfills_across_its_hole(service, monkeypatch):
    monkeypatch.setenv("CDDF_FORECASTER", REAL_CONFIG)
    series = "Binance_ADAUSDT_1h"
    ran = CliRunner().invoke(app, ["run", "--series", series, "--source", str(REAL_HOURLY)])
    assert ran.exit_code == 0, ran.output
    [daily] = runs(service, series)
    assert pd.Timestamp(daily.as_of) == pd.Timestamp("2021-06-10 00:00", tz="UTC")
    assert len(series_holes(service, series)) == 7

    backfill = CliRunner().invoke(
        app,
        [
            "backfill",
            "--series",
            series,
            "--start",
            "2021-04-25",
            "--end",
            "2021-04-25",
            "--retrain-every",
            "24",
        ],
    )
    assert backfill.exit_code == 0, backfill.output
    as_ofs = [pd.Timestamp(run.as_of) for run in runs(service, series) if run.kind == "backfill"]
    hours = [t.hour for t in as_ofs]
    # 05..07 are missing; 08..12 would fill 3 of their 8 hours: skipped with the reason
    assert hours == [0, 1, 2, 3, 4, *range(13, 24)]
    assert "skipped 2021-04-25 05:00 .. 2021-04-25 07:00 (3 candles missing): inside a hole" in (
        backfill.output
    )
    assert "skipped 2021-04-25 08:00: the 8 periods up to 2021-04-25 08:00 miss 3" in (
        backfill.output
    )
    run_04 = next(run for run in runs(service, series) if pd.Timestamp(run.as_of).hour == 4)
    stored = run_forecasts(service, [run_04.id])
    assert [t.hour for t in stored["target_time"]] == [5, 6, 7]  # calendar hours, all unscorable
    assert [row[-1] for row in vs_actual(service, run_04.id)] == [0, 0, 0]
