"""Retrain days spread over the week (issue 26.4): the daily run's auto policy."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace

import pandas as pd

from db.registry import VersionInfo
from flows.backfill_plan import BackfillPlan
from flows.train_policy import auto_plan, retrain_day_between, retrain_offset
from settings import get_settings

# 14 daily series of several exchanges (the keys only matter through their hash)
KEYS = [
    f"{exchange}_{pair}_d"
    for exchange in ("Bitstamp", "Binance")
    for pair in ("BTCUSD", "ETHUSD", "LTCUSD", "XRPUSD", "BCHUSD", "ADAUSD", "SOLUSD")
]
FIRST = pd.Timestamp("2026-01-05", tz="UTC")  # a Monday: every series' first run
WEEKLY = '{"d": {"retrain_after": 7}}'  # the spread over a week (the daily default is 28)


def version(key: str, number: int, train_last: pd.Timestamp) -> VersionInfo:
    """A registered retrain of ``key`` trained up to ``train_last``, with today's settings."""
    config = get_settings().series_config(key).version_config()
    return VersionInfo(
        number, key, train_last.to_pydatetime(), "retrain", None, number, config,
        (train_last - pd.Timedelta(days=400)).to_pydatetime(), train_last.to_pydatetime(),
        300, {}, "0" * 64, 1, "CPU", 1.0, None,
    )  # fmt: skip


def daily_runs(days: int) -> dict[str, list[pd.Timestamp]]:
    """Each series' retrain days over ``days`` daily runs of the auto policy from FIRST."""
    retrains: dict[str, list[pd.Timestamp]] = {}
    for key in KEYS:
        config = get_settings().series_config(key)
        latest = version(key, 1, FIRST)
        retrains[key] = [FIRST]
        for day in pd.date_range(FIRST + pd.Timedelta(days=1), periods=days - 1, freq="D"):
            plan = auto_plan(latest, latest, day, None, config)
            assert plan.action in ("retrain", "finetune"), plan
            if plan.action == "retrain":
                retrains[key].append(day)
                latest = version(key, latest.id + 1, day)
            else:
                latest = replace(latest, train_last=day.to_pydatetime())
    return retrains


def test_fourteen_series_retrain_on_spread_days_at_most_retrain_after_apart(monkeypatch):
    monkeypatch.setenv("CDDF_SERIES", ",".join(KEYS))
    monkeypatch.setenv("CDDF_TIMEFRAME_SETTINGS", WEEKLY)  # 14 series over 7 weekdays
    every = get_settings().series_config(KEYS[0]).retrain_after
    assert every == 7
    retrains = daily_runs(28)
    per_day = Counter(day for days in retrains.values() for day in days if day > FIRST)
    assert max(per_day.values()) <= math.ceil(len(KEYS) / every) + 1, per_day
    assert len(per_day) >= every  # every weekday carries some of them
    for key, days in retrains.items():
        gaps = pd.DatetimeIndex([*days, FIRST + pd.Timedelta(days=28)]).to_series().diff()
        assert gaps.dt.days.max() <= every, (key, days)
        later = days[1:]  # after the first run: always on the series' own weekday
        assert {(day.value // pd.Timedelta(days=1).value) % every for day in later} == {
            (-retrain_offset(key, every)) % every
        }, (key, later)


def test_a_retrain_day_passed_is_a_retrain_whatever_runs_were_missed():
    key, day = KEYS[0], pd.Timedelta(days=1)
    offset = retrain_offset(key, 7)
    retrain_day = pd.Timestamp((7 - offset) % 7 * day.value + 7 * 3000 * day.value, tz="UTC")
    assert retrain_day_between(key, 7, day.to_pytimedelta(), retrain_day - day, retrain_day)
    assert not retrain_day_between(key, 7, day.to_pytimedelta(), retrain_day, retrain_day + 6 * day)
    assert retrain_day_between(key, 7, day.to_pytimedelta(), retrain_day - day, retrain_day + day)
    # hours: the same rule in hourly candles, so 168 hourly series spread over the week's hours
    hour = pd.Timedelta(hours=1)
    hits = Counter()
    for n in range(168):
        name = f"Bitstamp_C{n}USD_1h"
        start = pd.Timestamp("2026-01-05", tz="UTC")
        for h in range(1, 169):
            now = start + h * hour
            if retrain_day_between(name, 168, hour.to_pytimedelta(), now - hour, now):
                hits[h] += 1
    assert sum(hits.values()) == 168 and max(hits.values()) <= 5


# a backfill retrains on the days the daily runs do ------------------------------------------


def block_starts(key: str, as_ofs: pd.DatetimeIndex, every: int = 7, group: str | None = None):
    members = {} if group is None else {key: pd.DataFrame()}
    return sorted(BackfillPlan(key, as_ofs, every, pd.DataFrame(), (), group, members).block_starts)


def test_a_backfill_retrains_on_the_days_the_daily_runs_retrain(monkeypatch):
    monkeypatch.setenv("CDDF_SERIES", ",".join(KEYS))
    monkeypatch.setenv("CDDF_TIMEFRAME_SETTINGS", WEEKLY)
    days = 40
    retrains = daily_runs(days)
    as_ofs = pd.date_range(FIRST, periods=days, freq="D")
    for key in KEYS:
        assert block_starts(key, as_ofs) == retrains[key], key
        # begun later, it retrains at its first as_of, then on the same days
        later = as_ofs[9:]
        assert block_starts(key, later) == [later[0], *(d for d in retrains[key] if d > later[0])]


def test_a_backfill_retrains_after_a_hole_over_its_retrain_day():
    key = KEYS[0]
    as_ofs = pd.date_range(FIRST, periods=30, freq="D")
    starts = block_starts(key, as_ofs)
    hole = starts[1]  # the candles of its first retrain day and the day after are missing
    gapped = as_ofs.drop([hole, hole + pd.Timedelta(days=1)])
    assert block_starts(key, gapped) == [FIRST, hole + pd.Timedelta(days=2), *starts[2:]]


def test_a_global_and_an_hourly_backfill_retrain_on_their_scope_s_days():
    day, hour = pd.Timedelta(days=1), pd.Timedelta(hours=1)
    as_ofs = pd.date_range(FIRST, periods=30, freq="D")
    starts = block_starts(KEYS[0], as_ofs, group="d")[1:]
    assert {(t.value // day.value + retrain_offset("global d", 7)) % 7 for t in starts} == {0}
    assert all(b - a == 7 * day for a, b in zip(starts, starts[1:], strict=False))
    key = "Binance_ADAUSDT_1h"
    hours = pd.date_range(FIRST, periods=24 * 30, freq="h")
    starts = block_starts(key, hours, every=168)[1:]
    assert len(starts) == 4 and all(
        b - a == 168 * hour for a, b in zip(starts, starts[1:], strict=False)
    )
    assert {(t.value // hour.value + retrain_offset(key, 168)) % 168 for t in starts} == {0}
