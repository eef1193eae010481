"""Ingest end to end on SQLite and PostgreSQL: files, HTTP, bad input, the Prefect flow."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from prefect import flow
from pytest_httpserver import HTTPServer
from sqlalchemy import Engine, func, select
from werkzeug import Request, Response

from db.candles import load_candles
from db.models import Candle, IngestRun
from db.series_key import SeriesKey
from flows.ingest import (
    IngestFailed,
    IngestResult,
    ingest_flow,
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
    from db.settings import get_settings

    monkeypatch.setenv("CDDF_CDD_BASE_URL", httpserver.url_for("/cdd/"))
    monkeypatch.setenv("CDDF_HTTP_RETRIES", "1")
    monkeypatch.setenv("CDDF_HTTP_READ_TIMEOUT", "0.5")
    monkeypatch.setenv("CDDF_HTTP_MAX_BYTES", str(MAX_BYTES))
    get_settings.cache_clear()
    setup = make_engine(service_database)
    migrate(setup)
    setup.dispose()
    yield get_engine()
    get_settings.cache_clear()


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
    next_day = ingest_series(KEY.key, str(path), now=last + pd.Timedelta(days=1, hours=1))
    assert (next_day.inserted, next_day.updated, next_day.unchanged) == (0, 2, 8)
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
    return f"{1577836800 + (line - 3) * 86400},x,BTCUSD,{values}"


def conflicting_copy_of_line_3() -> str:
    fields = GOOD_LINES[2].strip().split(",")
    fields[-1] = str(float(fields[-1]) + 1)
    return ",".join(fields)


def serve(body: bytes, status: int = 200) -> Callable[[HTTPServer, threading.Event], None]:
    def setup(server: HTTPServer, released: threading.Event) -> None:
        server.expect_request(PATH).respond_with_data(body, status=status)

    return setup


def stall(server: HTTPServer, released: threading.Event) -> None:
    def handler(request: Request) -> Response:
        released.wait(timeout=10)
        return Response(GOOD)

    server.expect_request(PATH).respond_with_handler(handler)


NEXT_YEAR = int(pd.Timestamp("2027-01-01", tz="UTC").timestamp())
BAD_INPUTS = {
    "html": (serve(b"<html><body>Please verify you are human</body></html>"), "line 1", "HTML"),
    "empty": (serve(b""), PATH, "the body is empty"),
    "truncated": (serve(GOOD[:-25]), "line 32", "truncated"),
    "missing column": (serve(GOOD.replace(b",high", b",hi", 1)), "line 2", "missing column"),
    "non-numeric": (serve(with_line(7, row_at(7, "1,abc,1,1,1,1"))), "line 7", "'abc'"),
    "NaN price": (serve(with_line(8, row_at(8, "1,2,NaN,1,1,1"))), "line 8", "low is"),
    "negative": (serve(with_line(9, row_at(9, "-1,2,1,1,1,1"))), "line 9", "positive"),
    "high < low": (serve(with_line(5, row_at(5, "5,4,6,5,1,5"))), "line 5", "below low"),
    "conflicting duplicate": (
        serve(with_line(4, conflicting_copy_of_line_3())),
        "lines 3 and 4",
        "two different candles",
    ),
    "future row": (
        serve(with_line(32, f"{NEXT_YEAR},x,BTCUSD,1,2,1,1,1,1")),
        "line 32",
        "in the future",
    ),
    "404": (serve(b"", status=404), PATH, "unknown to CryptoDataDownload"),
    "5xx": (serve(b"", status=503), PATH, "HTTP 503"),
    "oversize": (serve(GOOD * (MAX_BYTES // len(GOOD) + 1)), PATH, "larger than the limit"),
    "timeout": (stall, PATH, "no answer within the timeouts"),
}


@pytest.fixture
def released() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_recorded_and_writes_nothing(
    engine: Engine, httpserver: HTTPServer, tmp_path: Path, released, case: str
) -> None:
    setup, where, says = BAD_INPUTS[case]
    good = make_candles(KEY, 5, start="2019-01-01")
    ingest_series(KEY.key, str(write_cdd_file(tmp_path, KEY, good)), now=NOW)
    setup(httpserver, released)

    with pytest.raises(Exception) as raised:
        ingest_series(KEY.key, now=NOW)
    released.set()
    message = str(raised.value)
    assert httpserver.url_for(PATH) in message and where in message and says in message
    assert_same_candles(stored(engine), good)
    last = runs(engine)[-1]
    assert last.status == "failed" and says in last.error and where in last.error
    assert last.source_url == httpserver.url_for(PATH)


def test_real_bitstamp_daily_file(engine: Engine, monkeypatch) -> None:
    from db.settings import get_settings

    if not REAL_FILE.exists():
        pytest.skip(f"real CDD file {REAL_FILE} is absent")
    monkeypatch.setenv("CDDF_HTTP_MAX_BYTES", str(10 * 2**20))
    get_settings.cache_clear()
    now = pd.Timestamp("2025-09-24 18:00", tz="UTC")
    result = ingest_series(KEY.key, str(REAL_FILE), now=now)
    assert (result.inserted, result.swapped_volume_rows, result.partial_rows) == (3954, 1180, 1)
    candles = stored(engine)
    assert len(candles) == 3954 and (~candles["is_final"]).sum() == 1
    assert len(load_candles(engine, KEY)) == 3953  # final candles only
    again = ingest_series(KEY.key, str(REAL_FILE), now=now)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 3954)


def test_plan_series(tmp_path: Path, monkeypatch) -> None:
    from db.settings import get_settings

    monkeypatch.setenv("CDDF_SERIES", "Bitstamp_BTCUSD_d,Bitstamp_ETHUSD_1h")
    get_settings.cache_clear()
    try:
        assert plan_series(None, None) == ["Bitstamp_BTCUSD_d", "Bitstamp_ETHUSD_1h"]
        assert plan_series(None, str(tmp_path)) == ["Bitstamp_BTCUSD_d", "Bitstamp_ETHUSD_1h"]
        assert plan_series(None, "/data/Binance_BTCUSDT_1h.csv") == ["Binance_BTCUSDT_1h"]
        assert plan_series(None, "http://mirror/cdd/Binance_BTCUSDT_d.csv") == ["Binance_BTCUSDT_d"]
        assert plan_series(["Bitstamp_ETHUSD_d"], "/data/btc.csv") == ["Bitstamp_ETHUSD_d"]
        with pytest.raises(ValueError, match="names one file but 2 series"):
            plan_series(None, "/data/btc.csv")
        with pytest.raises(ValueError, match="invalid series key 'BTC'"):
            plan_series(["BTC"], None)
    finally:
        get_settings.cache_clear()


def test_flow_isolates_a_failing_series_and_ends_failed(
    prefect_harness, engine: Engine, tmp_path: Path
) -> None:
    good, bad = KEY, SeriesKey.parse("Bitstamp_ETHUSD_d")
    write_cdd_file(tmp_path, good, make_candles(good, 12))
    (tmp_path / bad.file_name).write_bytes(b"<html><body>Not Found</body></html>")
    state = ingest_flow(series=[bad.key, good.key], source=str(tmp_path), return_state=True)
    assert state.is_failed()
    with pytest.raises(IngestFailed, match=r"1 of 2 series failed: Bitstamp_ETHUSD_d: .*HTML"):
        state.result()
    assert_same_candles(stored(engine), make_candles(good, 12))
    assert sorted((run.series, run.status) for run in runs(engine)) == [
        (good.key, "success"),
        (bad.key, "failed"),
    ]
    table = summary_artifact(state.state_details.flow_run_id)
    assert [(row["series"], row["status"], row["inserted"]) for row in table] == [
        (bad.key, "failed", 0),
        (good.key, "success", 12),
    ]


def summary_artifact(flow_run_id) -> list[dict]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    artifact_filter = ArtifactFilter(
        key=ArtifactFilterKey(any_=["ingest-summary"]),
        flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
    )
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(artifact_filter=artifact_filter)
    data = artifact.data
    return json.loads(data) if isinstance(data, str) else data


@flow
def ingest_without_delay(key: str) -> IngestResult:
    return ingest_series_task.with_options(retry_delay_seconds=0)(key)


def test_task_retries_network_errors_only(
    prefect_harness, engine: Engine, httpserver: HTTPServer, monkeypatch
) -> None:
    from db.settings import get_settings

    monkeypatch.setenv("CDDF_HTTP_RETRIES", "0")  # let the task, not urllib3, retry
    get_settings.cache_clear()
    httpserver.expect_oneshot_request(PATH).respond_with_data(b"", status=503)
    httpserver.expect_oneshot_request(PATH).respond_with_data(b"<html>maintenance</html>")
    httpserver.expect_request(PATH).respond_with_data(make_cdd_csv(KEY, make_candles(KEY, 3)))

    state = ingest_without_delay(KEY.key, return_state=True)
    assert state.is_failed()  # the 503 was retried, the HTML page was not
    assert [response.status_code for _, response in httpserver.log] == [503, 200]
    assert [run.status for run in runs(engine)] == ["failed", "failed"]
    assert "HTTP 503" in runs(engine)[0].error and "HTML" in runs(engine)[1].error

    result = ingest_without_delay(KEY.key)
    assert (result.status, result.inserted) == ("success", 3)


def test_task_retries_an_unreachable_database_but_not_a_bad_file(prefect_harness) -> None:
    from prefect.states import Failed
    from sqlalchemy.exc import OperationalError

    from flows.cdd.errors import CDDFormatError
    from flows.ingest import _retryable_failure

    outage = OperationalError("connect", {}, ConnectionRefusedError("refused"))
    assert _retryable_failure(None, None, Failed(data=outage))
    assert not _retryable_failure(None, None, Failed(data=CDDFormatError("bad.csv line 3")))
