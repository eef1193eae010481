"""CryptoDataDownload: download (``client``) and parse (``parser``) candle files."""

from flows.cdd.errors import (
    CDDDownloadError,
    CDDFormatError,
    CDDNetworkError,
    DownloadTooLargeError,
    SeriesNotFoundError,
)
from flows.cdd.parser import ParsedCandles, ParseReport, parse_cdd

__all__ = [
    "CDDDownloadError",
    "CDDFormatError",
    "CDDNetworkError",
    "DownloadTooLargeError",
    "ParseReport",
    "ParsedCandles",
    "SeriesNotFoundError",
    "parse_cdd",
]
