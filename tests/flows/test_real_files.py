"""Every real CryptoDataDownload file in ../shared/data ingests; what the parser did, counted.

Skipped, with the reason, when the shared data is absent (it is never copied into the repo).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, select

from cdd.errors import CDDFormatError
from cdd.fast_dates import iso_dates
from cdd.parser import parse_cdd
from cdd.reading import open_body
from cdd.series_key import SeriesKey
from cdd.times import dates_to_ns
from db.candles import load_candles
from db.ingest_rejects import load_rejects
from db.models import IngestRun
from flows.ingest import ingest_series

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
NOW = pd.Timestamp("2025-09-24 18:00", tz="UTC")
# file: (rows read, candles, all-zero rows, swapped volume rows, gaps); no row is rejected
# or superseded, no date disagrees with its unix time, in any of them
EXPECTED = {
    "Bitstamp_BTCUSD_d": (3954, 3954, 0, 1180, 0),
    "multi/Binance_ADAUSDT_1h": (7478, 7478, 0, 0, 12),
    "multi/Binance_BNBUSDT_1h": (7478, 7478, 0, 0, 12),
    "multi/Bitfinex_ETHUSD_d": (2049, 2049, 0, 0, 0),
    "multi/Bitfinex_LTCUSD_d": (2444, 2444, 0, 0, 0),
    "multi/Bitstamp_BCHUSD_d": (2427, 1390, 1037, 62, 0),
    "multi/Bitstamp_ETHBTC_d": (2427, 1328, 1099, 0, 0),
    "multi/Bitstamp_ETHUSD_d": (2426, 1438, 988, 111, 0),
    "multi/Bitstamp_LTCBTC_d": (2427, 1576, 851, 248, 0),
    "multi/Bitstamp_LTCUSD_d": (2426, 1575, 851, 248, 0),
    "multi/Bitstamp_XRPUSD_d": (2427, 1735, 692, 351, 0),
}


def real_file(name: str) -> Path:
    path = DATA / f"{name}.csv"
    if not path.exists():
        pytest.skip(f"real CDD file {path} is absent (../shared/data is not part of the repo)")
    return path


def key_of(name: str) -> SeriesKey:
    return SeriesKey.parse(name.rsplit("/", 1)[-1])


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_real_file_parses_with_nothing_rejected(name: str) -> None:
    path = real_file(name)
    report = parse_cdd(path.read_bytes(), source=str(path), key=key_of(name), now=NOW).report
    counts = (report.rows_read, report.candles, report.zero_rows)
    assert counts + (report.swapped_volume_rows, report.gaps) == EXPECTED[name]
    assert (report.rejected_rows, report.superseded_rows, report.time_mismatches) == (0, 0, 0)


@pytest.fixture
def engine(service_database: str, monkeypatch) -> Iterator[Engine]:
    from db.engine import get_engine, make_engine, migrate

    monkeypatch.setenv("CDDF_HTTP_MAX_BYTES", str(10 * 2**20))
    setup = make_engine(service_database)
    migrate(setup)
    setup.dispose()
    yield get_engine()


def test_every_real_file_ingests(engine: Engine) -> None:
    """Issue 9: the Bitstamp pairs other than BTC/USD failed at their first all-zero row."""
    for name, (_, candles, zero_rows, _, _) in EXPECTED.items():
        result = ingest_series(key_of(name).key, str(real_file(name)), now=NOW)
        assert (result.status, result.inserted, result.zero_rows) == ("success", candles, zero_rows)
    with engine.connect() as connection:
        recorded = connection.execute(
            select(IngestRun.series, IngestRun.zero_rows, IngestRun.rejected_rows)
        ).all()
    assert sorted(recorded) == sorted(
        (key_of(name).key, zero_rows, 0) for name, (_, _, zero_rows, _, _) in EXPECTED.items()
    )
    assert load_rejects(engine) == []


def test_the_real_file_cut_inside_its_last_field_fails_naming_the_line() -> None:
    """Issue 8.3: a download ending ``…,3220878.18,86`` became volumes (3,220,878.18, 86)."""
    path = real_file("Bitstamp_BTCUSD_d")
    whole = path.read_bytes()
    cut = whole[: whole.rindex(b",8617.15") + len(",86")]
    assert cut.endswith(b",3220878.18,86")
    with pytest.raises(CDDFormatError) as raised:
        parse_cdd(cut, source=str(path), key=key_of("Bitstamp_BTCUSD_d"), now=NOW)
    message = str(raised.value)
    assert message.startswith(f"{path} line 3956: the last line has no line end")
    assert "download the file again" in message


def test_neither_a_short_hourly_file_nor_an_ambiguous_row_changes_the_real_candles(
    engine: Engine, tmp_path: Path
) -> None:
    """Issue 24.4 and 24.5 as probed after the real file: 4 hourly rows (21:00-00:00) replaced
    the final 2025-09-24 candle (close 111970 -> 112010); a newest row dated 2025-09-24 with
    unix 1758758400 (09-25) stored a 09-25 candle with 09-24's prices."""
    name, now = "Bitstamp_BTCUSD_d", pd.Timestamp("2025-09-25 06:00", tz="UTC")
    real = real_file(name).read_bytes()
    ingest_series(name, str(real_file(name)), now=now)
    before = load_candles(engine, name)
    hours = pd.date_range("2025-09-24 21:00", periods=4, freq="h", tz="UTC")[::-1]
    hourly = tmp_path / "hourly" / f"{name}.csv"
    hourly.parent.mkdir()
    hourly.write_text(
        "unix,date,symbol,open,high,low,close,Volume BTC,Volume USD\n"
        + "".join(
            f"{int(t.timestamp())},{t:%Y-%m-%d %H:%M:%S},BTC/USD,112000,112050,111950,112010,"
            "2.625,294026.25\n"
            for t in hours
        )
    )
    with pytest.raises(CDDFormatError, match="another timeframe"):
        ingest_series(name, str(hourly), now=now)
    ambiguous = tmp_path / f"{name}.csv"
    ambiguous.write_bytes(real.replace(b"\n1758672000,2025-09-24", b"\n1758758400,2025-09-24", 1))
    result = ingest_series(name, str(ambiguous), now=now)
    assert (result.status, result.rejected_rows, result.inserted) == ("success", 1, 0)
    (reject,) = load_rejects(engine, run_id=result.run_id)
    assert (reject.line, reject.reason) == (
        3,
        "date 2025-09-24 is not unix 1758758400 = 2025-09-25 00:00 UTC: the row is ambiguous",
    )
    after = load_candles(engine, name)
    pd.testing.assert_frame_equal(after, before)
    assert after["close"].iloc[-1] == 111970 and after.index[-1] == pd.Timestamp(
        "2025-09-24", tz="UTC"
    )


@pytest.mark.parametrize("name", list(EXPECTED))
def test_the_fast_date_path_reads_each_real_file_as_pandas_does(name: str) -> None:
    """Issue 24.1: fast_dates computes each date from its digits; the same instants as the
    slow path (pandas, ISO8601) on every real file."""
    body = open_body(real_file(name).read_bytes(), source=name, max_bytes=None)
    column = [field.lower() for field in body.header].index("date")
    fast = iso_dates(body.data, body.start, fields=len(body.header), column=column)
    text = pd.read_csv(io.BytesIO(body.data[body.start :]), dtype="str")[body.header[column]]
    slow, form = dates_to_ns(text)
    assert fast is not None and (form == 0).all()
    assert fast.tolist() == slow.tolist()
