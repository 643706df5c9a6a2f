"""The engine's market loop on a real database: scenario bids per group from the live
fleet, operator review, auto-approval, submission through the transaction log, awards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from market.adapter import LoggedMarket, SimulatedMarket
from market.bids import BidCurve, PriceBands, Segment
from market.definitions import Product, load_market
from market.lifecycle import BidAction
from optimizer.curves import extreme_paths
from tests.api_support import make_fleet
from vpp.bidding.bidder import Bidder, effective_market
from vpp.bidding.feed import FeedPrices, us_realtime_feed
from vpp.config import BiddingSettings, DatabaseSettings, PriceFileSettings
from vpp.store import db
from vpp.store.bids import BidFilter, BidRow, BidStore, InvalidBidError
from vpp.store.keys import Principal
from vpp.store.tables import market_txlog
from vpp.store.txlog import DbTxLog

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def setup(tmp_path: Path, **settings: object) -> tuple[Bidder, BidStore, Clock, SimulatedMarket]:
    """A bidder on a fresh database, clearing on the market's replayed prices (the
    engine's own choice of feed, :func:`vpp.bidding.feed.market_feed`)."""
    from vpp.bidding.feed import market_feed

    engine = db.create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path}/b.db"))
    db.upgrade(engine)
    clock = Clock()
    store = BidStore(engine, clock=clock)
    cfg = BiddingSettings(**settings)
    definition, product = effective_market(cfg), Product(cfg.product)
    feed, _ = market_feed(cfg.prices, definition.currency, definition.interval(product))
    sim = SimulatedMarket(definition, FeedPrices(feed, product))
    market = LoggedMarket(sim, DbTxLog(engine))
    fleet_store, hier = make_fleet()
    bidder = Bidder(cfg, store, market, feed, lambda: (hier.latest, fleet_store), clock=clock)
    return bidder, store, clock, sim


def test_bid_cycle_makes_valid_drafts_per_group_sized_to_p90(tmp_path: Path) -> None:
    bidder, store, _, _ = setup(tmp_path)
    made = bidder.make_bids()
    rows, count = store.list_bids(BidFilter(), 0, 100)
    assert made == count > 0 and {r.group for r in rows} == {"north", "south"}
    gate_min = min(r.gate_closure for r in rows)
    assert gate_min >= NOW + timedelta(minutes=10)  # the review window
    detail = store.get(rows[0].bid_id)
    assert detail.solve_report is not None
    assert detail.solve_report["status"] == "optimal"
    battery = detail.solve_report["battery"]
    # 3 sites x 500 kW each at full health: P90 = nameplate; energy from the twins' bounds
    assert battery["p_discharge_max_mw"] == pytest.approx(1.5, rel=1e-6)
    for r in rows:
        assert sum(s["quantity_mw"] for s in r.discharge) <= 1.5 + 1e-9
    report = detail.solve_report
    assert report["currency"] == "USD" and report["free"]["sites"] == 3
    assert report["committed_elsewhere"]["sites"] == 0
    first = report["intervals"][0]
    assert first["price_p10"] <= first["price_p50"] <= first["price_p90"]
    assert first["revenue_p10"] <= first["revenue_p90"]
    assert bidder.make_bids() == 0  # the same intervals are not bid twice


def test_review_submit_and_awards_close_the_loop(tmp_path: Path) -> None:
    bidder, store, clock, sim = setup(tmp_path)
    bidder.make_bids()
    rows, _ = store.list_bids(BidFilter(group="north"), 0, 100)
    first = rows[0]
    operator = Principal("k1", "alice", "operator")
    store.review(first.bid_id, 1, BidAction.APPROVE, operator)
    clock.now = first.gate_closure - timedelta(seconds=30)
    assert bidder.submit_due() == 1
    assert store.row(first.bid_id).status == "accepted"
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(market_txlog)).scalar() == 2
    assert bidder.submit_due() == 0 and sim.submissions == 1  # never twice
    clock.now = first.interval_start + timedelta(seconds=2)
    seen: list[object] = []
    bidder.award_listeners.append(seen.extend)
    assert bidder.collect_awards() == 1
    assert store.row(first.bid_id).status == "awarded"
    assert len(seen) == 1
    assert bidder.collect_awards() == 0


