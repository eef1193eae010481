"""CryptoDataDownload: download (``client``) and parse (``parser``) candle files."""

from flows.cdd.errors import (
    CDDDownloadError,
    CDDFormatError,
    CDDNetworkError,
    DownloadTooLargeError,
    SeriesNotFoundError,
)
from flows.cdd.parser import ParsedCandles, ParseReport, parse_cdd
from flows.cdd.rejects import Reject, RejectLimits

__all__ = [
    "CDDDownloadError",
    "CDDFormatError",
    "CDDNetworkError",
    "DownloadTooLargeError",
    "ParseReport",
    "ParsedCandles",
    "Reject",
    "RejectLimits",
    "SeriesNotFoundError",
    "parse_cdd",
]
