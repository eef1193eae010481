"""Ingest end to end on SQLite and PostgreSQL: files, HTTP, bad input, the Prefect task."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from prefect import flow
from pytest_httpserver import HTTPServer
from sqlalchemy import Engine, func, select
from werkzeug import Request, Response

from cdd.series_key import SeriesKey
from db.candles import load_candles
from db.ingest_rejects import load_rejects
from db.models import Candle, IngestRun
from flows.ingest import (
    IngestResult,
    ingest_each,
    ingest_series,
    ingest_series_task,
    plan_series,
)
from tests.flows.cdd_files import GENERATIONS, make_candles, make_cdd_csv, write_cdd_file

KEY = SeriesKey.parse("Bitstamp_BTCUSD_d")
PATH = "/cdd/Bitstamp_BTCUSD_d.csv"
NOW = pd.Timestamp("2026-01-01", tz="UTC")
MAX_BYTES = 100_000
REAL_FILE = Path(__file__).resolve().parents[3] / "shared" / "data" / "Bitstamp_BTCUSD_d.csv"


@pytest.fixture
def engine(service_database: str, httpserver: HTTPServer, monkeypatch) -> Iterator[Engine]:
    """The service's migrated database; CDD's base URL is the local test server."""
    from db.engine import get_engine, make_engine, migrate

    monkeypatch.setenv("CDDF_CDD_BASE_URL", httpserver.url_for("/cdd/"))
    monkeypatch.setenv("CDDF_HTTP_RETRIES", "1")
    monkeypatch.setenv("CDDF_HTTP_READ_TIMEOUT", "10")  # a loaded CI machine answers slowly
    monkeypatch.setenv("CDDF_HTTP_MAX_BYTES", str(MAX_BYTES))
    setup = make_engine(service_database)
    migrate(setup)
    setup.dispose()
    yield get_engine()


def stored(engine: Engine, key: SeriesKey = KEY) -> pd.DataFrame:
    return load_candles(engine, key, final_only=False)


def candle_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(Candle)).scalar_one()


def runs(engine: Engine) -> list[IngestRun]:
    with engine.connect() as connection:
        return list(connection.execute(select(IngestRun).order_by(IngestRun.id)).all())


def assert_same_candles(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        actual, expected, check_freq=False, check_index_type=False, check_exact=True
    )


@pytest.mark.parametrize("generation", sorted(GENERATIONS))
def test_each_generation_fills_candles_and_reingest_writes_nothing(
    engine: Engine, tmp_path: Path, generation: str
) -> None:
    candles = make_candles(KEY, 40)
    path = write_cdd_file(tmp_path, KEY, candles, generation=generation)
    first = ingest_series(KEY.key, str(path), now=NOW)
    assert (first.status, first.rows_read, first.inserted, first.updated) == ("success", 40, 40, 0)
    assert_same_candles(stored(engine), candles)
    again = ingest_series(KEY.key, str(path), now=NOW)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 40)
    assert [(run.status, run.rows_read, run.inserted, run.unchanged) for run in runs(engine)] == [
        ("success", 40, 40, 0),
        ("success", 40, 0, 40),
    ]
    assert runs(engine)[0].source_url == str(path)
    assert len(runs(engine)[0].content_hash) == 64


def test_partial_candle_is_replaced_and_revisions_counted(engine: Engine, tmp_path: Path) -> None:
    candles = make_candles(KEY, 10)
    last = candles.index[-1]
    early = candles.copy()
    early.loc[last, ["close", "high", "volume_base"]] = [early.loc[last, "open"] + 1, 20_000, 1.0]
    early.loc[last, "volume_quote"] = early.loc[last, "open"]
    path = write_cdd_file(tmp_path, KEY, early)
    morning = ingest_series(KEY.key, str(path), now=last + pd.Timedelta(hours=6))
    assert morning.partial_rows == 1
    assert stored(engine)["is_final"].tolist() == [True] * 9 + [False]

    revised = candles.copy()
    revised.iloc[2, revised.columns.get_loc("volume_base")] += 1.5  # CDD corrected history
    revised.iloc[2, revised.columns.get_loc("volume_quote")] += 15_000
    write_cdd_file(tmp_path, KEY, revised)
    next_day = ingest_series(  # a final candle 7 days old: beyond the revision age limit
        KEY.key, str(path), now=last + pd.Timedelta(days=1, hours=1), accept_revisions=True
    )
    assert (next_day.inserted, next_day.updated, next_day.unchanged) == (0, 2, 8)
    assert next_day.revised == 1  # the partial day turning final is no revision
    assert_same_candles(stored(engine), revised)


def test_conditional_get_skips_an_unchanged_file(engine: Engine, httpserver: HTTPServer) -> None:
    body = make_cdd_csv(KEY, make_candles(KEY, 15))
    validators = {"ETag": '"abc"', "Last-Modified": "Wed, 24 Sep 2025 00:05:00 GMT"}
    httpserver.expect_request(PATH, headers={"If-None-Match": '"abc"'}).respond_with_data(
        b"", status=304
    )
    httpserver.expect_request(PATH).respond_with_data(body, headers=validators)
    first = ingest_series(KEY.key, now=NOW)
    assert (first.status, first.inserted, first.source) == (
        "success",
        15,
        httpserver.url_for(PATH),
    )
    second = ingest_series(KEY.key, now=NOW)
    assert second.status == "not_modified"
    assert [response.status_code for _, response in httpserver.log] == [200, 304]
    assert httpserver.log[1][0].headers["If-Modified-Since"] == validators["Last-Modified"]
    assert [(run.status, run.etag) for run in runs(engine)] == [
        ("success", '"abc"'),
        ("not_modified", '"abc"'),
    ]
    assert candle_count(engine) == 15


GOOD = make_cdd_csv(KEY, make_candles(KEY, 30, seed=1), newest_first=False)
GOOD_LINES = GOOD.decode().splitlines(keepends=True)  # banner, header, rows from line 3


def with_line(number: int, text: str) -> bytes:
    """GOOD with its 1-based ``number``-th line replaced by ``text``."""
    lines = list(GOOD_LINES)
    lines[number - 1] = text + "\n"
    return "".join(lines).encode()


def row_at(line: int, values: str) -> str:
    """A row of GOOD's candle time at ``line`` with other ``values`` (open .. volume_quote)."""
    time = pd.Timestamp("2020-01-01", tz="UTC") + pd.Timedelta(days=line - 3)
    return f"{int(time.timestamp())},{time:%Y-%m-%d %H:%M:%S},BTC/USD,{values}"


