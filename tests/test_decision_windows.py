"""Where a real-time cadence starts (strategy.window_clock), across a clock change.

CAISO's zone (America/Los_Angeles) springs forward on 2019-03-10: local midnight is 08:00
UTC before and 07:00 UTC after."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml

from market.definitions import Product, load_market
from vpp.decision_windows import WindowClock, decisions
from vpp.optimize import optimize
from vpp.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"

STARTS = pd.date_range("2019-03-08 00:00", periods=4 * 288, freq="5min", tz="UTC")


def windows(clock: WindowClock, every: timedelta = timedelta(days=1)) -> list[tuple[str, int]]:
    found = decisions(
        STARTS,
        0,
        len(STARTS),
        load_market("caiso"),
        Product.ENERGY_RT,
        horizon=None,
        every=every,
        lead=timedelta(0),
        clock=clock,
    )
    # every position bid exactly once, in order
    assert [d.first for d in found] == sorted(d.first for d in found)
    assert sum(d.kept for d in found) == len(STARTS)
    assert all(d.end - d.first >= d.kept for d in found)
    return [(f"{STARTS[d.first]:%m-%d %H:%M}", d.kept) for d in found]


def test_the_period_clock_counts_from_the_first_interval() -> None:
    assert windows("period") == [(f"03-{8 + k:02d} 00:00", 288) for k in range(4)]


def test_the_trading_day_clock_restarts_at_local_midnight_and_the_dst_day_is_23_hours() -> None:
    assert windows("trading_day") == [
        ("03-08 00:00", 96),  # the period's start to the first local midnight
        ("03-08 08:00", 288),
        ("03-09 08:00", 288),
        ("03-10 08:00", 276),  # 23 hours: the clocks spring forward
        ("03-11 07:00", 204),  # to the period's end
    ]


def test_the_standard_time_clock_keeps_24_hour_days_all_year() -> None:
    assert windows("standard_time") == [
        ("03-08 00:00", 96),
        ("03-08 08:00", 288),
        ("03-09 08:00", 288),
        ("03-10 08:00", 288),  # midnight PST, 01:00 local summer time
        ("03-11 08:00", 192),
    ]


@pytest.mark.parametrize("clock", ["trading_day", "standard_time"])
def test_a_cadence_within_the_day_restarts_at_each_day_start(clock: WindowClock) -> None:
    got = windows(clock, every=timedelta(hours=5))  # 5 h does not divide a day
    firsts = [w for w, _ in got]
    assert "03-08 08:00" in firsts and "03-09 08:00" in firsts  # each day starts afresh
    assert ("03-09 04:00", 48) in got  # the day's last window is cut at the next day


def test_optimize_solves_the_windows_of_its_clock(tmp_path: Path) -> None:
    """Daily windows on the shipped five-minute prices: from the period's first interval
    (Etc/GMT+8 file hours, 08:00 UTC) or from CAISO's local midnight (07:00 UTC in July)."""
    data = yaml.safe_load((SCENARIOS / "us-rt-2019-07-arbitrage.yaml").read_text())
    data["prices"]["file"] = str(SCENARIOS / "data" / Path(data["prices"]["file"]).name)
    data["prices"]["start"] = "2019-07-01T08:00:00Z"
    data["prices"]["end"] = "2019-07-04T08:00:00Z"
    data["strategy"]["reoptimize_every"] = "P1D"
    nets = {}
    for clock in ("period", "trading_day", "standard_time"):
        data["strategy"]["window_clock"] = clock
        path = tmp_path / f"{clock}.yaml"
        path.write_text(yaml.safe_dump(data))
        result = optimize(load_scenario(path))
        assert f"window clock {clock}" in result.windows
        nets[clock] = (result.windows.split()[0], round(result.net_revenue, 2))
    assert nets["period"][0] == nets["standard_time"][0] == "3"  # both start 08:00 UTC
    assert nets["period"][1] == nets["standard_time"][1]  # the same windows
    assert nets["trading_day"][0] == "4"  # 08:00 to 07:00, two full days, the rest
