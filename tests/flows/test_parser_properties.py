"""The CDD parser against the reference parser on generated files (issue 24, item 2).

For every generated file (``cdd_strategies``) the parser raises nothing but ``CDDFormatError``;
where the reference (``reference_parser``) fails the file, the parser fails it with the same
class of error and nothing is stored; otherwise the candles (times, values, ``is_final``) and
the rejected lines (line, class of reason) are the reference's. Each fast path is held to it:
the date reader of ``fast_dates`` on and off, the vectorised read with and without the
row-by-row search, and the stores (SQLite, PostgreSQL's binary COPY) through the real ingest.

Profiles: ``ci`` (default: 400 examples per fast path, 40 per database; about 25 s here) and
``fuzz`` (5,000): ``CDDF_HYPOTHESIS_PROFILE=fuzz pytest tests/flows/test_parser_properties.py``
(registered when this module loads, so not by pytest's ``--hypothesis-profile``). The bench
``bench/fuzz_parser.py`` runs the same generator over 100,000 files.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings

from cdd.errors import CDDFormatError
from cdd.parser import parse_cdd
from cdd.series_key import SeriesKey
from db.candles import load_candles
from db.engine import make_engine, migrate
from db.ingest_rejects import load_rejects
from flows.ingest import ingest_series
from tests.flows.cdd_strategies import CDDCase, case_from_seed, cdd_cases
from tests.flows.reference_parser import (
    FAST_PATHS,
    REJECT_CLASSES,
    Expected,
    differences,
    message_class,
    parse_with,
    reference_parse,
)

settings.register_profile("ci", max_examples=400, deadline=None, derandomize=True)
settings.register_profile("fuzz", max_examples=5_000, deadline=None)
PROFILE = settings.get_profile(os.environ.get("CDDF_HYPOTHESIS_PROFILE", "ci"))  # these tests
ROOT = Path(__file__).resolve().parents[2]
NOW = pd.Timestamp("2026-01-01", tz="UTC")


def expected_of(case: CDDCase) -> Expected:
    return reference_parse(case.data, case.key, case.now.value)


@pytest.mark.parametrize("path", list(FAST_PATHS))
@PROFILE
@given(case=cdd_cases())
def test_the_parser_agrees_with_the_reference(path: str, case: CDDCase) -> None:
    parsed, error = parse_with(case.data, case.key, case.now, path)
    assert differences(expected_of(case), parsed, error) == [], case.story


_KEYS = itertools.count()


@settings(PROFILE, max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cdd_cases(max_damage=2))
def test_stored_candles_and_rejects_equal_the_reference(
    database_url: str, tmp_path: Path, case: CDDCase
) -> None:
    """Through the real ingest (PostgreSQL: compare, binary COPY, read back in binary)."""
    engine = _engine(database_url)
    key = SeriesKey(f"Fuzz{next(_KEYS)}", case.key.pair, case.key.timeframe)
    path = tmp_path / key.file_name
    path.write_bytes(case.data)
    expected = expected_of(case)
    try:
        ingest_series(key.key, str(path), engine=engine, now=case.now)
    except CDDFormatError:
        assert expected.error is not None, case.story
    else:
        assert expected.error is None, case.story
    with engine.connect() as connection:
        stored = connection.execute(
            sa.text("SELECT count(*) FROM candles JOIN series ON series.id = candles.series_id "
                    "WHERE series.key = :key"), {"key": key.key}
        ).scalar_one()  # fmt: skip
    if expected.error is not None:
        assert stored == 0, case.story
        return
    candles = load_candles(engine, key.key, final_only=False) if stored else None
    times = [] if candles is None else candles.index.as_unit("ns").asi8.tolist()
    assert times == sorted(expected.candles), case.story
    for time, row in zip(times, candles.itertuples() if candles is not None else [], strict=True):
        values, final = expected.candles[time]
        assert list(row[1:7]) == pytest.approx(list(values), rel=1e-12), case.story
        assert row.is_final == final, case.story
    rejects = load_rejects(engine, series=key.key)
    got = {int(r.line): message_class(r.reason, REJECT_CLASSES) for r in rejects}
    assert got == expected.rejects, case.story


_ENGINES: dict[str, sa.Engine] = {}


def _engine(url: str) -> sa.Engine:
    """One migrated engine per database of the test (hypothesis runs the body many times)."""
    if url not in _ENGINES:
        for engine in _ENGINES.values():  # the previous test's database is gone
            engine.dispose()
        _ENGINES.clear()
        _ENGINES[url] = make_engine(url)
        migrate(_ENGINES[url], "head")
    return _ENGINES[url]


def test_no_generated_file_kills_the_process(tmp_path: Path) -> None:
    """fast_dates reads bytes with numpy: a crash there must fail this test, not end pytest."""
    files = [case_from_seed(seed) for seed in range(300)]
    two_generations = _two_generations_file()  # issue 24.1: 19- then 10-wide dates
    for i, case in enumerate([*files, two_generations]):
        (tmp_path / f"{i}.csv").write_bytes(case.data)
        (tmp_path / f"{i}.key").write_text(f"{case.key}\n{case.now.isoformat()}")
    script = (
        "import sys, pathlib, pandas as pd\n"
        "from cdd.series_key import SeriesKey\n"
        "from cdd.errors import CDDFormatError\n"
        "from cdd.parser import parse_cdd\n"
        "for path in sorted(pathlib.Path(sys.argv[1]).glob('*.csv')):\n"
        "    key, now = path.with_suffix('.key').read_text().split('\\n')\n"
        "    try:\n"
        "        parse_cdd(path.read_bytes(), source=path.name, key=SeriesKey.parse(key),\n"
        "                  now=pd.Timestamp(now))\n"
        "    except CDDFormatError:\n"
        "        pass\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"


def _two_generations_file() -> CDDCase:
    key = SeriesKey.parse("Binance_BTCUSDT_d")
    newer = [_day_row(1623369600 - 86400 * i, ms=True) for i in range(600)]
    older = [_day_row(1513555200 - 86400 * i, ms=False) for i in range(5)]
    header = "unix,date,symbol,open,high,low,close,Volume BTC,Volume USDT,tradecount"
    data = "\n".join([header, *newer, *older]).encode() + b"\n"
    return CDDCase(data, key, NOW, "issue 24.1 two generations")


def _day_row(second: int, *, ms: bool) -> str:
    """A Binance daily row: ``ms`` the newer generation (ms, 19-wide date), else s.0, 10-wide."""
    day = pd.Timestamp(second, unit="s")
    time = f"{second * 1000},{day:%Y-%m-%d} 00:00:00" if ms else f"{second}.0,{day:%Y-%m-%d}"
    return f"{time},BTC/USDT,100,110,90,105,2,200,5"


# regression tests: each a bug the fuzzer found, on a few rows shaped like a real file

BTC_D = SeriesKey.parse("Bitstamp_BTCUSD_d")
HEADER = "unix,date,symbol,open,high,low,close,Volume BTC,Volume USD"
ROWS = [
    "1577836800,2020-01-01,BTC/USD,7160,7250,7100,7176,2.9,20900",
    "1577923200,2020-01-02,BTC/USD,7176,7200,6950,6980,3.5,24500",
    "1578009600,2020-01-03,BTC/USD,6980,7400,6900,7340,4.1,29400",
    "1578096000,2020-01-04,BTC/USD,7340,7390,7270,7350,1.2,8800",
    "1578182400,2020-01-05,BTC/USD,7350,7480,7310,7360,2.0,14700",
]


def body(*rows: str, header: str = HEADER) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


def parse(data: bytes, key: SeriesKey = BTC_D):
    return parse_cdd(data, source="fixture.csv", key=key, now=NOW)


def rejected(data: bytes, key: SeriesKey = BTC_D) -> dict[int, str]:
    return {r.line: r.reason for r in parse(data, key).report.rejects}


def test_a_byte_that_is_no_utf8_rejects_its_row() -> None:
    """Was UnicodeDecodeError out of pandas (a flipped byte in a volume)."""
    data = body(*ROWS[:2], ROWS[2].replace("4.1", "4.\xd11"), *ROWS[3:]).replace(
        "\xd1".encode(), b"\xd1"
    )
    assert list(rejected(data)) == [4]
    assert len(parse(data).candles) == 4


def test_symbols_read_as_numbers_are_another_pair() -> None:
    """Was AttributeError: the symbol column's categories were floats."""
    rows = [row.replace("BTC/USD", "6600") for row in ROWS]
    with pytest.raises(CDDFormatError, match="is not the pair of series"):
        parse(body(*rows))


