"""The series the database holds already: a key that is not here joins with its first ingest.

For example::

    stored_keys(get_engine())  # -> {'Bitstamp_BTCUSD_d', 'Bitstamp_ETHUSD_1h'}
"""

from __future__ import annotations

from sqlalchemy import Engine, select

from db.models import Series


def stored_keys(engine: Engine) -> set[str]:
    """The keys of the ``series`` table."""
    with engine.connect() as connection:
        return set(connection.scalars(select(Series.key)))