def test_auto_approve_only_unedited_bids(tmp_path: Path) -> None:
    bidder, store, clock, _ = setup(tmp_path, auto_approve=True)
    bidder.make_bids()
    rows, _ = store.list_bids(BidFilter(), 0, 100)
    same_gate = [r for r in rows if r.gate_closure == rows[0].gate_closure]
    edited = same_gate[0]
    store.edit(
        edited.bid_id,
        1,
        BidCurve(discharge=[Segment(price_per_mwh=60, quantity_mw=0.01)]),
        Principal("k1", "alice", "operator"),
    )
    clock.now = rows[0].gate_closure - timedelta(seconds=30)
    submitted = bidder.submit_due()
    assert submitted == len(same_gate) - 1
    assert store.row(edited.bid_id).status == "draft"  # waits for an operator
    reviews = store.get(same_gate[1].bid_id).reviews
    assert reviews[0]["actor"].startswith("engine policy bidding.auto_approve")
    assert "auto-approved" in reviews[0]["comment"]
    assert store.row(same_gate[1].bid_id).approved_by == reviews[0]["actor"]


def test_bidder_reads_one_snapshot_never_the_live_store(tmp_path: Path) -> None:
    """Bids come from the snapshot the hierarchy made: efficiencies included (the store
    changing underneath a worker-thread solve must not leak in), and the live store is not
    needed at all."""
    engine = db.create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path}/b.db"))
    db.upgrade(engine)
    clock = Clock()
    store = BidStore(engine, clock=clock)
    feed = us_realtime_feed()
    sim = SimulatedMarket(load_market("caiso"), FeedPrices(feed, Product.ENERGY_RT))
    fleet_store, hier = make_fleet()
    snap = hier.latest
    assert snap is not None
    north = snap.groups["north"]
    assert north.eta_charge == pytest.approx(0.95) and north.eta_discharge == pytest.approx(0.95)
    # The live store changes after the snapshot: a worse battery everywhere.
    fleet_store.column("eff_discharge")[:] = 0.5
    assert snap.groups["north"].eta_discharge == pytest.approx(0.95)
    assert snap.site("s0") is not None and snap.site("s0").eta_discharge == pytest.approx(0.95)  # type: ignore[union-attr]
    bidder = Bidder(
        BiddingSettings(),
        store,
        LoggedMarket(sim, DbTxLog(engine)),
        feed,
        lambda: (snap, None),
        clock=clock,
    )
    assert bidder.make_bids() > 0
    rows, _ = store.list_bids(BidFilter(), 0, 100)
    battery = store.get(rows[0].bid_id).solve_report["battery"]  # type: ignore[index]
    assert battery["eff_discharge"] == pytest.approx(0.95)