def test_a_unix_column_without_a_date_column() -> None:
    """Was UnboundLocalError (the dates of a file with unix but no date column)."""
    header = HEADER.replace("date,", "")
    rows = [",".join(cells for i, cells in enumerate(row.split(",")) if i != 1) for row in ROWS]
    assert len(parse(body(*rows, header=header)).candles) == 5


def test_an_unclosed_quote_fails_the_file_at_its_line() -> None:
    """pandas joined the lines after it into one cell (rows lost, or a usecols ValueError)."""
    data = body(*ROWS[:2], ROWS[2].replace("7340", '"7340'), *ROWS[3:])
    with pytest.raises(CDDFormatError, match="line 4: a quote does not wrap a whole cell"):
        parse(data)


def test_a_quote_inside_a_cell_fails_the_file_at_its_line() -> None:
    """Quotes even in number, but ``0"3:45`` opened none for pandas: the open one at the cut
    end of the file was "EOF inside string", not the cut (fuzz file 6000000569)."""
    last = ROWS[4].replace("2020-01-05", '2020-0"1-05').replace("14700", '"147')
    data = body(*ROWS[:4], last).rstrip(b"\n")
    with pytest.raises(CDDFormatError, match="line 6: a quote does not wrap a whole cell"):
        parse(data)


