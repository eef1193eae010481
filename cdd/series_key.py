"""Series keys are CryptoDataDownload file stems: ``<Exchange>_<PAIR>_<timeframe>``.

>>> key = SeriesKey.parse("Bitstamp_BTCUSD_d")
>>> key.exchange, key.pair, key.timeframe, key.period
('Bitstamp', 'BTCUSD', 'd', Timedelta('1 days 00:00:00'))
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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


@dataclass(frozen=True)
class SeriesKey:
    exchange: str
    pair: str
    timeframe: str

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

    @property
    def key(self) -> str:
        return f"{self.exchange}_{self.pair}_{self.timeframe}"

    @property
    def period(self) -> pd.Timedelta:
        """The length of one candle."""
        return TIMEFRAMES[self.timeframe]

    @property
    def file_name(self) -> str:
        return f"{self.key}.csv"

    def __str__(self) -> str:
        return self.key
