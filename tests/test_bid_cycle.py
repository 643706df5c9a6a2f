"""One bid cycle: the live bidder and the backtest make the same bids from the same inputs.

The backtest replays a shipped scenario and shows each decision's inputs (fleet snapshot,
engine time, standing awards and bids); the live :class:`vpp.bidding.bidder.Bidder` is then
given the same world — a fresh database holding those standing awards and bids, a price
feed of the same prices, the same snapshot, its clock at the decision — and must store
byte-identical bids. Everything the bidder decides on (sizing, promised energy, minimum
quantity, committed capacity, day bands) is one code path, so the two cannot drift.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from market.adapter import LoggedMarket, SimulatedMarket
from market.bids import Bid, BidCurve
from market.clearing import Award
from optimizer.curves import self_schedule
from tests.test_backtest import scenario_file
from vpp.backtest.runner import prepare, run_strategy
from vpp.bidding.bidder import Bidder
from vpp.bidding.cycle import CycleInputs, CycleResult
from vpp.bidding.feed import FeedPrices, PriceFeed
from vpp.config import BiddingSettings, DatabaseSettings
from vpp.scenario import load_scenario
from vpp.store import db
from vpp.store.bids import BidFilter, BidStore
from vpp.store.txlog import DbTxLog


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def canonical(bids: list[Bid]) -> bytes:
    """What a bid says to the market: id, interval and curve (not its review state)."""
    return json.dumps(
        sorted(
            (
                b.bid_id,
                b.group,
                b.interval_start.isoformat(),
                b.interval_end.isoformat(),
                b.curve.model_dump(mode="json"),
            )
            for b in bids
        ),
        sort_keys=True,
    ).encode()


CASES: dict[str, tuple[str, datetime, datetime, dict[str, Any], BiddingSettings, list[int]]] = {
    # the schedule of a forecast, price-taking (the best measured)
    "eu-day-ahead, schedule": (
        "de-2019-backtest.yaml",
        utc(2019, 3, 1),
        utc(2019, 3, 6),
        {"strategy__features": []},
        BiddingSettings(
            strategy="schedule",
            market="eu-day-ahead",
            product="energy_da",
            interval_minutes=60,  # the 2019 design the backtest replays
            review_window_s=1800,
            forecast="seasonal",
            history_days=28,
            degradation_per_mwh=0.0,
        ),
        [1, 2, 3],
    ),
    # EU day-ahead, a whole trading day per decision; the third decision stands on the
    # awards of the day before
    "eu-day-ahead": (
        "de-2019-backtest.yaml",
        utc(2019, 3, 1),
        utc(2019, 3, 6),
        {"strategy__base_forecast": "seasonal", "strategy__features": []},
        BiddingSettings(
            strategy="scenarios",
            market="eu-day-ahead",
            product="energy_da",
            interval_minutes=60,  # the 2019 design the backtest replays
            review_window_s=1800,
            forecast="seasonal",
            history_days=28,
            degradation_per_mwh=0.0,
            scenarios=10,
        ),
        [1, 2, 3],
    ),
    # real time, a decision every hour for the next hour; standing awards and bids not
    # cleared yet lie between each decision and its first interval; a peak-shaving C&I
    # site is in the group (committed: never offered)
    "real-time, with peak shaving": (
        "us-rt-2019-q1-ci-backtest.yaml",
        utc(2019, 2, 25, 8),  # late enough for the bidder's look-back to stay in the file
        utc(2019, 2, 25, 14),
        {"strategy__horizon": "PT1H", "strategy__base_forecast": "seasonal"},
        BiddingSettings(
            strategy="scenarios",
            market="caiso",
            product="energy_rt",
            review_window_s=300,
            horizon_intervals=12,
            forecast="seasonal",
            history_days=14,
            degradation_per_mwh=5.0,
            scenarios=5,
        ),
        [0, 1, 2, 3, 4, 5],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_live_bidder_and_the_backtest_make_byte_identical_bids(
    tmp_path: Path, case: str
) -> None:
    base, start, end, changes, settings, ks = CASES[case]
    name = "scenarios" if settings.strategy == "scenarios" else settings.forecast
    path = scenario_file(
        tmp_path, base, strategy__forecast=[name], strategy__terminal="value", **changes
    )
    inputs = prepare(load_scenario(path), start=start, end=end)
    seen: dict[int, tuple[CycleInputs, CycleResult]] = {}
    run_strategy(
        inputs,
        name,
        record_bids=True,
        inspect=lambda k, ci, cr: seen.setdefault(k, (ci, cr)),
    )
    series = inputs.series
    checked_standing = False
    compared = 0
    for k in ks:
        cycle_in, result = seen[k]
        if not result.bids:  # nothing to compare (the battery had nothing to offer)
            continue
        compared += 1
        now = cycle_in.now
        engine = db.create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path}/{case[:3]}{k}.db"))
        db.upgrade(engine)
        store = BidStore(engine, clock=lambda n=now: n)
        # the feed: the scenario's prices from under a year before the decision
        first = int(np.searchsorted(series.starts, now - timedelta(days=300)))
        feed = PriceFeed(
            np.asarray(series.values[first:], dtype=np.float64),
            series.starts[first].to_pydatetime(),
            series.interval,
            series.currency,
        )
        definition = inputs.market
        sim = SimulatedMarket(definition, FeedPrices(feed, inputs.product))
        snap = _Snapshot(cycle_in)
        bidder = Bidder(
            settings,
            store,
            LoggedMarket(sim, DbTxLog(engine)),
            feed,
            lambda s=snap: (s, None),  # type: ignore[misc]
            clock=lambda n=now: n,
        )
        # the same standing commitments, in the bidder's own store
        for g, gi in cycle_in.groups.items():
            for s, f in gi.standing.items():
                checked_standing = True
                _stand(store, bidder, g, s, f)
        assert bidder.make_bids(now) > 0
        rows, _ = store.list_bids(BidFilter(), 0, 10_000)
        fresh = {bidder.bid_id(g, s) for g, gi in cycle_in.groups.items() for s in gi.fresh}
        live = [r.to_bid() for r in rows if r.bid_id in fresh]
        assert canonical(live) == canonical(result.bids), (case, k)
        if case.startswith("real-time"):
            node = cycle_in.groups["sp15"].node
            assert node.committed.sites == 1 and node.free.sites == 1
            for b in live:  # sized to the grid battery alone (2 MW), never the C&I site's
                assert b.curve.max_discharge_mw <= 2.0 + 1e-9
    assert compared >= 2
    assert checked_standing  # some decision stood on earlier awards or bids


class _Snapshot:
    """The fleet snapshot the backtest decided on (the bidder reads ``groups``)."""

    def __init__(self, cycle_in: CycleInputs) -> None:
        self.groups = {g: gi.node for g, gi in cycle_in.groups.items()}


def _stand(store: BidStore, bidder: Bidder, group: str, start: datetime, f: Any) -> None:
    curve = (
        f
        if isinstance(f, BidCurve)
        else self_schedule(
            max(float(f), 0.0), max(-float(f), 0.0), bidder.definition, bidder.product
        )
    )
    bid = Bid(
        bid_id=bidder.bid_id(group, start),
        market=bidder.definition.market_id,
        group=group,
        product=bidder.product,
        interval_start=start,
        interval_end=start + bidder.step,
        curve=curve,
    )
    store.create([bid])
    if not isinstance(f, BidCurve):
        store.record_awards(
            [
                Award(
                    award_id=f"a-{bid.bid_id}",
                    bid_id=bid.bid_id,
                    bid_version=1,
                    market=bid.market,
                    group=group,
                    product=bidder.product,
                    interval_start=start,
                    interval_end=bid.interval_end,
                    discharge_mw=max(float(f), 0.0),
                    charge_mw=max(-float(f), 0.0),
                    price_per_mwh=0.0,
                )
            ]
        )
