"""The errors of the CryptoDataDownload client and parser; each message says what to do."""

from __future__ import annotations


class CDDFormatError(ValueError):
    """The body is not a valid CryptoDataDownload candle file (message: source, line, fix).

    A NUL byte quoted from the file is written ``\\x00``: the message is stored as
    ``ingest_runs.error``, and PostgreSQL text cannot hold a NUL.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message.replace("\x00", "\\x00"))


class CDDDownloadError(RuntimeError):
    """The file could not be fetched; retrying will not help (404, oversize, missing file)."""


class CDDNetworkError(CDDDownloadError):
    """A network failure a later retry may fix: unreachable host, timeout, 429 or 5xx."""


class SeriesNotFoundError(CDDDownloadError):
    """CryptoDataDownload answered 404: it has no file for this series."""


class DownloadTooLargeError(CDDDownloadError):
    """The body is larger than ``http_max_bytes``."""


class DownloadDeadlineError(CDDDownloadError):
    """The whole download took longer than ``http_deadline`` (not retried: it would wait again)."""
