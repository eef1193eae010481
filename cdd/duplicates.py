"""The same candle time twice in one file: collapse, supersede or reject.

CDD files change format generation part-way: newer rows carry a millisecond unix time and a
``YYYY-MM-DD HH:MM:SS`` date, older rows a second unix time and (hourly) a ``HH-AM`` date. At
the change the same candle can appear in both (the older copy with rounded values or other
volumes). Per candle time:

- identical copies collapse into one (``collapsed``);
- copies of different generations: the newest generation's row is kept, the other copies are
  dropped as ``superseded`` (a warning, not an error);
- two different rows of the newest generation present: neither can be trusted, so every row
  of that time is rejected and the stored candle (if any) stays as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cdd.validate import iso


@dataclass
class Duplicates:
    keep: np.ndarray  # bool over the sorted rows
    collapsed: int = 0
    superseded: int = 0
    conflicts: dict[int, str] = field(default_factory=dict)  # position -> reason


def resolve_duplicates(
    times: np.ndarray, values: np.ndarray, generation: np.ndarray, lines: np.ndarray
) -> Duplicates:
    """Which of the time-sorted rows to keep (``generation``: higher is newer)."""
    keep = np.ones(len(times), dtype=bool)
    repeat = np.flatnonzero(times[1:] == times[:-1])
    result = Duplicates(keep)
    if len(repeat) == 0:
        return result
    starts = repeat[np.r_[True, np.diff(repeat) > 1]]  # first row of each run of equal times
    for start in starts.tolist():
        end = start + 1
        while end < len(times) and times[end] == times[start]:
            end += 1
        _resolve_group(np.arange(start, end), times, values, generation, lines, result)
    return result


def _resolve_group(
    group: np.ndarray,
    times: np.ndarray,
    values: np.ndarray,
    generation: np.ndarray,
    lines: np.ndarray,
    result: Duplicates,
) -> None:
    newest = group[generation[group] == generation[group].max()]
    first = newest[0]
    same_as_first = (values[newest] == values[first]).all(axis=1)
    if not same_as_first.all():
        shown = " and ".join(str(int(line)) for line in sorted(lines[group].tolist()))
        for position in group.tolist():
            result.keep[position] = False
            result.conflicts[position] = (
                f"lines {shown} are different candles for {iso(times[position])} in one "
                "format generation; neither is stored (the stored candle stays)"
            )
        return
    for position in group.tolist():
        if position == first:
            continue
        result.keep[position] = False
        if (values[position] == values[first]).all():
            result.collapsed += 1
        else:
            result.superseded += 1