def conflicting_copy_of_line_3() -> str:
    fields = GOOD_LINES[2].strip().split(",")
    fields[-1] = str(float(fields[-1]) + 1)
    return ",".join(fields)


def cut_inside_last_field() -> bytes:
    """GOOD as a download cut inside the quote volume of its last line (``…,3220878.18,86``)."""
    whole = GOOD.rstrip(b"\n")
    last_field = whole.rsplit(b",", 1)[1]
    return whole[: len(whole) - len(last_field) + last_field.index(b".") - 1]


Setup = Callable[[HTTPServer, threading.Event, pytest.MonkeyPatch], None]


def serve(body: bytes, status: int = 200) -> Setup:
    def setup(server: HTTPServer, released: threading.Event, monkeypatch) -> None:
        server.expect_request(PATH).respond_with_data(body, status=status)

    return setup


def stall(server: HTTPServer, released: threading.Event, monkeypatch) -> None:
    """The server sends nothing until the test is done; the client gives up after 0.5 s."""
    monkeypatch.setenv("CDDF_HTTP_READ_TIMEOUT", "0.5")

    def handler(request: Request) -> Response:
        released.wait(timeout=30)
        return Response(GOOD)

    server.expect_request(PATH).respond_with_handler(handler)


def with_lines(rows: dict[int, str]) -> bytes:
    lines = list(GOOD_LINES)
    for number, text in rows.items():
        lines[number - 1] = text + "\n"
    return "".join(lines).encode()


