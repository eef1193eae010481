"""Every ``CDDF_`` setting of the service: one pydantic-settings class, read and validated once.

>>> from settings import get_settings
>>> get_settings().database_url.get_secret_value()
'sqlite:///cdd_forecast.sqlite'
>>> get_settings().series_config("Binance_ADAUSDT_1h").forecaster.horizon
24

Values come from the environment or a ``.env`` file; a bad value raises `SettingsError`
naming the variable (``CDDF_…``) before any work starts. A top-level package, not a module of
``db/`` or ``flows/``: both read it, and ``db/`` must not import ``flows/``.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, PositiveInt, SecretStr, ValidationError, field_validator
from pydantic import model_validator as _model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as _SourceError

from cdd.catalogue import check_entry, is_pattern, named_timeframe, select
from cdd.series_key import timeframe_of
from settings.series import TIMEFRAME_DEFAULTS, ModelSettings, SeriesConfig, resolve

__all__ = ["ModelSettings", "SeriesConfig", "Settings", "SettingsError", "get_settings"]


# a duration or size that must be a finite number above 0 (inf or nan would mean "no bound")
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class SettingsError(ValueError):
    """A ``CDDF_`` setting is invalid; the message names the variable and what to do."""


class Settings(BaseSettings):
    """Everything the service reads from its environment; every field is ``CDDF_<NAME>``."""

    # an empty variable counts as unset (docker-compose passes unset ones as empty)
    model_config = SettingsConfigDict(
        env_prefix="CDDF_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    # database, and the PostgreSQL roles `cdd-forecast db roles` creates
    database_url: SecretStr = SecretStr("sqlite:///cdd_forecast.sqlite")
    app_role: str = "cddf_app"
    app_password: SecretStr | None = None
    reader_role: str = "forecast_reader"
    reader_password: SecretStr | None = None
    # download
    cdd_base_url: str = "https://www.cryptodatadownload.com/cdd/"
    # series keys and patterns of them (Binance_*USDT_d), resolved against the catalogue
    series: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["Bitstamp_BTCUSD_d"])
    # where CDDF_SERIES' patterns are resolved: a URL or path of a listing, {exchange} replaced
    # by a pattern's exchange (cdd/catalogue.py); a URL's listing is cached a day in
    # catalogue_cache (None: ~/.cache/cdd-forecast/catalogue)
    catalogue: str = (
        "https://api.cryptodatadownload.com/v1/data/ohlc/{exchange}/available?format=json"
    )
    catalogue_cache: Path | None = None
    http_connect_timeout: Positive = 10.0
    http_read_timeout: Positive = 60.0
    http_retries: Annotated[int, Field(ge=0)] = 3
    http_max_bytes: PositiveInt = 512 * 1024 * 1024
    # a whole download, retries included; 900 s lets a 100 MB file (two years of minute
    # candles) arrive at 0.9 Mbit/s, and bounds a server that trickles bytes
    http_deadline: Positive = 900.0
    # backfill-<series> and daily-<series> leases (series_locks): a killed holder's lease
    # expires after this
    lock_lease_seconds: Positive = 60.0
    # how long a run of a series' pipeline (train, forecast, evaluate) waits for another run of
    # the same series to finish before that series fails naming the holder; the other's
    # training is bounded by the train flow's 2 h, its dispatch by CDDF_TRAIN_DISPATCH_TIMEOUT
    series_lock_wait: Positive = 3 * 3600.0
    # revisions of stored final candles one ingest may make without --accept-revisions
    # (db/revisions.py): at most max_revisions, none older than max_age_periods periods
    max_revisions: Annotated[int, Field(ge=0)] = 5
    revision_max_age_periods: Annotated[int, Field(ge=0)] = 3
    # bad rows of a sound file are rejected alone (ingest_rejects); a file with more than
    # max(max_rejected_rows, max_rejected_share x its rows) bad rows fails whole (cdd)
    max_rejected_share: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.01
    max_rejected_rows: Annotated[int, Field(ge=0)] = 3
    # training policy and the daily flow
    # old: now retrain_after, in candles of each timeframe (see series.py); set, it still applies
    retrain_after_days: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    retrain_below_skill: Annotated[float, Field(allow_inf_nan=False)] = -0.05
    train_deployment: str | None = None
    max_parallel_series: PositiveInt = 4  # series the daily flow runs at once
    # run each series of a daily run as a flow run of this deployment (e.g. series/series),
    # picked up by any worker of its pool; unset: in the daily run's own process
    series_deployment: str | None = None
    # how long a dispatched train / series flow run may take, queue time included, before it
    # is cancelled and its series fails naming the pool (docs/deploy.md: sized from the
    # benchmarks, between the flows' own timeouts: train 2 h < 3 h < series 6 h < 12 h)
    train_dispatch_timeout: Positive = 3 * 3600.0
    series_dispatch_timeout: Positive = 12 * 3600.0
    chart_dir: Path | None = None
    # flow runs (their task runs and logs) and artifacts older than this are deleted from
    # Prefect's database by the prefect-retention deployment (flows/prefect_retention.py)
    prefect_retention_days: Annotated[int, Field(ge=1)] = 30
    # weights kept per model scope besides the serving version and its retrain parent: older
    # versions keep their row, lineage, metrics and checksum, not their bytes (db/retention.py)
    keep_versions: Annotated[int, Field(ge=0)] = 3
    # a train run that finds no usable GPU fails instead of training on CPU (flows/train.py)
    require_gpu: bool = False
    # a backfill retrains in this many processes, its own included: with 2, a worker retrains
    # the blocks ahead while the backfill fine-tunes, forecasts and stores in order
    # (flows/backfill.py); 1: all in the backfill's own process; None: 2 on a CPU of 2 or more
    # cores when it retrains 3 or more times, else 1 (flows/backfill_pool.default_processes)
    backfill_processes: PositiveInt | None = None
    # a series' first run first walks forward over this many of its newest periods (as a
    # backfill: one retrain, fine-tunes), so that its first forecast serves learned weights
    # (flows/warmup.py); None: forecaster.online.MIN_ROUNDS + horizon - 1, the fewest that
    # score every horizon that often (16 days, 33 hours); 0: no warm-up
    warmup_periods: Annotated[int, Field(ge=0)] | None = None
    # times a crashed daily or backfill run is resumed (a new run with its parameters) before
    # the resume run fails instead, naming it (flows/resume.py)
    max_resumes: Annotated[int, Field(ge=0)] = 2
    # model settings: every series, per timeframe, per series (JSON objects; see series.py)
    forecaster: dict[str, Any] = Field(default_factory=dict)
    timeframe_settings: dict[str, ModelSettings] = Field(default_factory=dict)
    series_settings: dict[str, ModelSettings] = Field(default_factory=dict)

    @field_validator("series", mode="before")
    @classmethod
    def _split_series(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("series")
    @classmethod
    def _each_series_once(cls, keys: list[str]) -> list[str]:
        if twice := sorted({key for key in keys if keys.count(key) > 1}):
            raise ValueError(
                f"{', '.join(twice)} listed more than once: list each series or pattern once "
                "(a series listed twice would be trained and forecast twice)"
            )
        for entry in keys:
            if is_pattern(entry):
                check_entry(entry)
        return keys

    @_model_validator(mode="after")
    def _check_dispatch_timeouts(self) -> Settings:
        both = self.series_deployment and self.train_deployment
        if both and self.series_dispatch_timeout <= self.train_dispatch_timeout:
            raise ValueError(
                f"CDDF_SERIES_DISPATCH_TIMEOUT={self.series_dispatch_timeout:g} must be above "
                f"CDDF_TRAIN_DISPATCH_TIMEOUT={self.train_dispatch_timeout:g}: a series run "
                "waits for its train run"
            )
        return self

    @_model_validator(mode="after")
    def _check_model_settings(self) -> Settings:
        if unknown := sorted(set(self.timeframe_settings) - set(TIMEFRAME_DEFAULTS)):
            raise ValueError(
                f"CDDF_TIMEFRAME_SETTINGS names unknown timeframe(s) {unknown}: use "
                f"{', '.join(TIMEFRAME_DEFAULTS)}"
            )
        if patterns := sorted(filter(is_pattern, self.series_settings)):
            raise ValueError(
                f"CDDF_SERIES_SETTINGS names pattern(s) {patterns}: its keys are series keys "
                "(e.g. Binance_BTCUSDT_d); for every series of a timeframe use "
                "CDDF_TIMEFRAME_SETTINGS"
            )
        listed = select(self.series, self.series_settings)
        matched = {key for keys in listed.values() for key in keys}
        if strays := sorted(set(self.series_settings) - matched):
            raise ValueError(
                f"CDDF_SERIES_SETTINGS names {strays}, not in CDDF_SERIES "
                f"({','.join(self.series)}) nor selected by a pattern of it: add them there "
                "or drop their settings"
            )
        for entry in self.series:
            timeframe = timeframe_of(entry) if not is_pattern(entry) else named_timeframe(entry)
            if timeframe is not None and timeframe not in TIMEFRAME_DEFAULTS:
                raise ValueError(
                    f"CDDF_SERIES: {entry} has unknown timeframe "
                    f"{timeframe!r}, use {', '.join(TIMEFRAME_DEFAULTS)}"
                )
        # every listed series and series with settings, one series of each timeframe that has
        # settings or a pattern names
        keys = [key for key in self.series if not is_pattern(key)] + sorted(
            matched - set(self.series)
        )
        timeframes = [*self.timeframe_settings, *filter(None, map(named_timeframe, self.series))]
        for key in [*keys, *(f"any_{timeframe}" for timeframe in dict.fromkeys(timeframes))]:
            try:
                self.series_config(key)
            except (TypeError, ValueError) as error:
                raise ValueError(f"{self._source_of(key)}: {error}") from None
        return self

    def _source_of(self, series: str) -> str:
        """The variables that shaped ``series``' config, for error messages."""
        names = ["CDDF_FORECASTER"]
        if timeframe_of(series) in self.timeframe_settings:
            names.append("CDDF_TIMEFRAME_SETTINGS")
        if series in self.series_settings:
            names.append("CDDF_SERIES_SETTINGS")
        return " / ".join(names)

    def series_config(self, series: str) -> SeriesConfig:
        """What ``series`` trains and forecasts with: timeframe defaults plus the overrides.

        A pattern (``Binance_*_d``) has the config of its timeframe's series without settings
        of their own; one that names no timeframe has none (ValueError).
        """
        if is_pattern(series):
            timeframe = named_timeframe(series)
            if timeframe is None:
                raise ValueError(
                    f"{series} names no timeframe, so its series may differ in config: "
                    "resolve it to series keys first (cdd-forecast run --dry-run lists them)"
                )
            series = f"any_{timeframe}"
        return resolve(
            series,
            forecaster=self.forecaster,
            retrain_after_days=self.retrain_after_days,
            timeframe_settings=self.timeframe_settings,
            series_settings=self.series_settings,
        )


