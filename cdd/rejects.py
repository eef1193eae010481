"""Bad rows of a sound file: collected per row, kept aside, and the limit past which a file fails.

A row check marks rows with a reason; the first reason found for a row is the one kept::

    faults = RowFaults(len(values), skip=all_zero)
    faults.add(values[:, HIGH] < values[:, LOW], lambda row: f"high {...} is below low {...}")
    faults.check_limit(limits, lines, source=source)   # CDDFormatError past the limit

Reasons are formatted only for the rows that are kept as rejects (or named in the error), so
a file of a million bad rows costs no million strings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cdd.errors import CDDFormatError

_NAMED_IN_ERROR = 3


@dataclass(frozen=True)
class RejectLimits:
    """A file fails when more than ``max(rows, share x its rows)`` of its rows are bad, or
    when its bad rows outnumber its good ones.

    The second rule keeps ``rows`` from accepting a short file that is mostly bad (3 bad
    rows of 4); a young pair's short file of good rows, or with one bad row beside one good
    one, is still stored. All-zero rows (not trading yet) are neither good nor bad:
    ``judged`` rows are the others (default: ``rows_read``).

    >>> [RejectLimits().allowed(n) for n in (1, 2, 3, 4, 7, 1_000)]
    [0, 1, 1, 2, 3, 10]
    """

    share: float = 0.01  # CDDF_MAX_REJECTED_SHARE
    rows: int = 3  # CDDF_MAX_REJECTED_ROWS

    def allowed(self, rows_read: int, judged: int | None = None) -> int:
        """How many bad rows a file of ``rows_read`` rows may have and still be stored."""
        at_most_good = (rows_read if judged is None else judged) // 2
        return min(max(self.rows, int(self.share * rows_read)), at_most_good)


@dataclass(frozen=True)
class Reject:
    """A bad row: its 1-based file line, candle time when readable, why, and its raw text."""

    line: int
    time: pd.Timestamp | None
    reason: str
    raw: str


class RowFaults:
    """The bad rows of one file's data rows (row i is file line ``lines[i]``)."""

    def __init__(self, rows: int, *, skip: np.ndarray | None = None) -> None:
        self._code = np.full(rows, -1, dtype=np.int16)  # index into _reasons, -1: no fault
        self._skip = np.zeros(rows, dtype=bool) if skip is None else skip
        self._reasons: list[Callable[[int], str]] = []
        self.extra: list[tuple[int, str]] = []  # (line, reason) of rows never read as a row

    def add(self, bad: np.ndarray, reason: Callable[[int], str]) -> None:
        """Mark the ``bad`` rows not yet marked (nor skipped) with ``reason(row)``."""
        new = bad & (self._code < 0) & ~self._skip
        if new.any():
            self._code[new] = len(self._reasons)
            self._reasons.append(reason)

    @property
    def mask(self) -> np.ndarray:
        return self._code >= 0

    def count(self) -> int:
        return int(self.mask.sum()) + len(self.extra)

    def reason(self, row: int) -> str:
        return self._reasons[self._code[row]](row)

    def first(self, lines: np.ndarray, n: int) -> list[tuple[int, str]]:
        """The ``n`` bad rows nearest the top of the file as (line, reason)."""
        rows = np.flatnonzero(self.mask)
        found = [(int(lines[row]), self.reason(int(row))) for row in rows[:n]]
        return sorted(found + self.extra)[:n]

    def check_limit(
        self, limits: RejectLimits, lines: np.ndarray, rows_read: int, *, source: str
    ) -> None:
        """Fail the whole file when it has more bad rows than ``limits`` allow."""
        judged = len(self._code) - int(self._skip.sum()) + len(self.extra)  # not all-zero
        count, allowed = self.count(), limits.allowed(rows_read, judged)
        if count <= allowed:
            return
        named = "; ".join(f"line {line}: {why}" for line, why in self.first(lines, _NAMED_IN_ERROR))
        raise CDDFormatError(
            f"{source}: {count:,} of {rows_read:,} rows are bad ({judged - count:,} good), more "
            f"than the {allowed:,} allowed (CDDF_MAX_REJECTED_ROWS={limits.rows}, "
            f"CDDF_MAX_REJECTED_SHARE={limits.share:g}, and no more than the good rows); the "
            f"first: {named}. Nothing was stored: check that this is the series' "
            "CryptoDataDownload file (--source) or download it again"
        )

    def rejects(self, lines: np.ndarray, times: np.ndarray, raw: Callable[[int], str]) -> list:
        """Every bad row as a Reject, in file order (``times`` int64 ns, 0 where unreadable)."""
        found = [
            Reject(
                line=int(lines[row]),
                time=None if times[row] == 0 else pd.Timestamp(int(times[row]), tz="UTC"),
                reason=self.reason(int(row)),
                raw=raw(int(lines[row])),
            )
            for row in np.flatnonzero(self.mask)
        ]
        found += [Reject(line, None, why, raw(line)) for line, why in self.extra]
        return sorted(found, key=lambda reject: reject.line)


def line_reader(data: bytes) -> Callable[[int], str]:
    """A function from a 1-based line number of ``data`` to that line's text (no line end)."""
    starts: np.ndarray | None = None

    def line_text(number: int) -> str:
        nonlocal starts
        if starts is None:  # built once, on the first call: only files with rejects pay
            ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
            starts = np.concatenate([[0], ends + 1])
        if number - 1 >= len(starts):
            return ""
        begin = int(starts[number - 1])
        end = data.find(b"\n", begin)
        text = data[begin : len(data) if end < 0 else end]
        return text.decode("utf-8", "replace").rstrip("\r")[:1000]

    return line_text
