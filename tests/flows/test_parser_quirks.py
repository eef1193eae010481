"""The CDD parser on what real CryptoDataDownload files do (issues 9.1, 8.1, 8.3, 8.7, 8.gzip).

Each fixture is a few rows shaped like the real file that showed the quirk.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cdd.errors import CDDFormatError
from cdd.fast_dates import iso_dates
from cdd.parser import parse_cdd
from cdd.series_key import SeriesKey
from tests.flows.cdd_files import make_candles, make_cdd_csv

NOW = pd.Timestamp("2026-01-01", tz="UTC")
ETH_D = SeriesKey.parse("Bitstamp_ETHUSD_d")
BTC_D = SeriesKey.parse("Bitstamp_BTCUSD_d")
ADA_H = SeriesKey.parse("Binance_ADAUSDT_1h")


def csv_body(header: str, *rows: str, end: str = "\n") -> bytes:
    return ("\n".join([header, *rows]) + end).encode()


def parse(body: bytes, key: SeriesKey, now: pd.Timestamp = NOW):
    return parse_cdd(body, source="test.csv", key=key, now=now)


ETH_HEADER = "unix,date,symbol,open,high,low,close,Volume ETH,Volume USD"


def test_all_zero_rows_are_skipped_and_counted() -> None:
    """Bitstamp_ETHUSD_d: 988 all-zero rows before the pair was listed (line 1440 failed)."""
    body = csv_body(
        ETH_HEADER,
        "1510272000,2017-11-10 00:00:00,ETH/USD,320.0,324.77,294.5,298.0,4530.01,1398520.24",
        "1510185600,2017-11-09 00:00:00,ETH/USD,308.0,329.0,307.05,320.0,8237.34,2613140.4",
        "1510099200,2017-11-08 00:00:00,ETH/USD,0.0,0.0,0.0,0.0,0.0,0.0",
        "1510012800,2017-11-07 00:00:00,ETH/USD,0.0,0.0,0.0,0.0,0.0,0.0",
    )
    parsed = parse(body, ETH_D)
    report = parsed.report
    assert (report.rows_read, report.candles, report.zero_rows, report.rejected_rows) == (
        4,
        2,
        2,
        0,
    )
    assert parsed.candles.index[0] == pd.Timestamp("2017-11-09", tz="UTC")
    assert report.gaps == 0


def test_a_zero_price_among_traded_values_is_a_bad_row() -> None:
    body = csv_body(
        ETH_HEADER,
        "1510272000,2017-11-10 00:00:00,ETH/USD,320.0,324.77,294.5,298.0,4530.01,1398520.24",
        "1510185600,2017-11-09 00:00:00,ETH/USD,0.0,0.0,0.0,0.0,8237.34,2613140.4",
        "1510099200,2017-11-08 00:00:00,ETH/USD,300.0,310.0,299.0,308.0,100.0,30500.0",
    )
    (reject,) = parse(body, ETH_D).report.rejects
    assert reject.line == 3 and reject.reason.startswith("prices must be positive (open=0")


def test_ohlc_float_noise_is_no_inconsistency() -> None:
    """Bitfinex: open 1.83e-06 beside high 0.0000018299999999999998."""
    key = SeriesKey.parse("Bitfinex_XRPBTC_d")
    header = "unix,date,symbol,open,high,low,close,Volume XRP,Volume BTC"
    body = csv_body(
        header,
        "1577923200,2020-01-02 00:00:00,XRP/BTC,1.83e-06,0.0000018299999999999998,1.8e-06,"
        "1.82e-06,1000.0,0.00182",
        "1577836800,2020-01-01 00:00:00,XRP/BTC,1.8e-06,1.84e-06,1.79e-06,1.83e-06,1000.0,0.00181",
    )
    parsed = parse(body, key)
    assert parsed.report.rejected_rows == 0 and len(parsed.candles) == 2
    # a real inconsistency (1 % off) is still a bad row
    wrong = body.replace(b"0.0000018299999999999998", b"1.81e-06")
    (reject,) = parse(wrong, key).report.rejects
    assert "open 1.83e-06 is above high 1.81e-06" in reject.reason


ADA_HEADER = "unix,date,symbol,open,high,low,close,Volume ADA,Volume USDT,tradecount"
# the newer generation: ms unix, HH:MM:SS dates; the older: s unix, HH-AM dates
NEW_03 = "1504234800000,2017-09-01 03:00:00,ADA/USDT,0.0214,0.0216,0.0213,0.0215,1000.0,21.45,8"
NEW_02 = "1504231200000,2017-09-01 02:00:00,ADA/USDT,0.0213,0.0215,0.0212,0.0214,1000.0,21.35,7"
NEW_01 = "1504227600000,2017-09-01 01:00:00,ADA/USDT,0.0211,0.0214,0.0210,0.0213,2000.0,42.4,9"
OLD_01 = "1504227600,2017-09-01 01-AM,ADA/USDT,0.021,0.021,0.021,0.021,1900.0,40.1,NULL"
OLD_00 = "1504224000,2017-09-01 12-AM,ADA/USDT,0.0210,0.0212,0.0209,0.0211,1500.0,31.6,NULL"


def test_the_newer_generation_supersedes_the_older_copy_of_a_candle() -> None:
    parsed = parse(csv_body(ADA_HEADER, NEW_02, NEW_01, OLD_01, OLD_00), ADA_H)
    report = parsed.report
    assert (report.candles, report.superseded_rows, report.rejected_rows) == (3, 1, 0)
    assert parsed.candles.loc[pd.Timestamp("2017-09-01 01:00", tz="UTC"), "open"] == 0.0211
    # identical repeats still collapse, whatever their generation
    again = parse(csv_body(ADA_HEADER, NEW_02, NEW_01, NEW_01, OLD_00), ADA_H).report
    assert (again.duplicates_collapsed, again.superseded_rows) == (1, 0)


def test_two_different_rows_of_one_generation_are_both_rejected() -> None:
    other = NEW_01.replace(",2000.0,42.4,", ",2100.0,44.5,")
    parsed = parse(csv_body(ADA_HEADER, NEW_03, NEW_02, NEW_01, other, OLD_01, OLD_00), ADA_H)
    assert [reject.line for reject in parsed.report.rejects] == [4, 5, 6]
    assert "lines 4 and 5 and 6 are different candles for 2017-09-01T01:00:00+00:00" in (
        parsed.report.rejects[0].reason
    )
    assert pd.Timestamp("2017-09-01 01:00", tz="UTC") not in parsed.candles.index


def test_one_file_mixes_units_date_forms_tradecount_and_volume_order() -> None:
    """ms and s unix, ISO and HH-AM dates, tradecount numbers/NULL/missing, quote first."""
    header = "unix,date,symbol,open,high,low,close,Volume USDT,Volume ADA,tradecount"
    rows = [
        "1504231200000,2017-09-01 02:00:00,ADA/USDT,0.0213,0.0215,0.0212,0.0214,21.35,1000.0,7",
        "1504227600,2017-09-01 01-AM,ADA/USDT,0.0211,0.0214,0.0210,0.0213,42.4,2000.0,NULL",
        "1504224000,2017-09-01 12-AM,ADA/USDT,0.0210,0.0212,0.0209,0.0211,31.6,1500.0",
    ]
    parsed = parse(csv_body(header, *rows), ADA_H)
    assert parsed.report.rejected_rows == 0 and parsed.report.time_mismatches == 0
    candles = parsed.candles
    assert candles.index.strftime("%H").tolist() == ["00", "01", "02"]
    assert candles["volume_base"].tolist() == [1500.0, 2000.0, 1000.0]
    assert candles["volume_quote"].tolist() == [31.6, 42.4, 21.35]


@pytest.mark.parametrize("series", ["Bitstamp_BTCUSD_1h", "Bitstamp_BTCUSD_minute"])
def test_a_daily_file_for_a_finer_timeframe_is_rejected_with_its_spacing(series: str) -> None:
    body = make_cdd_csv(BTC_D, make_candles(BTC_D, 30))
    with pytest.raises(CDDFormatError) as raised:
        parse(body, SeriesKey.parse(series))
    message = str(raised.value)
    assert message.startswith("test.csv: its candles are 1 days 00:00:00 apart (100% of 29 steps)")
    assert "another timeframe" in message


def test_holes_are_no_other_timeframe() -> None:
    key = SeriesKey.parse("Bitstamp_BTCUSD_1h")
    candles = make_candles(key, 200)
    holey = candles.drop(candles.index[[5, 6, 7, 50, 120, 121]])
    parsed = parse(make_cdd_csv(key, holey), key)
    assert (parsed.report.candles, parsed.report.gaps) == (194, 6)
    sparse = candles.iloc[::3]  # 3-hour steps: holes everywhere, still no coarser timeframe
    assert parse(make_cdd_csv(key, sparse), key).report.gaps == 2 * (len(sparse) - 1)


BTC_HEADER = "unix,date,symbol,open,high,low,close,Volume BTC,Volume USD"
# the real file's two oldest rows (volumes swapped in the file, repaired by the parser)
BTC_29 = "1417219200,2014-11-29 00:00:00,BTC/USD,376.42,386.6,372.25,376.72,2746157.05,7245.19"
BTC_28 = "1417132800,2014-11-28 00:00:00,BTC/USD,363.59,381.34,360.57,376.28,3220878.18,8617.15"


def test_a_last_line_cut_inside_its_last_field_fails_the_file() -> None:
    """A download ending ``…,3220878.18,86`` has all its fields."""
    cut = csv_body(BTC_HEADER, BTC_29, BTC_28[: BTC_28.rindex(",") + 3], end="")
    with pytest.raises(CDDFormatError) as raised:
        parse(cut, BTC_D)
    message = str(raised.value)
    assert message.startswith("test.csv line 3: the last line has no line end")
    assert "cut" in message and "download the file again" in message
    # the whole row without its line end is sound, and is stored
    whole = parse(csv_body(BTC_HEADER, BTC_29, BTC_28, end=""), BTC_D)
    assert whole.candles.iloc[0]["volume_quote"] == 3220878.18


def test_a_row_with_inconsistent_volumes_is_a_bad_row() -> None:
    cut = BTC_28[: BTC_28.rindex(",") + 3]  # the same values, but the line did end
    parsed = parse(csv_body(BTC_HEADER, BTC_29, cut), BTC_D)
    (reject,) = parsed.report.rejects
    assert reject.line == 3 and reject.reason.startswith("quote volume 86.0 is not base volume")
    assert len(parsed.candles) == 1


def test_date_and_unix_are_cross_checked() -> None:
    """Binance hourly rows of Sept 2017 are dated 4 hours off their unix time: counted."""
    off = "1504224000000,2017-09-01 04:00:00,ADA/USDT,0.0210,0.0212,0.0209,0.0211,1500.0,31.6,5"
    parsed = parse(csv_body(ADA_HEADER, NEW_02, NEW_01, off), ADA_H)
    assert (parsed.report.time_mismatches, parsed.report.rejected_rows) == (1, 0)
    assert parsed.candles.index[0] == pd.Timestamp("2017-09-01 00:00", tz="UTC")  # unix trusted
    far = NEW_01.replace("2017-09-01 01:00:00", "1999-09-01 01:00:00")
    (reject,) = parse(csv_body(ADA_HEADER, NEW_02, far, off), ADA_H).report.rejects
    assert reject.line == 3 and reject.reason == (
        "date 1999-09-01 01:00:00 is not unix 1504227600000 = 2017-09-01 01:00 UTC: "
        "the row is ambiguous"
    )


def test_a_date_that_names_another_candle_than_its_unix_time_is_a_bad_row() -> None:
    """Issue 24.4: date 2025-09-24 beside unix 1758758400 (09-25) was stored as a 09-25
    candle with 09-24's prices, only counted in ``time_mismatches``."""
    day_24 = "1758672000,2025-09-24,BTC/USD,113300,113500,111000,111970,1.878,210400"
    day_23 = "1758585600,2025-09-23,BTC/USD,112000,113400,111500,113300,1468.0,165000000"
    ambiguous = day_24.replace("1758672000", "1758758400")
    parsed = parse(csv_body(BTC_HEADER, ambiguous, day_24, day_23), BTC_D)
    (reject,) = parsed.report.rejects
    assert (reject.line, reject.time) == (2, pd.Timestamp("2025-09-25", tz="UTC"))
    assert reject.reason == (
        "date 2025-09-24 is not unix 1758758400 = 2025-09-25 00:00 UTC: the row is ambiguous"
    )
    assert parsed.candles.index.strftime("%m-%d").tolist() == ["09-23", "09-24"]
    assert parsed.report.time_mismatches == 0
    # a date that is another time of the same candle is the unix time's candle, counted
    later = day_24.replace("2025-09-24,", "2025-09-24 04:00:00,")
    parsed = parse(csv_body(BTC_HEADER, later, day_23), BTC_D)
    assert (parsed.report.rejected_rows, parsed.report.time_mismatches) == (0, 1)


