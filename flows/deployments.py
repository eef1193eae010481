"""The deployments of the service, in one place: prefect.yaml declares them for `prefect deploy`
(with its work pools) and `cdd-forecast serve` serves them from one process.

    >>> [d.name for d in DEPLOYMENTS]
    ['daily', 'train', 'series', 'backfill', 'prefect-retention', 'resume']
    >>> DEPLOYMENTS[0].schedules
    ({'cron': '15 0 * * *', 'timezone': 'UTC'},)

tests/deploy/test_deployments.py checks that prefect.yaml's deployments agree with this table
(names, entrypoints, schedules, parameters): change both together.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

DAILY_SCHEDULE = {"cron": "15 0 * * *", "timezone": "UTC"}
# Prefect's own history (flows/prefect_retention.py), daily, hours after the daily run started
RETENTION_SCHEDULE = {"cron": "30 5 * * *", "timezone": "UTC"}
# retrain_every None: each series' retrain_after, the days its daily runs retrain on
BACKFILL_DEFAULTS: dict[str, Any] = {"retrain_every": None, "force": False}


@dataclass(frozen=True)
class Deployment:
    """One deployment: its flow's name (each deployment has its flow's), where the flow is."""

    name: str
    entrypoint: str  # path/to/module.py:flow_function, as prefect.yaml writes it
    schedules: tuple[dict[str, str], ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)

    def flow(self) -> Any:
        """The flow function of ``entrypoint``, imported as the package's module."""
        path, name = self.entrypoint.split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        return getattr(module, name)

    def served(self, name_prefix: str = "") -> RunnerDeployment:
        """This deployment as one process serves it (no work pool)."""
        from prefect.schedules import Cron

        return self.flow().to_deployment(
            name=f"{name_prefix}{self.name}",
            schedules=[Cron(entry["cron"], timezone=entry["timezone"]) for entry in self.schedules]
            or None,
            parameters=dict(self.parameters) or None,
        )


DEPLOYMENTS = (
    Deployment("daily", "flows/daily.py:daily_flow", (DAILY_SCHEDULE,)),
    Deployment("train", "flows/train.py:train_flow"),
    Deployment("series", "flows/series.py:series_flow"),
    Deployment("backfill", "flows/backfill.py:backfill_flow", parameters=BACKFILL_DEFAULTS),
    Deployment(
        "prefect-retention",
        "flows/prefect_retention.py:prefect_retention_flow",
        (RETENTION_SCHEDULE,),
    ),
    # run by an automation for each crashed daily or backfill run (deploy/automations/)
    Deployment("resume", "flows/resume.py:resume_flow"),
)