def test_standing_bids_leave_new_bids_only_the_energy_not_yet_promised(tmp_path: Path) -> None:
    """A megawatt-hour is promised once: the next cycle holds every standing bid of the
    last one as it is (inside its horizon, fixed in the model; before it, carried forward as
    the range from "nothing clears" to "everything clears"), and bids only what is new."""
    from vpp.bidding.cycle import carry_forward

    bidder, store, clock, _ = setup(tmp_path, strategy="scenarios")  # curves stand
    snap, _ = bidder.fleet()
    assert snap is not None
    first = bidder.cycle_inputs(NOW, snap.groups)
    assert first is not None and not first.groups["north"].standing
    assert bidder.make_bids() > 0
    rows, _ = store.list_bids(BidFilter(group="north"), 0, 100)
    stored = {r.interval_start: r.to_bid().curve for r in rows}
    clock.now = NOW + bidder.step
    later = bidder.cycle_inputs(clock.now, snap.groups)
    assert later is not None
    north = later.groups["north"]
    assert north.standing == stored  # every live bid, as stored
    # only what holds no bid yet: the new interval, and any the last plan left empty
    assert north.fresh == {s for s in later.horizon if s not in stored}
    assert max(later.horizon) in north.fresh
    gap = [s for s in stored if s < later.horizon[0]]
    assert gap  # the interval the horizon moved past is carried forward
    battery = bidder.bid_cycle._battery("north", snap.groups["north"])
    assert not isinstance(battery, str)
    floor, cap = bidder.definition.price_limits(bidder.product)
    lo, hi = carry_forward(
        battery.e_initial_mwh,
        north.standing,
        clock.now,
        later.horizon[0],
        bidder.step,
        battery,
        floor,
        cap,
    )
    h = bidder.step.total_seconds() / 3600
    low, high = extreme_paths([stored[s] for s in gap], floor, cap, h, 0.95, 0.95)
    assert lo == pytest.approx(max(battery.e_initial_mwh + low[-1], 0.0))
    assert hi == pytest.approx(min(battery.e_initial_mwh + high[-1], battery.e_max_mwh))
    # The new interval gets only what every combination of the standing awards leaves:
    # both extreme paths of the window (standing curves and the new one) stay in limits.
    result = bidder.bid_cycle.run(later)
    made = result.groups["north"]
    assert made.report["energy_carried_mwh"] == {"low": round(lo, 6), "high": round(hi, 6)}
    assert made.battery.e_initial_mwh == pytest.approx(lo)
    held = [k for k, s in enumerate(later.horizon) if s in stored]
    assert [made.curves[k] for k in held] == [stored[later.horizon[k]] for k in held]
    low, high = extreme_paths(made.curves, floor, cap, h, 0.95, 0.95)
    assert lo + low.min() >= -1e-9
    assert hi + high.max() <= battery.e_max_mwh + 1e-9
    # Rejected bids promise nothing.
    operator = Principal("k1", "alice", "operator")
    for r in store.list_bids(BidFilter(group="north"), 0, 100)[0]:
        store.review(r.bid_id, r.version, BidAction.REJECT, operator, "test")
    assert bidder.standing("north", NOW, NOW + timedelta(days=1)) == {}


@pytest.mark.parametrize("minutes", [None, 60])
def test_the_engine_bids_the_eu_day_ahead_auction_a_trading_day_at_a_time(
    tmp_path: Path, minutes: int | None
) -> None:
    """EU day-ahead: one gate (12:00 CET the day before) closes a trading day's products —
    96 quarter-hours as SDAC clears since 2025-10-01, or 24 hours in its earlier design
    (``bidding.interval_minutes: 60``); the engine bids them in one cycle on the replayed
    German prices (EUR, each hour held over its quarters), the simulated auction clears
    them, and every award arrives at its interval."""
    # 2026-11-21 12:00 UTC = 13:00 CET: the 22nd's gate has passed
    bidder, store, clock, _ = setup(
        tmp_path,
        market="eu-day-ahead",
        product="energy_da",
        auto_approve=True,
        interval_minutes=minutes,
    )
    step = timedelta(minutes=minutes or 15)
    per_day = int(timedelta(days=1) / step)
    assert bidder.step == step
    assert bidder.make_bids() > 0
    rows, count = store.list_bids(BidFilter(group="north"), 0, 1000)
    day_start = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)  # 2026-11-23 00:00 CET
    day = {day_start + k * step for k in range(per_day)}
    assert {r.interval_start for r in rows} <= day
    if minutes is None:  # quarter-hour products, not hours in disguise
        assert any(r.interval_start.minute for r in rows)
    assert all(r.gate_closure == datetime(2026, 11, 22, 11, tzinfo=UTC) for r in rows)
    assert any(r.discharge for r in rows) and any(r.charge for r in rows)
    detail = store.get(rows[0].bid_id)
    assert detail.solve_report is not None and detail.solve_report["currency"] == "EUR"
    assert detail.solve_report["horizon"] == per_day  # the whole trading day planned at once
    assert bidder.make_bids() == 0  # the day is bid; the next day's gate is not open yet
    clock.now = datetime(2026, 11, 22, 10, 59, 30, tzinfo=UTC)
    submitted = bidder.submit_due()
    assert submitted >= count and bidder.submit_due() == 0  # both groups' bids, once
    assert all(store.row(r.bid_id).status == "accepted" for r in rows)
    clock.now = day_start + timedelta(days=1, seconds=2)
    assert bidder.collect_awards() > 0
    statuses = {store.row(r.bid_id).status for r in rows}
    assert statuses <= {"awarded", "unawarded", "accepted"} and "awarded" in statuses