@pytest.mark.parametrize("damage", [b"\r", b"\x00"])
def test_a_carriage_return_or_nul_inside_a_row_rejects_that_row_only(damage: bytes) -> None:
    """pandas split (CR) or shifted (NUL) the row: later rejects named the line before theirs."""
    rows = [*ROWS[:4], ROWS[4].replace("7480", "abc")]
    data = body(*rows).replace(b"7176,2.9", b"7176," + damage + b"2.9")
    assert sorted(rejected(data)) == [2, 6]
    assert "carriage return or NUL" in rejected(data)[2]
    assert "'abc', not a number" in rejected(data)[6]


@pytest.mark.parametrize("damage", ["\x00", "\r", '"', "\x0b"])
def test_a_nul_carriage_return_or_stray_quote_in_the_header_fails_the_file(damage: str) -> None:
    """A header ending ``\\r\\r\\n`` was blanked as a misshapen row ("not a readable CSV");
    with ``date",...,Volume "USD`` pandas read other names: ValueError out of ``read_dates``;
    ``Volume AD\\v`` was "not a readable CSV" (fuzz file 8000001912)."""
    header = HEADER.replace(",open", f",{damage}open").replace("USD", f"{damage}USD")
    header = header.replace("BTC", f"BTC{damage}") if damage == "\x0b" else header
    with pytest.raises(CDDFormatError, match="line 1: the header holds a NUL byte, a carr"):
        parse(body(*ROWS, header=header))


def test_a_cell_that_is_no_number_after_a_blank_line_names_its_own_line() -> None:
    """The cells that are no number kept their index from before blank lines were dropped."""
    data = body(ROWS[0], "", ROWS[1], ROWS[2].replace("6900", "6,9OO"), *ROWS[3:])
    data = data.replace(b"6,9OO", b'"6,9OO"')
    assert list(rejected(data)) == [5]
    assert "'6,9OO', not a number" in rejected(data)[5]


