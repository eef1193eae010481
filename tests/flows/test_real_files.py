"""Every real CryptoDataDownload file in ../shared/data ingests; what the parser did, counted.

Skipped, with the reason, when the shared data is absent (it is never copied into the repo).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, select

from db.ingest_rejects import load_rejects
from db.models import IngestRun
from db.series_key import SeriesKey
from flows.cdd.errors import CDDFormatError
from flows.cdd.parser import parse_cdd
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
