"""The auto retrain policy of a model (one series' or a timeframe group's global one).

See `flows.train` for the rules; `flows.train_global` applies them to a group with its
pooled recent skill.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd

from db.registry import VersionInfo
from settings import SeriesConfig, get_settings
from settings.series import with_new_defaults


@dataclass(frozen=True)
class TrainPlan:
    action: Literal["retrain", "finetune", "keep"]
    reason: str


def auto_plan(
    latest: VersionInfo,
    lineage_start: VersionInfo,
    data_end: pd.Timestamp,
    recent_skill: float | None,
    config: SeriesConfig,
) -> TrainPlan:
    """The auto policy, given a loadable latest version (see the module docstring)."""
    settings = get_settings()
    if with_new_defaults(latest.config) != config.version_config():
        return TrainPlan("retrain", f"the series' settings changed since version {latest.id}")
    if latest.train_last >= data_end:
        return TrainPlan("keep", f"no final candle after {latest.train_last:%Y-%m-%d %H:%M}")
    age = (data_end - pd.Timestamp(lineage_start.train_last)) // config.candle
    if age >= config.retrain_after:
        return TrainPlan(
            "retrain",
            f"the last retrain (version {lineage_start.id}) is {config.candles(age)} of data "
            f"old (retrain_after={config.candles(config.retrain_after)})",
        )
    if recent_skill is not None and recent_skill < settings.retrain_below_skill:
        return TrainPlan(
            "retrain",
            f"recent skill {recent_skill:.3f} is below retrain_below_skill="
            f"{settings.retrain_below_skill}",
        )
    return TrainPlan("finetune", f"version {latest.id} is recent and skilful enough")