def test_a_group_below_the_markets_smallest_bid_says_so(tmp_path: Path) -> None:
    """The EU auction takes nothing under 0.1 MW: a group whose free power is smaller makes
    no bid, and the status line says why instead of showing zero bids unexplained."""
    bidder, _, _, _ = setup(tmp_path, market="eu-day-ahead", product="energy_da")
    bidder.definition = bidder.definition.model_copy(
        update={"curve": bidder.definition.curve.model_copy(update={"min_quantity_mw": 5.0})}
    )
    assert bidder.make_bids() == 0
    line = bidder.status()["line"]
    assert "below eu-day-ahead's smallest bid (5000 kW)" in line


def test_each_shipped_market_has_its_replayed_prices_or_a_clear_refusal() -> None:
    from datetime import timedelta as td

    from vpp.bidding.feed import feed_for, us_realtime_feed

    eur, what = feed_for("EUR", td(hours=1))
    assert eur.currency == "EUR" and eur.interval == td(hours=1) and "day-ahead" in what
    quarters, what = feed_for("EUR", td(minutes=15))  # SDAC since 2025-10: each hour held
    assert quarters.interval == td(minutes=15) and "held" in what
    assert (quarters.values[:8] == np.repeat(eur.values[:2], 4)).all()
    usd_h, what = feed_for("USD", td(hours=1))
    rt = us_realtime_feed()
    assert usd_h.values[0] == pytest.approx(float(rt.values[:12].mean())) and "proxy" in what
    with pytest.raises(LookupError, match="no shipped AUD prices"):
        feed_for("AUD", td(minutes=5))


DATA = Path(__file__).resolve().parents[1] / "scenarios" / "data"


def aud_prices(tmp_path: Path) -> dict[str, object]:
    """``bidding.prices`` for the AEMO-like market: no AUD prices ship, so the test reads
    the shipped US five-minute prices (Q1 2019) as if they were AUD/MWh — test data only."""
    return {
        "file": DATA / "dervet_rt_2019_q1_5min.csv",
        "time_column": "Datetime (he)",
        "column": "DA Price ($/kWh)",
        "unit": "AUD/MWh",
        "interval": "end",
        "timezone": "Etc/GMT+8",
        "time_format": "%m/%d/%Y %H:%M",
    }


def test_the_engine_bids_aemo_on_band_prices_fixed_for_the_trading_day(tmp_path: Path) -> None:
    """The day's first cycle chooses each group's ten band prices per side and stores them;
    every later cycle's curves use exactly those; the market takes the bands with the first
    submission and refuses a rebid that changes them; an operator's edit off the bands is
    refused naming them."""
    bidder, store, clock, sim = setup(
        tmp_path,
        market="aemo",
        product="energy_rt",
        prices=aud_prices(tmp_path),
        strategy="scenarios",  # curves with priced bands
    )
    aemo = load_market("aemo")
    assert bidder.make_bids() > 0
    first, _ = store.list_bids(BidFilter(group="north"), 0, 100)
    day = aemo.trading_day(first[0].interval_start)
    bands = store.bands_of("aemo", "north", "energy_rt", day)
    assert bands is not None and 0 < len(bands.discharge) <= 10 and len(bands.charge) <= 10
    report = store.get(first[0].bid_id).solve_report
    assert report is not None and report["price_bands"][day.isoformat()] == bands.model_dump()

    def on_bands(rows: list[BidRow]) -> None:
        for r in rows:
            assert {s["price_per_mwh"] for s in r.discharge} <= set(bands.discharge)
            assert {s["price_per_mwh"] for s in r.charge} <= set(bands.charge)

    on_bands(first)
    clock.now += timedelta(minutes=30)  # a later cycle, same trading day: new intervals
    assert bidder.make_bids() > 0
    later, _ = store.list_bids(BidFilter(group="north"), 0, 200)
    assert len(later) > len(first)
    on_bands(later)
    assert store.bands_of("aemo", "north", "energy_rt", day) == bands  # chosen once
    first = sorted((r for r in later if r.gate_closure > clock.now), key=lambda r: r.interval_start)

    # An edit off the bands is refused, naming them.
    off = bands.discharge[0] + 0.5
    with pytest.raises(InvalidBidError, match="not one of the trading day's discharge price"):
        store.edit(
            first[0].bid_id,
            first[0].version,
            BidCurve(discharge=[Segment(price_per_mwh=off, quantity_mw=0.1)]),
            Principal("k1", "alice", "operator"),
        )

    # Submission: the market takes the bands with the day's first bid.
    operator = Principal("k1", "alice", "operator")
    store.review(first[0].bid_id, first[0].version, BidAction.APPROVE, operator)
    clock.now = first[0].gate_closure - timedelta(seconds=30)
    assert bidder.submit_due() == 1
    assert store.row(first[0].bid_id).status == "accepted"
    # A rebid whose declaration differs is refused by the market itself.
    rebid = store.row(first[1].bid_id).to_bid(
        PriceBands(discharge=[*bands.discharge[:-1], bands.discharge[-1] + 1], charge=bands.charge)
    )
    result = sim.submit("tx-changed-bands", [rebid])
    assert rebid.bid_id in result.refused
    assert "price bands are fixed" in result.refused[rebid.bid_id]


