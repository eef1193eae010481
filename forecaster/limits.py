"""A time limit that training enforces itself, between batches.

>>> limit = TimeLimit.of(600)
>>> limit.check("fit epoch 1/200, batch 1")   # raises TrainingTimeout once 600 s have passed

`LSTMForecaster.fit` and ``update`` take ``time_limit`` (seconds) and check it after every
batch: a training that runs past it stops there with a `TrainingTimeout`, in whatever thread
it runs. A timeout imposed from outside cannot do that for a thread (Python delivers an
exception to a thread only between bytecodes, and not at all during a long native call).
"""

from __future__ import annotations

import time
from dataclasses import dataclass


class TrainingTimeout(TimeoutError):
    """A fit or fine-tune ran past the ``time_limit`` its caller gave; ``where`` it stopped
    (``"fit epoch 3/200, batch 7"``) and after how many ``seconds``."""

    def __init__(self, message: str, where: str, seconds: float) -> None:
        super().__init__(message)
        self.where, self.seconds = where, seconds


@dataclass(frozen=True)
class TimeLimit:
    """``seconds`` from ``started`` (a `time.monotonic` reading)."""

    seconds: float
    started: float

    @classmethod
    def of(cls, seconds: float | None) -> TimeLimit | None:
        """A limit of ``seconds`` from now (None: no limit); ``seconds`` must be > 0."""
        if seconds is None:
            return None
        if not seconds > 0:
            raise ValueError(f"time_limit must be > 0 seconds, got {seconds!r}")
        return cls(float(seconds), time.monotonic())

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def check(self, where: str) -> None:
        """Raise `TrainingTimeout` naming ``where`` once the limit has run out."""
        elapsed = self.elapsed()
        if elapsed > self.seconds:
            raise TrainingTimeout(
                f"training stopped at {where}: its time limit of {self.seconds:g} s ran out "
                f"({elapsed:.1f} s)",
                where,
                elapsed,
            )
