"""The CDD parser: every format generation, every repair, every rejected input."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdd.errors import CDDFormatError
from cdd.fast_dates import iso_dates
from cdd.parser import parse_cdd
from cdd.rejects import RejectLimits
from cdd.series_key import SeriesKey
from tests.flows.cdd_files import GENERATIONS, make_candles, make_cdd_csv

BTC_D = SeriesKey.parse("Bitstamp_BTCUSD_d")
NOW = pd.Timestamp("2026-01-01", tz="UTC")
REAL_FILE = Path(__file__).resolve().parents[3] / "shared" / "data" / "Bitstamp_BTCUSD_d.csv"
HEADER = "unix,date,symbol,open,high,low,close,Volume BTC,Volume USD"
# two good days, newest first: lines 3 and 4 of a file with banner and header
DAY2 = "1577923200,2020-01-02 00:00:00,BTC/USD,101,110,100,105,2,210"
DAY1 = "1577836800,2020-01-01 00:00:00,BTC/USD,100,102,99,101,1,100.5"
DAY0 = "1577750400,2019-12-31 00:00:00,BTC/USD,100,102,99,101,1,100.5"


def text_file(*rows: str, header: str = HEADER, banner: bool = True) -> bytes:
    lines = (["https://www.CryptoDataDownload.com"] if banner else []) + [header, *rows]
    return ("\n".join(lines) + "\n").encode()


def parse(body: bytes, key: SeriesKey = BTC_D, now: pd.Timestamp = NOW):
    return parse_cdd(body, source="test.csv", key=key, now=now)


def assert_same_candles(parsed: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(parsed, expected, check_freq=False, check_index_type=False)
    assert str(parsed.index.tz) == "UTC" and parsed.index.name == "time"


@pytest.mark.parametrize("generation", sorted(GENERATIONS))
@pytest.mark.parametrize(
    "series", ["Bitstamp_BTCUSD_d", "Bitstamp_ETHUSD_1h", "Binance_BTCUSDT_minute"]
)
def test_each_generation_and_timeframe_round_trips(generation: str, series: str) -> None:
    key = SeriesKey.parse(series)
    candles = make_candles(key, 60)
    parsed = parse(make_cdd_csv(key, candles, generation), key=key)
    assert_same_candles(parsed.candles, candles)
    report = parsed.report
    assert (report.rows_read, report.candles, report.gaps) == (60, 60, 0)
    assert (report.duplicates_collapsed, report.swapped_volume_rows, report.partial_rows) == (
        0,
        0,
        0,
    )
    assert (
        report.newest_first
        and report.first == candles.index[0]
        and report.last == candles.index[-1]
    )


@pytest.mark.parametrize(
    "options",
    [
        {"banner": False},
        {"newest_first": False},
        {"unix_unit": "ms"},
        {"unix_unit": "mixed"},
        {"line_ending": "\r\n"},
        {"generation": "2017", "banner": False, "newest_first": False},
    ],
    ids=lambda options: ",".join(f"{k}={v!r}" for k, v in options.items()),
)
def test_layout_variants_give_the_same_candles(options: dict) -> None:
    candles = make_candles(BTC_D, 40, seed=3)
    parsed = parse(make_cdd_csv(BTC_D, candles, **options))
    assert_same_candles(parsed.candles, candles)
    assert parsed.report.newest_first == options.get("newest_first", True)


def test_headers_are_mapped_by_meaning_not_position() -> None:
    header = "SYMBOL,Volume USD,Close,Low,High,Open,Date,Unix Timestamp,Volume BTC,tradecount"
    row = "BTCUSD,100.5,101,99,102,100,2020-01-01,1577836800000,1,7"
    candle = parse(text_file(row, header=header)).candles.iloc[0]
    assert candle[["open", "high", "low", "close"]].tolist() == [100, 102, 99, 101]
    assert (candle["volume_base"], candle["volume_quote"]) == (1, 100.5)


@pytest.mark.parametrize(
    ("series", "volumes"),
    [
        ("Bitstamp_BTCUSD_d", "Volume From,Volume To"),
        ("Binance_BTCUSDT_d", "Volume BTC,Volume USDT"),
        ("Binance_BTCUSDT_d", "Volume BTC,Volume USD"),  # a quote the pair does not spell
        ("Bitstamp_ETHBTC_d", "volume eth,volume btc"),
    ],
)
def test_volume_columns_by_currency(series: str, volumes: str) -> None:
    key = SeriesKey.parse(series)
    header = f"unix,date,symbol,open,high,low,close,{volumes}"
    row = f"1577836800,2020-01-01,{key.pair},100,102,99,101,1,100.5"
    candle = parse(text_file(row, header=header), key=key).candles.iloc[0]
    assert (candle["volume_base"], candle["volume_quote"]) == (1, 100.5)


def test_dates_without_unix_in_every_form() -> None:
    key = SeriesKey.parse("Bitstamp_BTCUSD_1h")
    header = "Date,Symbol,Open,High,Low,Close,Volume From,Volume To"
    rows = [
        "2018-05-15 12-PM,BTCUSD,100,102,99,101,1,100.5",
        "2018-05-15 11:00:00,BTCUSD,100,102,99,101,1,100.5",
        "2018-05-15 01-AM,BTCUSD,100,102,99,101,1,100.5",
        "2018-05-15 12-AM,BTCUSD,100,102,99,101,1,100.5",
        "2018-05-14 23:00:00,BTCUSD,100,102,99,101,1,100.5",
    ]
    index = parse(text_file(*rows, header=header), key=key).candles.index
    assert [t.strftime("%d %H") for t in index] == ["14 23", "15 00", "15 01", "15 11", "15 12"]
    daily = parse(text_file("2018-05-15,BTCUSD,100,102,99,101,1,100.5", header=header))
    assert daily.candles.index[0] == pd.Timestamp("2018-05-15", tz="UTC")


def test_swapped_volume_rows_are_corrected_and_counted() -> None:
    candles = make_candles(BTC_D, 50, seed=5)
    swapped = candles.copy()
    rows = swapped.index[:12]
    swapped.loc[rows, ["volume_base", "volume_quote"]] = candles.loc[
        rows, ["volume_quote", "volume_base"]
    ].to_numpy()
    parsed = parse(make_cdd_csv(BTC_D, swapped))
    assert parsed.report.swapped_volume_rows == 12
    assert_same_candles(parsed.candles, candles)


def test_pairs_priced_near_one_are_never_swapped() -> None:
    key = SeriesKey.parse("Kraken_USDTUSD_d")
    header = "unix,date,symbol,open,high,low,close,Volume USDT,Volume USD"
    row = "1577836800,2020-01-01,USDT/USD,1.001,1.002,0.999,1.0,1000,999.5"
    parsed = parse(text_file(row, header=header), key=key)
    assert parsed.report.swapped_volume_rows == 0
    assert parsed.candles.iloc[0]["volume_base"] == 1000


def test_identical_duplicates_collapse_and_gaps_are_counted() -> None:
    candles = make_candles(BTC_D, 30, seed=7)
    with_gaps = candles.drop(candles.index[[5, 6, 20]])
    body = make_cdd_csv(BTC_D, with_gaps, newest_first=False)
    lines = body.decode().splitlines(keepends=True)
    body = "".join(lines[:10] + lines[8:10] + lines[10:]).encode()  # 2 rows repeated
    parsed = parse(body)
    assert parsed.report.rows_read == 27 + 2
    assert parsed.report.duplicates_collapsed == 2
    assert parsed.report.gaps == 3
    assert_same_candles(parsed.candles, with_gaps)


def test_the_open_candle_is_not_final() -> None:
    candles = make_candles(BTC_D, 10)
    last_open = candles.index[-1]
    during = parse(make_cdd_csv(BTC_D, candles), now=last_open + pd.Timedelta(hours=13))
    assert during.report.partial_rows == 1
    assert during.candles["is_final"].tolist() == [True] * 9 + [False]
    closed = parse(make_cdd_csv(BTC_D, candles), now=last_open + pd.Timedelta(days=1))
    assert closed.report.partial_rows == 0 and closed.candles["is_final"].all()


def test_blank_lines_do_not_shift_line_numbers() -> None:
    body = text_file(DAY2, "", "1577750400,2019-12-31 00:00:00,BTC/USD,100,99,98,99,1,99")
    (reject,) = parse(body).report.rejects
    assert (reject.line, reject.reason) == (5, "open 100.0 is above high 99.0")
    assert parse(text_file(DAY2, "", DAY1, "")).report.rows_read == 2


def bad(row: str) -> bytes:
    return text_file(DAY2, row, DAY0)  # the bad row is line 4


@pytest.mark.parametrize(
    ("row", "says"),
    [
        ("1577836800,2020-01-01,BTC/USD,100,abc,99,101,1,100", "high is 'abc', not a number"),
        ("1577836800,2020-01-01,BTC/USD,100,NaN,99,101,1,100", "high is empty"),
        ("1577836800,2020-01-01,BTC/USD,100,102,99,,1,100", "close is empty"),
        ("1577836800,2020-01-01,BTC/USD,100,102,-99,101,1,100", "must be positive"),
        ("1577836800,2020-01-01,BTC/USD,0,102,99,101,1,100", "must be positive"),
        ("1577836800,2020-01-01,BTC/USD,100,98,99,99,1,100", "high 98.0 is below low 99.0"),
        ("1577836800,2020-01-01,BTC/USD,100,102,99,103,1,100", "close 103.0 is above high"),
        ("1577836800,2020-01-01,BTC/USD,100,102,99,101,-1,100", "not be negative"),
        ("1577836801,2020-01-01,BTC/USD,100,102,99,101,1,100", "not the start of a 1 days"),
        ("1577836800.5,2020-01-01,BTC/USD,100,102,99,101,1,100", "not a whole unix time"),
        ("15778368,2020-01-01,BTC/USD,100,102,99,101,1,100", "between 2000 and 2100"),
        ("1893456000,2030-01-01,BTC/USD,100,102,99,101,1,100", "in the future"),
        ("1577836800,2020-01-01,ETH/USD,100,102,99,101,1,100", "another series"),
        ("1577836800,2020-01-01,BTC/USD,100,102,99,101,1,100,9", "10 fields"),
        ("1577836800,2020-01-01,BTC/USD,100,102,99,101,1", "8 fields"),
        ("1577836800,2020-01-01,BTC/USD,1,000,102,99,101,1,100", "10 fields"),
        ("1577836800,2020-01-01,BTC/USD,100,102,99,101,1,1", "quote volume 1.0 is not base"),
        ("1577836800,2020-01-01,BTC/USD,100,102,99,101,1,10000", "quote volume 10000.0"),
    ],
)
def test_a_bad_row_is_rejected_alone_with_line_reason_and_text(row: str, says: str) -> None:
    parsed = parse(bad(row))
    (reject,) = parsed.report.rejects
    assert reject.line == 4 and says in reject.reason, reject.reason
    assert reject.raw == row
    assert parsed.report.rejected_rows == 1 and parsed.report.rows_read == 3
    assert parsed.candles.index.strftime("%Y-%m-%d").tolist() == ["2019-12-31", "2020-01-02"]


def test_a_rejected_row_keeps_its_candle_time_when_readable() -> None:
    (reject,) = parse(bad("1577836800,2020-01-01,BTC/USD,100,98,99,99,1,100")).report.rejects
    assert reject.time == pd.Timestamp("2020-01-01", tz="UTC")
    (reject,) = parse(bad(",2020-01-01,BTC/USD,100,102,99,101,1,100")).report.rejects
    assert reject.time is None and reject.reason == "unix is empty"


def test_too_many_bad_rows_reject_the_file_naming_the_first() -> None:
    candles = make_candles(BTC_D, 200, seed=2)
    body = make_cdd_csv(BTC_D, candles, newest_first=False)
    lines = body.decode().splitlines(keepends=True)
    for number in (10, 20, 30):  # 1-based file lines 10, 20, 30 (banner, header, rows)
        lines[number - 1] = lines[number - 1].replace("BTC/USD,", "BTC/USD,-", 1)
    body = "".join(lines).encode()
    assert parse(body).report.rejected_rows == 3  # max(3 rows, 1 % of 200) allowed
    with pytest.raises(CDDFormatError) as raised:
        parse_cdd(body, source="test.csv", key=BTC_D, now=NOW, limits=RejectLimits(0.01, 2))
    message = str(raised.value)
    assert message.startswith("test.csv: 3 of 200 rows are bad (197 good), more than the 2 allowed")
    assert "line 10: prices must be positive" in message and "line 30" in message
    assert "CDDF_MAX_REJECTED_SHARE" in message and "Nothing was stored" in message
    assert RejectLimits(0.01, 3).allowed(1_000) == 10 and RejectLimits(0.01, 3).allowed(10) == 3


def test_two_different_candles_for_one_time_are_both_rejected() -> None:
    changed = DAY2.replace(",105,", ",104,")
    parsed = parse(text_file(DAY2, changed, DAY1, DAY0))
    assert [reject.line for reject in parsed.report.rejects] == [3, 4]
    assert "lines 3 and 4 are different candles for 2020-01-02" in parsed.report.rejects[0].reason
    assert parsed.candles.index.strftime("%Y-%m-%d").tolist() == ["2019-12-31", "2020-01-01"]


@pytest.mark.parametrize(
    ("body", "where", "says"),
    [
        (text_file(DAY2, DAY1[:30]), "line 4", "truncated"),
        (text_file(DAY2, header=HEADER.replace(",close", "")), "line 2", "missing column(s) close"),
        (
            text_file(DAY2.rsplit(",", 1)[0], header=HEADER.removesuffix(",Volume USD")),
            "line 2",
            "volume in BTCUSD quote currency",
        ),
        (text_file(), "line 2", "no candle rows"),
        (b"just\nsome\ntext\n", "line 1", "no CSV header"),
        (b"<!DOCTYPE html>\n<html><body>Not found</body></html>", "line 1", "HTML page"),
        (b"  \n", "", "the body is empty"),
        (b"", "", "the body is empty"),
    ],
)
def test_a_bad_file_names_source_line_and_fix(body: bytes, where: str, says: str) -> None:
    with pytest.raises(CDDFormatError) as raised:
        parse(body)
    message = str(raised.value)
    assert message.startswith(f"test.csv {where}".strip())
    assert says in message
    assert any(fix in message for fix in ("download", "check", "fix", "keep", "--source"))


def test_unparseable_date_is_a_bad_row() -> None:
    header = "Date,Symbol,Open,High,Low,Close,Volume From,Volume To"
    body = text_file(
        "2020-01-02,BTCUSD,100,102,99,101,1,100",
        "02/01/2020,BTCUSD,100,102,99,101,1,100",
        header=header,
    )
    (reject,) = parse(body).report.rejects
    assert reject.line == 4 and reject.reason.startswith("Date '02/01/2020' is not a date")


def test_now_must_be_tz_aware() -> None:
    with pytest.raises(ValueError, match="tz-aware"):
        parse(text_file(DAY2), now=pd.Timestamp("2026-01-01"))


def test_real_bitstamp_daily_file() -> None:
    if not REAL_FILE.exists():
        pytest.skip(f"real CDD file {REAL_FILE} is absent")
    now = pd.Timestamp("2025-09-24 15:00", tz="UTC")
    parsed = parse_cdd(REAL_FILE.read_bytes(), source=str(REAL_FILE), key=BTC_D, now=now)
    report, candles = parsed.report, parsed.candles
    assert (report.rows_read, report.candles, report.gaps) == (3954, 3954, 0)
    assert (report.swapped_volume_rows, report.partial_rows) == (1180, 1)
    assert candles.index[0] == pd.Timestamp("2014-11-28", tz="UTC")
    assert candles.index[-1] == pd.Timestamp("2025-09-24", tz="UTC")
    assert not candles["is_final"].iloc[-1] and candles["is_final"].iloc[:-1].all()
    # after the repair every row's volume ratio is a price of the row
    vwap = candles["volume_quote"] / candles["volume_base"]
    traded = candles["volume_base"] > 0
    assert (
        (vwap[traded] > candles["low"][traded] / 2) & (vwap[traded] < candles["high"][traded] * 2)
    ).all()
    first = candles.iloc[0]  # 2014-11-28: the file's last line, volumes swapped in the file
    assert (first["volume_base"], first["volume_quote"]) == (8617.15, 3220878.18)
    assert np.isclose(
        candles.loc[pd.Timestamp("2025-09-23", tz="UTC"), "volume_base"], 1468.03878727
    )


_ISO_SHAPE = re.compile(rb"[0-9]{4}-[0-9]{2}-[0-9]{2}( [0-9]{2}:[0-9]{2}:[0-9]{2})?")
_CELL_BYTES = st.sampled_from(list(b"0123456789-: ,aT/.\x00\xff"))


def iso_reference(cell: bytes) -> int | None:
    """The UTC ns a date field means, by ``datetime.fromisoformat``; None when it is none."""
    if not _ISO_SHAPE.fullmatch(cell):
        return None
    try:
        moment = dt.datetime.fromisoformat(cell.decode()).replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return int(moment.timestamp()) * 1_000_000_000 if 1700 <= moment.year < 2200 else None


@st.composite
def date_cells(draw: st.DrawFn) -> bytes:
    """A date of either width, the same with one byte changed, or any bytes."""
    moment = draw(st.datetimes(dt.datetime(1650, 1, 1), dt.datetime(2300, 1, 1)))
    cell = moment.strftime(draw(st.sampled_from(["%Y-%m-%d", "%Y-%m-%d %H:%M:%S"]))).encode()
    kind = draw(st.sampled_from(["date", "changed", "bytes"]))
    if kind == "changed":
        at = draw(st.integers(0, len(cell) - 1))
        cell = cell[:at] + bytes([draw(_CELL_BYTES)]) + cell[at + 1 :]
    elif kind == "bytes":
        cell = bytes(draw(st.lists(_CELL_BYTES, max_size=24)))
    return cell


@settings(max_examples=300, deadline=None)
@given(st.lists(date_cells(), min_size=1, max_size=40))
def test_iso_dates_equals_fromisoformat_or_hands_over(cells: list[bytes]) -> None:
    """Issue 24.1: the fast date path answers exactly what the reference says, or nothing."""
    body = b"unix,date,close\n" + b"".join(b"%d,%s,1\n" % (i, c) for i, c in enumerate(cells))
    expected = [iso_reference(line.split(b",")[1]) for line in body.splitlines()[1:]]
    dates = iso_dates(body, 0, fields=3, column=1)
    if None in expected:
        assert dates is None
    else:
        assert dates is not None and dates.tolist() == expected


def hourly_rows(first: str, n: int) -> list[str]:
    """``n`` hourly BTC/USD rows from ``first``, newest first."""
    times = pd.date_range(pd.Timestamp(first, tz="UTC"), periods=n, freq="h")[::-1]
    return [
        f"{int(t.timestamp())},{t:%Y-%m-%d %H:%M:%S},BTC/USD,100,102,99,101,1,100.5" for t in times
    ]


@pytest.mark.parametrize(("first", "n"), [("2025-09-23 21:00", 4), ("2025-09-23 23:00", 2)])
def test_an_hourly_file_for_a_daily_series_fails_however_short(first: str, n: int) -> None:
    """Issue 24.5: 4 hourly rows (21:00-00:00) under a daily key were stored: 3 rejected as
    misaligned, the 00:00 row replacing the stored daily candle."""
    with pytest.raises(CDDFormatError) as raised:
        parse(text_file(*hourly_rows(first, n)))
    message = str(raised.value)
    assert message.startswith(f"test.csv: its candles are 0 days 01:00:00 apart (100% of {n - 1}")
    assert "series timeframe 'd' is 1 days" in message and "another timeframe" in message


def test_a_short_file_is_stored_while_its_bad_rows_do_not_outnumber_its_good_ones() -> None:
    """A young pair's short file is stored; one whose bad rows outnumber its good ones is
    not, though CDDF_MAX_REJECTED_ROWS (3) exceeds its bad rows (issue 24.5)."""
    day = [
        f"{1577836800 + i * 86400},2020-01-{i + 1:02d},BTC/USD,100,102,99,101,1,100.5"
        for i in range(5)
    ]
    negative = [row.replace(",100,102,", ",-100,102,") for row in day]
    assert parse(text_file(day[1], day[0])).report.candles == 2
    one_of_two = parse(text_file(negative[1], day[0])).report
    assert (one_of_two.candles, one_of_two.rejected_rows) == (1, 1)
    with pytest.raises(CDDFormatError) as raised:
        parse(text_file(negative[4], negative[3], negative[2], day[1], day[0]))
    assert str(raised.value).startswith(
        "test.csv: 3 of 5 rows are bad (2 good), more than the 2 allowed"
    )
    # all-zero rows (the pair was not trading yet) are no good rows
    zero = [row.replace(",100,102,99,101,1,100.5", ",0,0,0,0,0,0") for row in day]
    with pytest.raises(CDDFormatError, match="2 of 5 rows are bad \\(1 good\\)"):
        parse(text_file(negative[4], negative[3], day[2], zero[1], zero[0]))
