"""Tasks that more than one flow runs: reading final candles and loading a model version."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from db.candles import load_candles
from db.engine import get_engine
from db.registry import VersionInfo, load_artifact
from flows.config import DB_RETRY
from forecaster import LSTMForecaster


def as_utc(as_of: datetime | None) -> datetime | None:
    """``as_of`` as a tz-aware UTC datetime; a naive one (``--param as_of=2024-06-30``) is UTC."""
    if as_of is None:
        return None
    stamp = pd.Timestamp(as_of)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


@task(cache_policy=NO_CACHE, **DB_RETRY)
def final_candles(series: str, as_of: datetime | None) -> pd.DataFrame:
    """The final candles of ``series`` up to ``as_of`` (all when None)."""
    candles = load_candles(get_engine(), series, until=as_utc(as_of))
    if candles.empty:
        until = "" if as_of is None else f" up to {as_of:%Y-%m-%d %H:%M}"
        raise ValueError(f"{series} has no final candle{until}: ingest the series first")
    return candles


@task(cache_policy=NO_CACHE, **DB_RETRY)
def load_model(version: VersionInfo) -> LSTMForecaster:
    """The model of ``version``; ArtifactChecksumError or ArtifactError when it is corrupted."""
    blob = load_artifact(get_engine(), version.id)
    return LSTMForecaster.from_bytes(blob, source=f"model version {version.id} of {version.series}")
