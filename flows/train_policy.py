"""The auto retrain policy of a model (one series' or a timeframe group's global one).

See `flows.train` for the rules; `flows.train_global` applies them to a group with its
pooled recent skill.

Retrain days are spread over the week: each model has its own retrain days, every
``retrain_after`` candles from a stable offset (a hash of its scope's name, `retrain_offset`),
and the policy retrains once one of them has passed since the last retrain. So N series'
retrains land on different days, never more than ``retrain_after`` candles apart; a model
first trained off its day retrains once early, on its first retrain day. `retrain_day_between`
is the rule for any walk over candle times: a backfill's retrain blocks open on the same days
(`flows.backfill_plan`), so it serves what the daily runs would have.

>>> retrain_offset("Bitstamp_BTCUSD_d", 7), retrain_offset("global d", 7)
(3, 4)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import pandas as pd

from db.registry import VersionInfo
from settings import SeriesConfig, get_settings
from settings.series import with_new_defaults


@dataclass(frozen=True)
class TrainPlan:
    action: Literal["retrain", "finetune", "keep"]
    reason: str


def retrain_offset(name: str, every: int) -> int:
    """The stable offset in ``[0, every)`` of the retrain days of the model called ``name``."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big") % every


def retrain_day_between(
    name: str, every: int, candle: timedelta, last: pd.Timestamp, now: pd.Timestamp
) -> bool:
    """Whether a retrain day of model ``name`` (every ``every`` candles of length ``candle``)
    falls in ``(last, now]``: the candle times ``t`` with ``(t // candle + offset) % every == 0``.
    """
    step = pd.Timedelta(candle).value
    offset = retrain_offset(name, every)
    return (now.value // step + offset) // every > (last.value // step + offset) // every


def scope_name(config: SeriesConfig) -> str:
    """The name of the model ``config`` trains: the series' key, or ``global <timeframe>``."""
    return config.series if config.group is None else f"global {config.group}"


def auto_plan(
    latest: VersionInfo,
    lineage_start: VersionInfo,
    data_end: pd.Timestamp,
    recent_skill: float | None,
    config: SeriesConfig,
) -> TrainPlan:
    """The auto policy, given a loadable latest version (see the module docstring)."""
    if with_new_defaults(latest.config) != config.version_config():
        return TrainPlan("retrain", f"the series' settings changed since version {latest.id}")
    if latest.train_last >= data_end:
        return TrainPlan("keep", f"no final candle after {latest.train_last:%Y-%m-%d %H:%M}")
    last = pd.Timestamp(lineage_start.train_last)
    age = (data_end - last) // config.candle
    name = scope_name(config)
    if retrain_day_between(name, config.retrain_after, config.candle, last, data_end):
        return TrainPlan(
            "retrain",
            f"its retrain day (every retrain_after={config.candles(config.retrain_after)}, "
            f"offset {retrain_offset(name, config.retrain_after)}) passed: the last retrain "
            f"(version {lineage_start.id}) is {config.candles(age)} of data old",
        )
    if (low := below_skill(recent_skill)) is not None:
        return TrainPlan("retrain", low)
    return TrainPlan("finetune", f"version {latest.id} is recent and skilful enough")


def pooled_skill(skills: Mapping[str, float]) -> float | None:
    """A lineage's recent skill: the mean of its series' (each scale-free, so that no series
    drowns the others); None when none of them has a scored run of the lineage yet."""
    return sum(skills.values()) / len(skills) if skills else None


def below_skill(recent_skill: float | None) -> str | None:
    """Why the lineage retrains for low skill, or None: its recent skill is below
    ``retrain_below_skill`` (a daily run's and a backfill's rule alike, `flows.backfill`)."""
    threshold = get_settings().retrain_below_skill
    if recent_skill is None or recent_skill >= threshold:
        return None
    return f"recent skill {recent_skill:.3f} is below retrain_below_skill={threshold}"