NEXT_YEAR = int(pd.Timestamp("2027-01-01", tz="UTC").timestamp())
FOUR_BAD = with_lines({n: row_at(n, "-1,2,1,1,1,1") for n in (5, 9, 12, 20)})
BAD_INPUTS = {
    "html": (serve(b"<html><body>Please verify you are human</body></html>"), "line 1", "HTML"),
    "empty": (serve(b""), PATH, "the body is empty"),
    "truncated": (serve(GOOD[:-25]), "line 32", "truncated"),
    "cut inside last field": (serve(cut_inside_last_field()), "line 32", "no line end"),
    "missing column": (serve(GOOD.replace(b",high", b",hi", 1)), "line 2", "missing column"),
    "too many bad rows": (serve(FOUR_BAD), "line 5: prices must be positive", "4 of 30 rows"),
    "404": (serve(b"", status=404), PATH, "unknown to CryptoDataDownload"),
    "5xx": (serve(b"", status=503), PATH, "HTTP 503"),
    "oversize": (serve(GOOD * (MAX_BYTES // len(GOOD) + 1)), PATH, "larger than the limit"),
    "timeout": (stall, PATH, "no answer within the timeouts"),
}
BAD_ROWS = {  # line -> (row, reason): each a bad row of an otherwise sound file
    "non-numeric": ({7: row_at(7, "1,abc,1,1,1,1")}, "high is 'abc', not a number"),
    "NaN price": ({8: row_at(8, "1,2,NaN,1,1,1")}, "low is empty"),
    "negative": ({9: row_at(9, "-1,2,1,1,1,1")}, "prices must be positive"),
    "high < low": ({5: row_at(5, "5,4,6,5,1,5")}, "high 4.0 is below low 6.0"),
    "quote volume": ({6: row_at(6, "5,6,4,5,1,5000")}, "quote volume 5000.0 is not base"),
    "date far from unix": (
        {10: row_at(10, "5,6,4,5,1,5").replace(",2020-", ",1999-")},
        "the row is ambiguous",
    ),
    "date of the day before its unix time": (  # issue 24.4: stored as the next day's candle
        {10: row_at(10, "5,6,4,5,1,5").replace("2020-01-08 00:00:00", "2020-01-07")},
        "date 2020-01-07 is not unix 1578441600 = 2020-01-08 00:00 UTC",
    ),
    "future row": ({32: f"{NEXT_YEAR},2027-01-01 00:00:00,BTC/USD,1,2,1,1,1,1"}, "in the future"),
}


@pytest.fixture
def released() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_recorded_and_writes_nothing(
    engine: Engine, httpserver: HTTPServer, tmp_path: Path, released, monkeypatch, case: str
) -> None:
    setup, where, says = BAD_INPUTS[case]
    good = make_candles(KEY, 5, start="2019-01-01")
    ingest_series(KEY.key, str(write_cdd_file(tmp_path, KEY, good)), now=NOW)
    setup(httpserver, released, monkeypatch)

    with pytest.raises(Exception) as raised:
        ingest_series(KEY.key, now=NOW)
    released.set()
    message = str(raised.value)
    assert httpserver.url_for(PATH) in message and where in message and says in message
    assert_same_candles(stored(engine), good)
    last = runs(engine)[-1]
    assert last.status == "failed" and says in last.error and where in last.error
    assert last.source_url == httpserver.url_for(PATH)


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_a_bad_row_is_rejected_alone_kept_and_never_overwrites(
    engine: Engine, httpserver: HTTPServer, tmp_path: Path, case: str
) -> None:
    rows, says = BAD_ROWS[case]
    before = ingest_series(KEY.key, str(write_good(tmp_path)), now=NOW)
    assert before.rejected_rows == 0
    httpserver.expect_request(PATH).respond_with_data(with_lines(rows))

    result = ingest_series(KEY.key, now=NOW)
    assert (result.status, result.rejected_rows, result.unchanged) == ("success", 1, 29)
    assert_same_candles(stored(engine), parse_good())  # the stored candle stays
    (line,) = rows
    (reject,) = load_rejects(engine, series=KEY)
    assert (reject.ingest_run_id, reject.series, reject.line) == (result.run_id, KEY.key, line)
    assert says in reject.reason and reject.raw == rows[line]
    last = runs(engine)[-1]
    assert (last.status, last.rejected_rows, last.zero_rows, last.superseded_rows) == (
        "success",
        1,
        0,
        0,
    )


def test_conflicting_rows_are_both_rejected(
    engine: Engine, httpserver: HTTPServer, tmp_path: Path
) -> None:
    ingest_series(KEY.key, str(write_good(tmp_path)), now=NOW)
    httpserver.expect_request(PATH).respond_with_data(with_line(4, conflicting_copy_of_line_3()))
    result = ingest_series(KEY.key, now=NOW)
    assert (result.rejected_rows, result.unchanged) == (2, 28)
    assert [reject.line for reject in load_rejects(engine, run_id=result.run_id)] == [3, 4]
    assert_same_candles(stored(engine), parse_good())


def test_zero_rows_superseded_copies_and_time_mismatches_are_counted(
    engine: Engine, tmp_path: Path
) -> None:
    key = SeriesKey.parse("Binance_ADAUSDT_1h")
    header = "unix,date,symbol,open,high,low,close,Volume ADA,Volume USDT,tradecount"
    rows = [
        "1504234800000,2017-09-01 07:00:00,ADA/USDT,0.0213,0.0215,0.0212,0.0214,1000.0,21.35,7",
        "1504231200000,2017-09-01 02:00:00,ADA/USDT,0.0213,0.0215,0.0212,0.0214,1000.0,21.35,7",
        "1504227600000,2017-09-01 01:00:00,ADA/USDT,0.0211,0.0214,0.0210,0.0213,2000.0,42.4,9",
        "1504227600,2017-09-01 01-AM,ADA/USDT,0.021,0.021,0.021,0.021,1900.0,40.1,NULL",
        "1504224000,2017-09-01 12-AM,ADA/USDT,0.0,0.0,0.0,0.0,0.0,0.0,NULL",
    ]  # line 2 is dated 4 hours after its unix time (real Binance rows of Sept 2017)
    path = tmp_path / key.file_name
    path.write_text("\n".join([header, *rows]) + "\n")
    result = ingest_series(key.key, str(path), now=NOW)
    counts = (result.inserted, result.zero_rows, result.superseded_rows, result.time_mismatches)
    assert counts == (3, 1, 1, 1)
    run = runs(engine)[-1]
    assert (run.zero_rows, run.superseded_rows, run.time_mismatches, run.rejected_rows) == (
        1,
        1,
        1,
        0,
    )
    assert stored(engine, key).loc[pd.Timestamp("2017-09-01 01:00", tz="UTC"), "open"] == 0.0211


def test_a_daily_file_for_an_hourly_series_writes_nothing(engine: Engine, tmp_path: Path) -> None:
    """Issue 8.1: 1,558 hourly candles were replaced by whole days."""
    hourly = SeriesKey.parse("Bitstamp_BTCUSD_1h")
    ingest_series(hourly.key, str(write_cdd_file(tmp_path, hourly, make_candles(hourly, 48))))
    daily_file = tmp_path / "daily" / hourly.file_name
    daily_file.parent.mkdir()
    daily_file.write_bytes(make_cdd_csv(KEY, make_candles(KEY, 30)))
    with pytest.raises(Exception, match="its candles are 1 days 00:00:00 apart"):
        ingest_series(hourly.key, str(daily_file), now=NOW)
    assert_same_candles(stored(engine, hourly), make_candles(hourly, 48))
    assert runs(engine)[-1].status == "failed" and load_rejects(engine) == []


def write_good(directory: Path) -> Path:
    path = directory / KEY.file_name
    path.write_bytes(GOOD)
    return path


def parse_good() -> pd.DataFrame:
    from cdd.parser import parse_cdd

    return parse_cdd(GOOD, source="good", key=KEY, now=NOW).candles


def test_real_bitstamp_daily_file(engine: Engine, monkeypatch) -> None:
    if not REAL_FILE.exists():
        pytest.skip(f"real CDD file {REAL_FILE} is absent")
    monkeypatch.setenv("CDDF_HTTP_MAX_BYTES", str(10 * 2**20))
    now = pd.Timestamp("2025-09-24 18:00", tz="UTC")
    result = ingest_series(KEY.key, str(REAL_FILE), now=now)
    assert (result.inserted, result.swapped_volume_rows, result.partial_rows) == (3954, 1180, 1)
    candles = stored(engine)
    assert len(candles) == 3954 and (~candles["is_final"]).sum() == 1
    assert len(load_candles(engine, KEY)) == 3953  # final candles only
    again = ingest_series(KEY.key, str(REAL_FILE), now=now)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 3954)


def test_plan_series(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CDDF_SERIES", "Bitstamp_BTCUSD_d,Bitstamp_ETHUSD_1h")
    assert plan_series(None, None) == ["Bitstamp_BTCUSD_d", "Bitstamp_ETHUSD_1h"]
    assert plan_series(None, str(tmp_path)) == ["Bitstamp_BTCUSD_d", "Bitstamp_ETHUSD_1h"]
    assert plan_series(None, "/data/Binance_BTCUSDT_1h.csv") == ["Binance_BTCUSDT_1h"]
    assert plan_series(None, "http://mirror/cdd/Binance_BTCUSDT_d.csv") == ["Binance_BTCUSDT_d"]
    assert plan_series(["Bitstamp_ETHUSD_d"], "/data/btc.csv") == ["Bitstamp_ETHUSD_d"]
    with pytest.raises(ValueError, match="names one file but 2 series"):
        plan_series(None, "/data/btc.csv")
    with pytest.raises(ValueError, match="invalid series key 'BTC'"):
        plan_series(["BTC"], None)


def test_a_failing_series_fails_alone(engine: Engine, tmp_path: Path) -> None:
    """What `cdd-forecast ingest` runs: each series in turn, a failure recorded, the rest go on."""
    good, bad = KEY, SeriesKey.parse("Bitstamp_ETHUSD_d")
    write_cdd_file(tmp_path, good, make_candles(good, 12))
    (tmp_path / bad.file_name).write_bytes(b"<html><body>Not Found</body></html>")
    started: list[str] = []  # progress_for is called as each series starts
    results = list(ingest_each([bad.key, good.key], str(tmp_path), progress_for=started.append))
    assert started == [bad.key, good.key]
    assert [(r.series, r.status, r.inserted) for r in results] == [
        (bad.key, "failed", 0),
        (good.key, "success", 12),
    ]
    assert "HTML" in results[0].error
    assert [results[1].zero_rows, results[1].rejected_rows, results[1].superseded_rows] == [0, 0, 0]
    assert_same_candles(stored(engine), make_candles(good, 12))
    assert sorted((run.series, run.status) for run in runs(engine)) == [
        (good.key, "success"),
        (bad.key, "failed"),
    ]


@flow
def ingest_without_delay(key: str) -> IngestResult:
    return ingest_series_task.with_options(retry_delay_seconds=0)(key)


def test_a_download_is_retried_by_the_client_alone(
    prefect_harness, engine: Engine, httpserver: HTTPServer, monkeypatch
) -> None:
    monkeypatch.setenv("CDDF_HTTP_RETRIES", "1")  # the one retry layer: the client's
    httpserver.expect_oneshot_request(PATH).respond_with_data(b"", status=503)
    httpserver.expect_oneshot_request(PATH).respond_with_data(b"", status=503)
    httpserver.expect_oneshot_request(PATH).respond_with_data(b"<html>maintenance</html>")
    httpserver.expect_request(PATH).respond_with_data(make_cdd_csv(KEY, make_candles(KEY, 3)))

    state = ingest_without_delay(KEY.key, return_state=True)
    assert state.is_failed()  # the client's two requests failed; the task did not download again
    assert [response.status_code for _, response in httpserver.log] == [503, 503]
    assert [run.status for run in runs(engine)] == ["failed"]
    assert "HTTP 503" in runs(engine)[0].error and "(2 requests)" in runs(engine)[0].error

    state = ingest_without_delay(KEY.key, return_state=True)
    assert state.is_failed() and "HTML" in runs(engine)[1].error  # a bad file: never retried
    assert len(httpserver.log) == 3

    result = ingest_without_delay(KEY.key)
    assert (result.status, result.inserted) == ("success", 3)


def test_task_retries_an_unreachable_database_only(prefect_harness) -> None:
    from prefect.states import Failed
    from sqlalchemy.exc import OperationalError

    from cdd.errors import CDDFormatError, CDDNetworkError
    from flows.retry import outage

    refused = OperationalError("connect", {}, ConnectionRefusedError("refused"))
    assert outage(None, None, Failed(data=refused))
    assert not outage(None, None, Failed(data=CDDFormatError("bad.csv line 3")))
    assert not outage(None, None, Failed(data=CDDNetworkError("HTTP 503 (2 requests)")))