def test_a_gzip_body_is_unpacked() -> None:
    body = make_cdd_csv(BTC_D, make_candles(BTC_D, 20))
    plain, packed = parse(body, BTC_D), parse(gzip.compress(body), BTC_D)
    pd.testing.assert_frame_equal(plain.candles, packed.candles)
    with pytest.raises(CDDFormatError, match="gzip-compressed but cannot be unpacked|gzip body"):
        parse(gzip.compress(body)[:200], BTC_D)
    with pytest.raises(CDDFormatError, match="unpacks to more than 100 bytes"):
        parse_cdd(gzip.compress(body), source="test.csv", key=BTC_D, now=NOW, max_bytes=100)


BTCUSDT_D = SeriesKey.parse("Binance_BTCUSDT_d")
BINANCE_HEADER = "unix,date,symbol,open,high,low,close,Volume BTC,Volume USDT,tradecount"


def binance_mixed_daily(long_rows: int, short_rows: int) -> bytes:
    """Binance_BTCUSDT_d as served in 2021: ms unix and 19-wide dates on top, float-second
    unix and 10-wide dates below, each followed by the 8-character symbol ``BTC/USDT``."""
    candles = make_candles(BTCUSDT_D, long_rows + short_rows, start="2017-12-18")
    rows = []
    for number, (time, row) in enumerate(candles.iloc[::-1].iterrows()):
        values = ",".join(repr(float(row[name])) for name in candles.columns[:6])
        seconds = int(time.timestamp())
        if number < long_rows:
            rows.append(f"{seconds * 1000},{time:%Y-%m-%d %H:%M:%S},BTC/USDT,{values},{number}")
        else:
            rows.append(f"{seconds}.0,{time:%Y-%m-%d},BTC/USDT,{values},{number}")
    return csv_body(BINANCE_HEADER, *rows)


