"""Fixtures of the flow tests: one temporary Prefect server for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """Flows and tasks run against a throwaway Prefect server and database (started once)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def httpserver_listen_address() -> tuple[str, int]:
    """pytest-httpserver listens on 127.0.0.1, on a free port."""
    return ("127.0.0.1", 0)


@pytest.fixture
def cdd(httpserver, monkeypatch):
    """A CryptoDataDownload stand-in: ``cdd(n)`` serves the first n candles of the series of
    tests.flows.forecast_service (Bitstamp_ETHUSD_d answers 404)."""
    from tests.flows.cdd_files import make_cdd_csv
    from tests.flows.forecast_service import ALL_CANDLES, KEY, SERIES

    monkeypatch.setenv("CDDF_CDD_BASE_URL", httpserver.url_for("/cdd/"))

    def serve(n: int) -> None:
        httpserver.clear()
        body = make_cdd_csv(KEY, ALL_CANDLES.iloc[:n])
        httpserver.expect_request(f"/cdd/{SERIES}.csv").respond_with_data(body)
        httpserver.expect_request("/cdd/Bitstamp_ETHUSD_d.csv").respond_with_data(
            "Not Found", status=404
        )

    return serve