@lru_cache
def get_settings() -> Settings:
    """The service's settings, read once; a bad value is a `SettingsError` naming it."""
    try:
        return Settings()
    except ValidationError as error:
        raise SettingsError(_describe(error)) from None
    except _SourceError as error:  # a JSON setting that does not parse
        raise SettingsError(
            f"{_json_problem(error)} (CDDF_FORECASTER, CDDF_TIMEFRAME_SETTINGS and "
            "CDDF_SERIES_SETTINGS are JSON objects, e.g. CDDF_FORECASTER='{\"units\": 64}')"
        ) from None


def _json_problem(error: _SourceError) -> str:
    """Which variable is not JSON, and where: line, column and the text there, e.g.
    ``CDDF_FORECASTER is not valid JSON: Expecting ',' delimiter at line 2, column 17: ...``.
    """
    field = re.search(r'field "(\w+)"', str(error))
    name = f"CDDF_{field.group(1).upper()}" if field else "a JSON setting"
    cause = error.__cause__
    if not isinstance(cause, json.JSONDecodeError):
        return f"{name}: {error}"
    line = cause.doc.splitlines()[cause.lineno - 1] if cause.doc.strip() else ""
    there = line[cause.colno - 1 : cause.colno + 9]
    return (
        f"{name} is not valid JSON: {cause.msg} at line {cause.lineno}, column {cause.colno}: "
        f"{line!r} ({f'at {there!r}' if there else 'at its end'})"
    )


def _describe(error: ValidationError) -> str:
    lines = []
    for problem in error.errors():
        location = problem["loc"]
        message = problem["msg"].removeprefix("Value error, ")
        if location:
            name = f"CDDF_{str(location[0]).upper()}"
            inner = ".".join(str(part) for part in location[1:])
            lines.append(f"{name}{f' ({inner})' if inner else ''}: {message}")
        else:
            lines.append(message)
    return "invalid settings: " + "; ".join(lines)
