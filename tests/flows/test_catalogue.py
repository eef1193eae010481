"""Series chosen by pattern: the catalogue listing (served on 127.0.0.1 by pytest-httpserver),
its cache, a --source directory, and what `cdd-forecast run --dry-run` / `ingest` say."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prefect import flow
from pytest_httpserver import HTTPServer
from typer.testing import CliRunner

from cdd.catalogue import Catalogue, CatalogueError, parse_listing
from cdd.series_key import SeriesKey
from flows.cli import app
from flows.ingest import catalogue_of, configured_keys, plan, plan_series
from settings import get_settings
from tests.flows.cdd_files import make_candles, write_cdd_file

runner = CliRunner()
LISTED = {
    "binance": ["Binance_BTCUSDT_d", "Binance_ETHUSDT_d", "Binance_ETHBTC_d", "Binance_BTCUSDT_1h"],
    "bitstamp": ["Bitstamp_BTCUSD_d", "Bitstamp_BTCUSD_1h", "Bitstamp_ETHUSD_1h"],
}
PATH = "/v1/data/ohlc/{exchange}/available"


def listing_of(exchange: str) -> dict:
    """A listing shaped as CryptoDataDownload's: a "data" list of objects with a file URL,
    plus entries that are not candle files of a series key (skipped)."""
    files = [
        {
            "symbol": key.split("_")[1],
            "timeframe": key.rsplit("_", 1)[1],
            "file": f"https://www.cryptodatadownload.com/cdd/{key}.csv",
        }
        for key in LISTED[exchange]
    ]
    files.append({"symbol": "BTCUSDT", "file": "https://www.cryptodatadownload.com/cdd/x.pdf"})
    return {"data": files}


def serve_listing(httpserver: HTTPServer, exchange: str, **respond) -> None:
    request = httpserver.expect_request(
        PATH.format(exchange=exchange), query_string="format=json", method="GET"
    )
    if respond:
        request.respond_with_data(**respond)
    else:
        request.respond_with_json(listing_of(exchange))


@pytest.fixture
def catalogue_env(httpserver: HTTPServer, tmp_path: Path, monkeypatch) -> Path:
    """CDDF_CATALOGUE on the local server, the cache in tmp_path; returns the cache folder."""
    cache = tmp_path / "catalogue-cache"
    monkeypatch.setenv("CDDF_CATALOGUE", httpserver.url_for(PATH) + "?format=json")
    monkeypatch.setenv("CDDF_CATALOGUE_CACHE", str(cache))
    monkeypatch.setenv("CDDF_HTTP_RETRIES", "0")
    return cache


def age_cache(cache: Path, days: float) -> None:
    """Make every cached listing ``days`` old."""
    for path in cache.glob("*.json"):
        document = json.loads(path.read_text())
        fetched = datetime.now(UTC) - timedelta(days=days)
        document["fetched_at"] = fetched.isoformat()
        path.write_text(json.dumps(document))


def test_patterns_resolve_against_the_listing_of_their_exchange(
    httpserver: HTTPServer, catalogue_env: Path, monkeypatch
) -> None:
    serve_listing(httpserver, "binance")
    serve_listing(httpserver, "bitstamp")
    monkeypatch.setenv("CDDF_SERIES", "Binance_*USDT_d,Bitstamp_*_1h,Kraken_XBTUSD_d")
    planned = plan(None, None)
    assert planned.keys == [
        "Binance_BTCUSDT_d",
        "Binance_ETHUSDT_d",
        "Bitstamp_BTCUSD_1h",
        "Bitstamp_ETHUSD_1h",
        "Kraken_XBTUSD_d",  # a key is taken as it is; its download says if it is unknown
    ]
    assert planned.patterns() == {
        "Binance_*USDT_d": ["Binance_BTCUSDT_d", "Binance_ETHUSDT_d"],
        "Bitstamp_*_1h": ["Bitstamp_BTCUSD_1h", "Bitstamp_ETHUSD_1h"],
    }
    assert planned.origin == "CDDF_SERIES" and planned.notes == []
    assert plan_series(None, None) == planned.keys
    # the exchange's name in the URL is lower case, each listing fetched once (then cached)
    assert sorted(request.path for request, _ in httpserver.log) == [
        PATH.format(exchange="binance"),
        PATH.format(exchange="bitstamp"),
    ]


def test_the_listing_is_cached_for_a_day_then_fetched_again(
    httpserver: HTTPServer, catalogue_env: Path
) -> None:
    serve_listing(httpserver, "binance")
    assert plan(["Binance_*_1h"], None).keys == ["Binance_BTCUSDT_1h"]
    assert plan(["Binance_ETH*"], None).keys == ["Binance_ETHBTC_d", "Binance_ETHUSDT_d"]
    assert len(httpserver.log) == 1  # the second plan read the cache
    (cached,) = catalogue_env.glob("*.json")
    assert json.loads(cached.read_text())["keys"] == sorted(LISTED["binance"])
    age_cache(catalogue_env, 0.9)
    plan(["Binance_*_d"], None)
    assert len(httpserver.log) == 1
    age_cache(catalogue_env, 1.1)
    plan(["Binance_*_d"], None)
    assert len(httpserver.log) == 2
    fetched = datetime.fromisoformat(json.loads(cached.read_text())["fetched_at"])
    assert datetime.now(UTC) - fetched < timedelta(minutes=1)  # the cache was renewed


def test_a_failed_refresh_uses_the_cached_listing_and_says_its_age(
    httpserver: HTTPServer, catalogue_env: Path
) -> None:
    serve_listing(httpserver, "binance")
    plan(["Binance_*_d"], None)
    age_cache(catalogue_env, 3.2)
    httpserver.clear()
    serve_listing(httpserver, "binance", response_data="busy", status=503)
    planned = plan(["Binance_*_d"], None)
    assert planned.keys == ["Binance_BTCUSDT_d", "Binance_ETHBTC_d", "Binance_ETHUSDT_d"]
    (note,) = planned.notes
    assert "could not be refreshed" in note and "HTTP 503" in note
    assert "using the one fetched 3 days ago" in note and str(catalogue_env) in note


def test_a_bad_listing_without_a_cache_names_the_url_and_what_to_do(
    httpserver: HTTPServer, catalogue_env: Path
) -> None:
    serve_listing(httpserver, "binance", response_data="<html>maintenance</html>")
    url = httpserver.url_for(PATH.format(exchange="binance"))
    with pytest.raises(ValueError, match="not JSON") as raised:
        plan(["Binance_*_d"], None)
    message = str(raised.value)
    assert url in message and "CDDF_CATALOGUE" in message and "--source DIR/" in message
    assert "none is cached" in message


def test_an_exchange_without_a_listing_is_named(httpserver: HTTPServer, catalogue_env: Path):
    serve_listing(httpserver, "binanse", response_data="Not Found", status=404)
    with pytest.raises(ValueError, match="HTTP 404 - there is no catalogue listing") as raised:
        plan(["Binanse_*_d"], None)
    assert "exchange of the pattern (Binanse" in str(raised.value)
    assert "/binanse/available" in str(raised.value)


def test_a_listing_past_the_size_limit_is_refused(
    httpserver: HTTPServer, catalogue_env: Path, monkeypatch
) -> None:
    serve_listing(httpserver, "binance")
    monkeypatch.setenv("CDDF_HTTP_MAX_BYTES", "100")
    with pytest.raises(ValueError, match="CDDF_HTTP_MAX_BYTES"):
        plan(["Binance_*_d"], None)


def test_a_pattern_that_selects_nothing_is_an_error_naming_it(
    httpserver: HTTPServer, catalogue_env: Path, monkeypatch
) -> None:
    serve_listing(httpserver, "binance")
    monkeypatch.setenv("CDDF_SERIES", "Binance_*USDT_d,Binance_*USDC_d")
    with pytest.raises(ValueError, match=r"CDDF_SERIES: pattern Binance_\*USDC_d selects no"):
        plan(None, None)


def test_a_pattern_must_name_its_exchange_for_a_listing_per_exchange(
    catalogue_env: Path,
) -> None:
    with pytest.raises(ValueError, match="does not name its exchange"):
        plan(["*_BTCUSD_d"], None)


def test_a_saved_listing_of_every_exchange(tmp_path: Path, monkeypatch) -> None:
    saved = tmp_path / "listing.json"
    saved.write_text(json.dumps([f"{key}.csv" for keys in LISTED.values() for key in keys]))
    monkeypatch.setenv("CDDF_CATALOGUE", str(saved))
    assert plan(["*_BTCUSD*_d"], None).keys == ["Binance_BTCUSDT_d", "Bitstamp_BTCUSD_d"]
    saved.write_text('{"files": []}')
    with pytest.raises(CatalogueError, match='neither a list nor an object with a "data"'):
        plan(["*_BTCUSD*_d"], None)


def test_a_listing_naming_no_cdd_file_is_an_error() -> None:
    with pytest.raises(CatalogueError, match="none of the 2 entries"):
        parse_listing(b'{"data": [{"file": "a.pdf"}, {"id": 3}]}', source="saved.json")


def test_the_cache_file_keeps_no_password(httpserver: HTTPServer, tmp_path: Path) -> None:
    serve_listing(httpserver, "binance")
    url = httpserver.url_for(PATH).replace("://", "://user:s3cret@") + "?format=json"
    catalogue = Catalogue(url, tmp_path, get_settings())
    assert "Binance_BTCUSDT_d" in catalogue.listing("Binance_*").keys
    (cached,) = tmp_path.glob("*.json")
    assert "s3cret" not in cached.read_text()


def test_source_directory_without_keys_takes_its_series(tmp_path: Path, monkeypatch) -> None:
    for key in ("Binance_BTCUSDT_d", "Bitstamp_ETHUSD_1h"):
        (tmp_path / f"{key}.csv").write_text("")
    (tmp_path / "prices.csv").write_text("")
    planned = plan(None, str(tmp_path))
    assert planned.keys == ["Binance_BTCUSDT_d", "Bitstamp_ETHUSD_1h"]
    (note,) = planned.notes
    assert "CDDF_SERIES is not set" in note and "prices.csv" in note

    monkeypatch.setenv("CDDF_SERIES", "Binance_*_d,Bitstamp_BTCUSD_d")
    planned = plan(None, str(tmp_path))  # patterns against the folder, keys as they are
    assert planned.keys == ["Binance_BTCUSDT_d", "Bitstamp_BTCUSD_d"]
    (note,) = planned.notes
    assert "1 CDD file(s) not taken by CDDF_SERIES: Bitstamp_ETHUSD_1h" in note
    assert plan(["Bitstamp_*"], str(tmp_path)).keys == ["Bitstamp_ETHUSD_1h"]


def test_source_directory_without_cdd_files_says_so(tmp_path: Path) -> None:
    (tmp_path / "prices.csv").write_text("")
    with pytest.raises(ValueError, match="holds no CDD file named") as raised:
        plan(None, str(tmp_path))
    assert "prices.csv" in str(raised.value) and "--series" in str(raised.value)


def test_dry_run_says_what_each_pattern_selects_and_what_joins(
    service_database: str, tmp_path: Path, monkeypatch
) -> None:
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    keys = [SeriesKey.parse(key) for key in ("Binance_BTCUSDT_d", "Binance_ETHUSDT_d")]
    for key in keys:
        write_cdd_file(tmp_path, key, make_candles(key, 30, start="2021-03-01"))
    monkeypatch.setenv("CDDF_SERIES", "Binance_BTC*_d")
    ingested = runner.invoke(app, ["ingest", "--source", str(tmp_path)])
    assert ingested.exit_code == 0, ingested.output
    assert "1 series from CDDF_SERIES; 1 joins this run: Binance_BTCUSDT_d" in ingested.stderr

    monkeypatch.setenv("CDDF_SERIES", "Binance_*USDT_d")
    dry = runner.invoke(app, ["run", "--source", str(tmp_path), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.splitlines() == [
        "CDDF_SERIES selects 2 series (1 joins this run: not in the series table yet):",
        "  Binance_*USDT_d selects 2: Binance_BTCUSDT_d, Binance_ETHUSDT_d (joins this run)",
    ]

    monkeypatch.setenv("CDDF_SERIES", "Binance_*USDC_d")
    refused = runner.invoke(app, ["run", "--source", str(tmp_path), "--dry-run"])
    assert refused.exit_code == 2
    assert "pattern Binance_*USDC_d selects no series" in refused.stderr

    monkeypatch.setenv("CDDF_SERIES", "Binance_*_d,Kraken_*_d")
    shown = runner.invoke(app, ["forecasts"])  # patterns among the stored series
    assert shown.exit_code == 1
    assert "no forecasts of Binance_BTCUSDT_d yet" in shown.stderr
    assert "Binance_ETHUSDT_d" not in shown.stderr  # not stored: nothing to show
    assert "no stored series matches Kraken_*_d" in shown.stderr


@flow
def a_run_that_plans(source: str) -> list[str]:
    return plan_series(None, source)


def test_a_flow_run_logs_which_series_join_it(
    sqlite_url: str, tmp_path: Path, monkeypatch, prefect_harness, caplog
) -> None:
    monkeypatch.setenv("CDDF_DATABASE_URL", sqlite_url)
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    for name in ("Binance_BTCUSDT_d", "Binance_ETHUSDT_d"):
        key = SeriesKey.parse(name)
        write_cdd_file(tmp_path, key, make_candles(key, 30, start="2021-03-01"))
    stored = runner.invoke(app, ["ingest", "-s", "Binance_BTCUSDT_d", "--source", str(tmp_path)])
    assert stored.exit_code == 0, stored.output
    monkeypatch.setenv("CDDF_SERIES", "Binance_*_d,Bitstamp_*_1h")
    with caplog.at_level(logging.INFO):
        with pytest.raises(ValueError, match=r"pattern Bitstamp_\*_1h selects no series"):
            a_run_that_plans(str(tmp_path))
        monkeypatch.setenv("CDDF_SERIES", "Binance_*_d")
        assert a_run_that_plans(str(tmp_path)) == ["Binance_BTCUSDT_d", "Binance_ETHUSDT_d"]
    said = [record.getMessage() for record in caplog.records]
    assert "2 series from CDDF_SERIES; 1 joins this run: Binance_ETHUSDT_d" in said


def test_a_global_group_from_a_pattern_is_the_stored_series_it_selects(
    service_database: str, tmp_path: Path, monkeypatch
) -> None:
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    for name in ("Binance_BTCUSDT_d", "Binance_ETHUSDT_d", "Binance_ETHBTC_d"):
        key = SeriesKey.parse(name)
        write_cdd_file(tmp_path, key, make_candles(key, 30, start="2021-03-01"))
    assert runner.invoke(app, ["ingest", "--source", str(tmp_path)]).exit_code == 0
    monkeypatch.setenv("CDDF_SERIES", "Binance_*USDT_d,Bitstamp_BTCUSD_d")
    assert configured_keys() == ["Binance_BTCUSDT_d", "Binance_ETHUSDT_d", "Bitstamp_BTCUSD_d"]


def test_the_cache_defaults_to_the_user_cache_folder(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    catalogue = catalogue_of(get_settings())
    assert catalogue.location.startswith("https://api.cryptodatadownload.com/v1/data/ohlc/")
    assert catalogue.cache_dir == tmp_path / "cdd-forecast" / "catalogue"


def test_a_listing_that_cannot_be_cached_is_used_and_said_so(
    httpserver: HTTPServer, catalogue_env: Path
) -> None:
    serve_listing(httpserver, "binance")
    catalogue_env.write_text("a file where the cache folder should be")
    planned = plan(["Binance_*_1h"], None)
    assert planned.keys == ["Binance_BTCUSDT_1h"]
    (note,) = planned.notes
    assert f"could not be cached in {catalogue_env}" in note and "CDDF_CATALOGUE_CACHE" in note
