"""CryptoDataDownload: download (``client``) and parse (``parser``) candle files."""

from cdd.errors import (
    CDDDownloadError,
    CDDFormatError,
    CDDNetworkError,
    DownloadTooLargeError,
    SeriesNotFoundError,
)
from cdd.parser import ParsedCandles, ParseReport, parse_cdd
from cdd.rejects import Reject, RejectLimits

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