def test_a_file_whose_date_width_changes_parses_without_crashing(tmp_path) -> None:
    """Issue 24.1: numpy's datetime64 cast of the cells ``2017-12-18,BTC/USDT`` segfaulted."""
    path = tmp_path / "Binance_BTCUSDT_d.csv"
    path.write_bytes(binance_mixed_daily(long_rows=600, short_rows=700))
    code = (
        "import sys, pandas as pd\n"
        "from cdd.series_key import SeriesKey\n"
        "from cdd.parser import parse_cdd\n"
        "report = parse_cdd(open(sys.argv[1], 'rb').read(), source='f.csv',\n"
        "    key=SeriesKey.parse('Binance_BTCUSDT_d'), now=pd.Timestamp('2026-01-01', tz='UTC'),\n"
        ").report\n"
        "print(report.candles, report.rejected_rows, report.time_mismatches, report.first)\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], cwd=root, capture_output=True, timeout=120
    )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr.decode()[-2000:]}"
    assert done.stdout.decode().split() == ["1300", "0", "0", "2017-12-18", "00:00:00+00:00"]


def test_iso_dates_reads_each_width_or_hands_over_to_the_slow_path() -> None:
    body = binance_mixed_daily(long_rows=3, short_rows=2)
    start = body.index(b"unix")
    dates = iso_dates(body, start, fields=10, column=1)
    assert dates is not None
    expected = pd.date_range("2017-12-18", periods=5, freq="D", tz="UTC")[::-1]
    assert dates.tolist() == expected.as_unit("ns").asi8.tolist()
    for bad in (b"2021-02-30", b"2021-06-11 24:00:00", b"2021-06-11 00:00", b"0000-01-01"):
        changed = body.replace(b"2017-12-19", bad, 1)
        assert iso_dates(changed, start, fields=10, column=1) is None, bad