def test_an_extra_field_beside_a_missing_one_shifts_no_cell() -> None:
    """The comma count balanced out, and pandas (usecols) read both rows shifted."""
    extra = ROWS[1].replace("7176,7200", "7176,1,7200")
    missing = ROWS[3].replace(",BTC/USD", "")
    reasons = rejected(body(ROWS[0], extra, ROWS[2], missing, ROWS[4]))
    assert sorted(reasons) == [3, 5]
    assert all("fields where the header has 9" in reason for reason in reasons.values())


def test_a_short_iso_date_is_no_date() -> None:
    """pandas reads ``2020-01`` as 2020-01-01: a date-only file stored 01-15's prices there."""
    header = "date,symbol,open,high,low,close,Volume BTC,Volume USD"
    rows = [row.split(",", 1)[1] for row in ROWS]
    rows[2] = rows[2].replace("2020-01-03", "2020-01")
    got = parse(body(*rows, header=header))
    assert "is not a date of the forms" in {r.line: r.reason for r in got.report.rejects}[4]
    assert pd.Timestamp("2020-01-01", tz="UTC") in got.candles.index
    assert got.candles.loc["2020-01-01", "close"].item() == 7176


def test_a_line_of_spaces_is_a_blank_line() -> None:
    assert rejected(body(ROWS[0], "   ", *ROWS[1:])) == {}


def test_a_date_past_pandas_range_is_no_date() -> None:
    """Was OutOfBoundsDatetime (a flipped digit: year 5023 of an hourly ``HH-AM`` date)."""
    key = SeriesKey.parse("Binance_ADAUSDT_1h")
    header = "unix,date,symbol,open,high,low,close,Volume ADA,Volume USDT"
    rows = [
        f"{1700186400 + 3600 * i},{pd.Timestamp(1700186400 + 3600 * i, unit='s'):%Y-%m-%d %I-%p},"
        "ADA/USDT,0.38,0.39,0.37,0.38,1000,380"
        for i in range(5)
    ]
    rows[2] = rows[2].replace(",2023-", ",5023-")
    reasons = rejected(body(*rows, header=header), key)
    assert list(reasons) == [4] and "is not a date of the forms" in reasons[4]


def test_the_cut_line_is_the_files_last_line_not_the_last_sound_one() -> None:
    """A misshapen last line was blanked first; the row above it was then judged as cut."""
    rows = [*ROWS[:4], ROWS[4].replace("1578182400", "1578182400.5"), "," * 20]
    parsed = parse(body(*rows) + b" ")
    assert sorted(r.line for r in parsed.report.rejects) == [6, 7]


REAL = Path(__file__).resolve().parents[3] / "shared" / "data"
REAL_FILES = [
    "Bitstamp_BTCUSD_d.csv",
    "multi/Bitfinex_ETHUSD_d.csv",
    "multi/Binance_ADAUSDT_1h.csv",
    "multi/Bitstamp_ETHUSD_d.csv",
]


@pytest.mark.parametrize("name", REAL_FILES)
@pytest.mark.parametrize("path", list(FAST_PATHS))
def test_real_files_agree_with_the_reference(name: str, path: str) -> None:
    """Real CDD files (../shared/data): swapped volumes, ms/s seams, zero rows, tradecount."""
    file = REAL / name
    if not file.exists():
        pytest.skip(f"real CDD file {file} is absent (../shared/data is not part of the repo)")
    key = SeriesKey.parse(file.stem)
    now = pd.Timestamp("2025-09-24 12:00", tz="UTC")
    data = file.read_bytes()
    parsed, error = parse_with(data, key, now, path)
    assert differences(reference_parse(data, key, now.value), parsed, error) == []


def test_a_cell_past_the_csv_modules_limit_rejects_its_row() -> None:
    """Was ``_csv.Error: field larger than field limit`` out of the row search (fuzz file
    9000062905: a 144,499-character line beside a row with an extra field)."""
    long = ROWS[1].replace("6980", "6" * 150_000)
    extra = ROWS[3] + ",1,2"
    reasons = rejected(body(ROWS[0], long, ROWS[2], extra, ROWS[4]))
    assert sorted(reasons) == [3, 5]
    assert "a field longer than 131,072 characters" in reasons[3]
