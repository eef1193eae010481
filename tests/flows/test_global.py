"""One global model per timeframe group: settings, the daily flow, the registry, bad groups."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from cdd.series_key import SeriesKey
from db.engine import get_engine, make_engine, migrate
from db.forecast_tables import METRIC_COLUMNS, ForecastRun, ModelVersion, ModelVersionSeries
from db.forecasts import write_version_metrics
from db.registry import ModelScope, group_members, latest_version
from flows.daily import daily_flow
from flows.summary import summary_markdown
from flows.train import train_flow
from forecaster import ForecasterConfig
from settings import SettingsError, get_settings
from settings.series import TIMEFRAME_DEFAULTS
from tests.db.factory import version_metrics
from tests.flows.cdd_files import make_candles, make_cdd_csv
from tests.flows.forecast_service import TINY, count_rebuilt_models

GLOBAL_D = '{"d": {"model_scope": "timeframe"}}'
LENGTHS = {
    "Bitstamp_BTCUSD_d": 100,
    "Bitstamp_ETHUSD_d": 90,
    "Kraken_NEWUSD_d": 8,  # a window (7) but no training window (7 + 3): forecast, not trained
    "Kraken_TINYUSD_d": 3,  # not even a window: skipped in the summary
}


def write_files(folder: Path, lengths: dict[str, int], extra: int = 0) -> str:
    """CDD files in ``folder`` (the source): each series' newest ``n + extra`` candles, all
    ending on the same day (``extra`` days after 2020-05-20)."""
    for seed, (series, n) in enumerate(lengths.items()):
        key = SeriesKey.parse(series)
        candles = make_candles(key, 150, start="2020-01-01", seed=seed).iloc[: 140 + extra]
        (folder / f"{series}.csv").write_bytes(make_cdd_csv(key, candles.iloc[-(n + extra) :]))
    return f"{folder}/"


@pytest.fixture
def group_service(service_database, monkeypatch, prefect_harness, tmp_path):
    monkeypatch.setenv("CDDF_FORECASTER", TINY)
    monkeypatch.setenv("CDDF_TIMEFRAME_SETTINGS", GLOBAL_D)
    monkeypatch.setenv("CDDF_SERIES", ",".join(LENGTHS))
    monkeypatch.setenv("CDDF_CHART_DIR", str(tmp_path / "charts"))
    fresh = make_engine(get_settings().database_url.get_secret_value())
    migrate(fresh)
    fresh.dispose()
    return get_engine()


def global_versions(engine) -> list[ModelVersion]:
    with Session(engine) as session:
        query = select(ModelVersion).where(ModelVersion.model_group.is_not(None))
        return list(session.execute(query.order_by(ModelVersion.id)).scalars())


def run_versions(engine) -> dict[str, int]:
    with Session(engine) as session:
        rows = session.execute(select(ForecastRun.series, ForecastRun.model_version_id))
        return {series: version for series, version in rows}


def test_the_daily_run_trains_one_global_model_and_forecasts_every_series(
    group_service, tmp_path, monkeypatch
):
    engine = group_service
    source = write_files(tmp_path, LENGTHS)
    rebuilt = count_rebuilt_models(monkeypatch)
    outcomes = daily_flow(source=source)

    (version,) = global_versions(engine)
    assert rebuilt == []  # the model just trained serves its three series: never reloaded
    assert (version.model_group, version.kind) == ("d", "retrain")
    assert "group_train_candles" not in version.config  # daily: every series' whole history
    assert version.config["steps_per_epoch"] == 50  # the group's epochs, stored
    assert version.config["patience"] == 3  # the group's, not a series' 10
    assert version.series == "Bitstamp_BTCUSD_d"  # the group's first series trained on
    assert group_members(engine, version.id) == {
        "Bitstamp_BTCUSD_d": True,
        "Bitstamp_ETHUSD_d": True,
        "Kraken_NEWUSD_d": False,  # too little history: kept out of training
        "Kraken_TINYUSD_d": False,
    }
    assert "Kraken_NEWUSD_d" in version.validation_metrics["skipped_series"]
    own = ModelScope.of_series("Bitstamp_BTCUSD_d")
    assert latest_version(engine, own) is None  # no model of its own
    # every series that has a window is forecast by the global model, the new one too
    assert run_versions(engine) == {
        "Bitstamp_BTCUSD_d": version.id,
        "Bitstamp_ETHUSD_d": version.id,
        "Kraken_NEWUSD_d": version.id,
    }
    by_series = {outcome.series: outcome for outcome in outcomes}
    tiny = by_series["Kraken_TINYUSD_d"]
    assert tiny.failed_step is None and "too short" in tiny.skipped
    assert "| Kraken_TINYUSD_d | skipped: candles are too short" in summary_markdown(outcomes)

    # the next day: one fine-tune for the group, and a series joining it is forecast at once
    joined = {**LENGTHS, "Coinbase_SOLUSD_d": 60}
    source = write_files(tmp_path, joined, extra=1)
    daily_flow(list(joined), source=source)
    first, finetune = global_versions(engine)
    assert (finetune.kind, finetune.parent_id, finetune.retrain_id) == (
        "finetune",
        first.id,
        first.id,
    )
    assert group_members(engine, finetune.id)["Coinbase_SOLUSD_d"] is True
    assert latest_version(engine, ModelScope.of_group("d", [])).id == finetune.id
    assert run_versions(engine)["Coinbase_SOLUSD_d"] == finetune.id


def test_a_global_version_keeps_scores_per_series(group_service, tmp_path):
    engine = group_service
    train_source = write_files(tmp_path, dict(list(LENGTHS.items())[:2]))
    daily_flow(list(LENGTHS)[:2], source=train_source)
    (version,) = global_versions(engine)
    times = pd.to_datetime(["2020-03-01", "2020-03-02"], utc=True)
    for series, skill in (("Bitstamp_BTCUSD_d", 0.1), ("Bitstamp_ETHUSD_d", -0.2)):
        values = dict.fromkeys(METRIC_COLUMNS, 1.0) | {"skill": skill}
        metrics = pd.DataFrame(
            {
                "n": [4],
                **{name: [value] for name, value in values.items()},
                "first_target": times[:1],
                "last_target": times[1:],
            },
            index=pd.Index([0], name="horizon"),
        )
        write_version_metrics(engine, series, version.id, metrics, n_runs=2)
    stored = version_metrics(engine, version.id)
    assert sorted(stored["skill"].round(3)) == [-0.2, 0.1]  # neither overwrote the other


def test_a_group_of_different_timeframes_is_refused_naming_the_stray(group_service):
    with pytest.raises(ValueError, match="Binance_BTCUSDT_1h") as caught:
        train_flow("d", group=["Bitstamp_BTCUSD_d", "Binance_BTCUSDT_1h"])
    assert "a group is one timeframe" in str(caught.value)
    assert global_versions(group_service) == []


def test_a_group_of_one_series_works(group_service, tmp_path, monkeypatch):
    monkeypatch.setenv("CDDF_SERIES", "Bitstamp_BTCUSD_d")
    source = write_files(tmp_path, {"Bitstamp_BTCUSD_d": 100})
    (outcome,) = daily_flow(source=source)
    (version,) = global_versions(group_service)
    assert outcome.forecast.model_version_id == version.id
    assert group_members(group_service, version.id) == {"Bitstamp_BTCUSD_d": True}
    with Session(group_service) as session:
        assert session.execute(select(ModelVersionSeries)).scalars().one().trained


def test_model_scope_is_a_timeframe_setting_checked_at_start(monkeypatch):
    monkeypatch.setenv("CDDF_SERIES", "Bitstamp_BTCUSD_d")
    monkeypatch.setenv("CDDF_TIMEFRAME_SETTINGS", GLOBAL_D)
    assert get_settings().series_config("Bitstamp_BTCUSD_d").group == "d"
    assert get_settings().series_config("Binance_BTCUSDT_1h").group is None

    def validation_fraction() -> float:
        return get_settings().series_config("Bitstamp_BTCUSD_d").forecaster.validation_fraction

    # the global model validates on its own share of each series' windows when it is set
    assert validation_fraction() == 0.2  # daily: unset, the timeframe's
    monkeypatch.setenv("CDDF_TIMEFRAME_SETTINGS", '{"d": {"group_validation_fraction": 0.5}}')
    assert validation_fraction() == 0.2
    monkeypatch.setenv(
        "CDDF_TIMEFRAME_SETTINGS",
        '{"d": {"model_scope": "timeframe", "group_validation_fraction": 0.5}}',
    )
    assert validation_fraction() == 0.5
    monkeypatch.setenv("CDDF_TIMEFRAME_SETTINGS", '{"d": {"group_validation_fraction": 1.5}}')
    with pytest.raises(SettingsError, match="group_validation_fraction"):
        get_settings()

    def patience() -> int:
        return get_settings().series_config("Bitstamp_BTCUSD_d").forecaster.patience

    # and waits fewer of its longer epochs for a better validation loss
    monkeypatch.setenv("CDDF_TIMEFRAME_SETTINGS", GLOBAL_D)
    assert patience() == TIMEFRAME_DEFAULTS["d"]["group_patience"] < ForecasterConfig().patience
    monkeypatch.setenv("CDDF_TIMEFRAME_SETTINGS", '{"d": {"group_patience": 2}}')
    assert patience() == ForecasterConfig().patience
    monkeypatch.setenv(
        "CDDF_TIMEFRAME_SETTINGS", '{"d": {"model_scope": "timeframe", "group_patience": 2}}'
    )
    assert patience() == 2
    monkeypatch.setenv("CDDF_TIMEFRAME_SETTINGS", '{"d": {"group_patience": -1}}')
    with pytest.raises(SettingsError, match="group_patience"):
        get_settings()
    monkeypatch.setenv("CDDF_SERIES_SETTINGS", '{"Bitstamp_BTCUSD_d": {"group_patience": 3}}')
    monkeypatch.setenv("CDDF_TIMEFRAME_SETTINGS", GLOBAL_D)
    with pytest.raises(SettingsError, match="group_patience cannot be set per series"):
        get_settings()
    monkeypatch.setenv(
        "CDDF_SERIES_SETTINGS", '{"Bitstamp_BTCUSD_d": {"group_validation_fraction": 0.3}}'
    )
    monkeypatch.setenv("CDDF_TIMEFRAME_SETTINGS", GLOBAL_D)
    with pytest.raises(SettingsError, match="group_validation_fraction cannot be set per series"):
        get_settings()
    monkeypatch.setenv("CDDF_TIMEFRAME_SETTINGS", GLOBAL_D)
    monkeypatch.setenv("CDDF_SERIES_SETTINGS", '{"Bitstamp_BTCUSD_d": {"window": 14}}')
    with pytest.raises(SettingsError, match="CDDF_SERIES_SETTINGS.*CDDF_TIMEFRAME_SETTINGS"):
        get_settings()
    monkeypatch.setenv("CDDF_SERIES_SETTINGS", '{"Bitstamp_BTCUSD_d": {"group_train_candles": 9}}')
    monkeypatch.setenv("CDDF_TIMEFRAME_SETTINGS", '{"d": {"model_scope": "series"}}')
    with pytest.raises(SettingsError, match="group_train_candles cannot be set per series"):
        get_settings()
    monkeypatch.delenv("CDDF_SERIES_SETTINGS")
    monkeypatch.setenv("CDDF_TIMEFRAME_SETTINGS", '{"d": {"group_train_candles": 9}}')
    with pytest.raises(SettingsError, match="group_train_candles=9 leaves the global model no"):
        get_settings()
    monkeypatch.setenv("CDDF_TIMEFRAME_SETTINGS", '{"d": {"model_scope": "everything"}}')
    with pytest.raises(SettingsError, match="CDDF_TIMEFRAME_SETTINGS"):
        get_settings()


def test_a_series_whose_candles_stopped_fails_naming_why_the_others_go_on(
    group_service, tmp_path, monkeypatch
):
    lengths = {"Bitstamp_BTCUSD_d": 100, "Bitstamp_ETHUSD_d": 90}
    monkeypatch.setenv("CDDF_SERIES", ",".join(lengths))
    source = write_files(tmp_path, lengths)
    stale = tmp_path / "Bitstamp_ETHUSD_d.csv"  # its source stopped 5 days before the others'
    key = SeriesKey.parse("Bitstamp_ETHUSD_d")
    candles = make_candles(key, 150, start="2020-01-01", seed=1).iloc[:140]
    stale.write_bytes(make_cdd_csv(key, candles.iloc[-90:-5]))

    state = daily_flow(source=source, return_state=True)
    outcomes = {o.series: o for o in state.result(raise_on_failure=False).outcomes}
    assert outcomes["Bitstamp_BTCUSD_d"].failed_step is None
    failed = outcomes["Bitstamp_ETHUSD_d"]
    assert failed.failed_step == "forecast"
    message = str(failed.error)
    assert "Bitstamp_ETHUSD_d: its final candles end at" in message
    assert "ingest Bitstamp_ETHUSD_d's newer candles" in message
    assert "take it out of CDDF_SERIES" in message


def test_a_member_never_ingested_is_left_out_and_the_others_train(
    group_service, tmp_path, monkeypatch
):
    """A member whose ingest failed before it was ever stored (a 404, no file) once failed
    the training, and so every member, with UnknownSeriesError."""
    lengths = {"Bitstamp_BTCUSD_d": 100, "Bitstamp_ETHUSD_d": 90}
    monkeypatch.setenv("CDDF_SERIES", ",".join([*lengths, "Kraken_GONEUSD_d"]))
    source = write_files(tmp_path, lengths)  # no Kraken_GONEUSD_d.csv there

    state = daily_flow(source=source, return_state=True)
    outcomes = {o.series: o for o in state.result(raise_on_failure=False).outcomes}
    assert outcomes["Kraken_GONEUSD_d"].failed_step == "ingest"
    assert "Kraken_GONEUSD_d.csv" in str(outcomes["Kraken_GONEUSD_d"].error)
    (version,) = global_versions(group_service)
    assert group_members(group_service, version.id) == {key: True for key in lengths}
    for key in lengths:
        assert outcomes[key].failed_step is None, outcomes[key].error
        assert outcomes[key].forecast.model_version_id == version.id
