"""Service settings, read once from the environment (prefix ``CDDF_``) or a ``.env`` file.

>>> from db.settings import get_settings
>>> get_settings().database_url.get_secret_value()
'sqlite:///cdd_forecast.sqlite'
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the service reads from its environment; every field is ``CDDF_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="CDDF_", env_file=".env", extra="ignore")

    database_url: SecretStr = SecretStr("sqlite:///cdd_forecast.sqlite")
    cdd_base_url: str = "https://www.cryptodatadownload.com/cdd/"
    series: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["Bitstamp_BTCUSD_d"])
    http_connect_timeout: float = 10.0
    http_read_timeout: float = 60.0
    http_retries: int = 3
    http_max_bytes: int = 512 * 1024 * 1024
    # training policy of the daily flow
    retrain_after_days: int = 7
    retrain_below_skill: float = -0.05
    train_deployment: str | None = None
    chart_dir: Path | None = None

    @field_validator("series", mode="before")
    @classmethod
    def _split_series(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()


def masked_url(url: str | SecretStr) -> str:
    """The database URL with its password hidden, safe for logs and error messages."""
    from sqlalchemy.engine import make_url

    raw = url.get_secret_value() if isinstance(url, SecretStr) else url
    try:
        return make_url(raw).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"
