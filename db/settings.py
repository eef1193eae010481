"""Moved: the settings live in the top-level package ``settings`` (`settings.get_settings`).

Kept only so that code written against the old place still imports; new code imports
``settings`` (and `db.engine.masked_url`). Remove once nothing imports ``db.settings``.
"""

from __future__ import annotations

from db.engine import masked_url
from settings import Settings, get_settings

__all__ = ["Settings", "get_settings", "masked_url"]
