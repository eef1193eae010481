"""Series keys are CryptoDataDownload file stems: ``<Exchange>_<PAIR>_<timeframe>``.

>>> key = SeriesKey.parse("Bitstamp_BTCUSD_d")
>>> key.exchange, key.pair, key.timeframe, key.period
('Bitstamp', 'BTCUSD', 'd', Timedelta('1 days 00:00:00'))
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

# The longest key and exchange name stored (the columns series.key and series.exchange are
# declared with these lengths); the pattern bounds the pair and the timeframe.
MAX_LENGTH = {"key": 100, "exchange": 50}
TIMEFRAMES: dict[str, pd.Timedelta] = {
    "d": pd.Timedelta(days=1),
    "1h": pd.Timedelta(hours=1),
    "minute": pd.Timedelta(minutes=1),
}
_KEY = re.compile(
    r"^(?P<exchange>[A-Za-z][A-Za-z0-9]*)_(?P<pair>[A-Z0-9]{4,20})_(?P<timeframe>[a-z0-9]+)$"
)


def timeframe_of(key: str) -> str:
    """The timeframe part of a series key, unchecked (``Bitstamp_BTCUSD_1h`` → ``1h``).

    >>> timeframe_of("Bitstamp_BTCUSD_1h")
    '1h'
    """
    return key.rsplit("_", 1)[-1]


class SeriesKey(str):
    """A valid series key: the key's text itself (a ``str``, equal to it, stored and shown as
    it) with its parts. Parse a key once, where it enters (a CLI option, a flow's parameter,
    ``CDDF_SERIES``), and hand the `SeriesKey` on: `of` takes one as it is.

    As a flow parameter (``series: SeriesKey``) Prefect parses a text it is given and passes a
    `SeriesKey` through; both are stored in Prefect's database as the key's text.

    >>> SeriesKey.parse("Bitstamp_BTCUSD_d") == "Bitstamp_BTCUSD_d"
    True
    """

    exchange: str
    pair: str
    timeframe: str

    def __new__(cls, exchange: str, pair: str, timeframe: str) -> SeriesKey:
        key = super().__new__(cls, f"{exchange}_{pair}_{timeframe}")
        key.exchange, key.pair, key.timeframe = exchange, pair, timeframe
        return key

    def __getnewargs__(self) -> tuple[str, str, str]:  # pickles (Prefect results) by its parts
        return self.exchange, self.pair, self.timeframe

    @classmethod
    def parse(cls, key: str) -> SeriesKey:
        """Parse ``Exchange_PAIR_timeframe``; a ValueError says what a valid key looks like."""
        match = _KEY.match(key.strip()) if isinstance(key, str) else None
        if match is None or match["timeframe"] not in TIMEFRAMES:
            raise ValueError(
                f"invalid series key {key!r}: expected <Exchange>_<PAIR>_<timeframe> as in the "
                f"CryptoDataDownload file name, with timeframe one of {', '.join(TIMEFRAMES)} "
                "(for example Bitstamp_BTCUSD_d, Bitstamp_ETHUSD_1h, Binance_BTCUSDT_minute)"
            )
        for part, text in (("key", match[0]), ("exchange", match["exchange"])):
            limit = MAX_LENGTH[part]
            if len(text) > limit:
                raise ValueError(
                    f"series key {key!r} is too long: its {part} has {len(text)} characters, "
                    f"the database stores at most {limit} (column series.{part}); use the "
                    "CryptoDataDownload file name, e.g. Bitstamp_BTCUSD_d"
                )
        return cls(match["exchange"], match["pair"], match["timeframe"])

    @classmethod
    def of(cls, key: str) -> SeriesKey:
        """``key`` itself when it is a `SeriesKey` already (parsed where it entered), else
        parsed."""
        return key if isinstance(key, SeriesKey) else cls.parse(key)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_plain_validator_function(
            cls.of,
            json_schema_input_schema=core_schema.str_schema(),
            serialization=core_schema.to_string_ser_schema(),
        )

    @property
    def key(self) -> str:
        """The key's text as a plain ``str``."""
        return str.__str__(self)

    @property
    def period(self) -> pd.Timedelta:
        """The length of one candle."""
        return TIMEFRAMES[self.timeframe]

    @property
    def file_name(self) -> str:
        return f"{self}.csv"

    def __str__(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"SeriesKey({str.__repr__(self)})"
