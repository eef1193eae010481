"""One series through the daily pipeline as a flow run of its own: what the daily flow hands to
the workers of a pool when ``CDDF_SERIES_DEPLOYMENT`` is set (the ``series`` deployment).

    series_flow("Bitstamp_ETHUSD_d")      # ingest → train or fine-tune → forecast → evaluate

The steps are the daily flow's (`flows.pipeline.run_series`); the run publishes the daily's
artifacts for its one series and ends failed, naming the step, when a step failed. A
``source`` must be reachable from every worker of the pool (a URL, or a shared path).
"""

# No `from __future__ import annotations` here: a served deployment may pickle the flow
# function, and its parameters' annotations must travel as objects, not as names.

from prefect import flow

from cdd.client import refuse_credentials
from cdd.series_key import SeriesKey
from flows.pipeline import SeriesOutcome, run_series
from flows.summary import publish
from settings import get_settings

# one series' download (CDDF_HTTP_DEADLINE 15 min), training (the train flow's 2 h, or a train
# run's CDDF_TRAIN_DISPATCH_TIMEOUT 3 h with its queue time), forecast and evaluate (seconds)
SERIES_TIMEOUT_S = 6 * 3600


class SeriesRunFailed(RuntimeError):
    """A step of the series failed; ``outcome`` says which and why."""

    def __init__(self, message: str, outcome: SeriesOutcome) -> None:
        super().__init__(message)
        self.outcome = outcome


@flow(name="series", flow_run_name="series {series}", timeout_seconds=SERIES_TIMEOUT_S)
def series_flow(series: SeriesKey, source: str | None = None) -> SeriesOutcome:
    """Ingest, train or fine-tune, forecast and evaluate one series; fails naming the step."""
    get_settings().series_config(series)  # a bad setting fails here, before any work
    refuse_credentials(source)
    outcome = run_series(series, source)
    publish([outcome])
    if outcome.failed_step:
        error = outcome.error
        raise SeriesRunFailed(
            f"{series} failed at {outcome.failed_step}: {type(error).__name__}: {error}", outcome
        )
    return outcome
