"""The model's per-epoch lines let through to the flow run logs while it trains."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# trainings in progress (series train side by side in threads) and the level before the first
_progress_lock = threading.Lock()


_progress: dict[str, int] = {"active": 0, "previous": logging.NOTSET}


@contextmanager
def training_progress() -> Iterator[None]:
    """Let the model's per-epoch lines (``forecaster`` logger, INFO) through while it trains.

    They reach the flow run logs where PREFECT_LOGGING_EXTRA_LOGGERS=forecaster (the CLI and
    prefect.yaml set it). Counted across threads: the level is restored when the last of the
    trainings running side by side ends, not when the first does (or the logger stays at INFO).
    """
    log = logging.getLogger("forecaster")
    with _progress_lock:
        if _progress["active"] == 0:
            _progress["previous"] = log.level
            log.setLevel(logging.INFO)
        _progress["active"] += 1
    try:
        yield
    finally:
        with _progress_lock:
            _progress["active"] -= 1
            if _progress["active"] == 0:
                log.setLevel(_progress["previous"])