def test_aemo_without_a_price_file_is_refused_naming_the_setting(tmp_path: Path) -> None:
    from vpp.config import ConfigError, Settings
    from vpp.wiring import build_engine

    cfg = Settings.model_validate(
        {
            "bidding": {"market": "aemo", "product": "energy_rt"},
            "database": {"url": f"sqlite:///{tmp_path}/e.db"},
        }
    )
    with pytest.raises(ConfigError, match=r"give bidding\.prices, a AUD/MWh price file"):
        build_engine(cfg, simulate=True, auto_migrate=True)
    bad = dict(aud_prices(tmp_path), unit="USD/MWh")
    cfg = cfg.model_copy(
        update={"bidding": cfg.bidding.model_copy(update={"prices": PriceFileSettings(**bad)})}
    )
    with pytest.raises(ConfigError, match="prices in USD, the market settles in AUD"):
        build_engine(cfg, simulate=True, auto_migrate=True)


def test_the_engine_bids_eu_day_ahead_on_lear_with_the_replayed_features(tmp_path: Path) -> None:
    """The embedded demo's day-ahead bidder forecasts with LEAR on the replayed DE prices
    and ENTSO-E's load, wind and solar forecasts (the shipped feature feed). Values not
    published by the decision (the day bid's forecasts come out the morning before its
    gate) are filled by the documented rule and counted in the solve report. SDAC bids
    quarter-hours: LEAR forecasts the hours (market.hourly) on the hourly features."""
    from vpp.bidding.feed import features_feed

    engine = db.create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path}/b.db"))
    db.upgrade(engine)
    clock = Clock()
    store = BidStore(engine, clock=clock)
    cfg = BiddingSettings(market="eu-day-ahead", product="energy_da", forecast="lear")
    from vpp.bidding.feed import market_feed

    definition, product = effective_market(cfg), Product(cfg.product)
    feed, _ = market_feed(None, definition.currency, definition.interval(product))
    fleet_store, hier = make_fleet()
    bidder = Bidder(
        cfg,
        store,
        LoggedMarket(SimulatedMarket(definition, FeedPrices(feed, product)), DbTxLog(engine)),
        feed,
        lambda: (hier.latest, fleet_store),
        clock=clock,
        features=features_feed(None, definition.currency, definition.interval(product)),
    )
    assert bidder.strategy.forecaster.name == "lear"
    assert bidder.make_bids() > 0
    rows, _ = store.list_bids(BidFilter(group="north"), 0, 100)
    report = store.get(rows[0].bid_id).solve_report
    assert report is not None
    assert report["forecast"] == "lear"  # no fallback
    assert report["feature_fills"] == 72  # the day bid's 3 x 24 hourly forecasts: not out yet
    assert "filled" in report["forecast_note"]
    # one hour before the gate the day's load and wind/solar forecasts are out
    gate = definition.gate_closure(product, rows[0].interval_start)
    later = bidder.cycle_inputs(
        gate - timedelta(minutes=30), {"north": hier.latest.groups["north"]}
    )  # type: ignore[union-attr]
    assert later is not None and later.features is not None
    day = later.features.on(pd.DatetimeIndex(later.horizon))
    assert not np.isnan(day).any()
