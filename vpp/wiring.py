"""Assembles the engine from its components for `vpp run` and `vpp serve`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from market.adapter import LoggedMarket, SimulatedMarket
from market.definitions import Product
from vpp.clock import Clock
from vpp.config import ConfigError, Settings
from vpp.fleet.combined import FleetView
from vpp.fleet.hierarchy import GroupsView
from vpp.fleet.partials import whole_fleet
from vpp.ingest.loop import Ingest, publish_registry
from vpp.leader import Leadership
from vpp.runtime import Engine
from vpp.scheduler import Scheduler
from vpp.store.txlog import DbTxLog
from vpp.twins.registry import load_registry_file
from vpp.twins.store import FleetStore

if TYPE_CHECKING:  # imported lazily below: only what is enabled is loaded
    from vpp.bidding.bidder import Bidder
    from vpp.dispatch.service import DispatchService
    from vpp.peak_shaving import PeakShaver

log = logging.getLogger(__name__)


class RegistryFile:
    """Publishes a YAML/CSV site registry to ``vpp.sites`` at start-up."""

    name = "registry-file"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.count = 0

    async def start(self) -> None:
        path = self.engine.settings.ingest.registry_file
        assert path is not None
        sites = load_registry_file(path)
        producer = await self.engine.bus.producer()
        try:
            await publish_registry(producer, self.engine.settings.bus.topics.sites.name, sites)
        finally:
            await producer.stop()
        self.count = len(sites)

    async def stop(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"sites": self.count}


def _bidding(
    engine: Engine, scheduler: Scheduler, fleet: Callable[[], tuple[GroupsView | None, Any]]
) -> Bidder:
    from market.prices import PriceDataError
    from vpp.bidding.bidder import Bidder, effective_market
    from vpp.bidding.feed import FeedPrices, features_feed, market_feed

    settings = engine.settings.bidding
    definition = effective_market(settings)
    product = Product(settings.product)
    try:
        definition.product(product)  # the market must offer it
    except KeyError:
        raise ConfigError(
            f"bidding.product {product.value}: {definition.market_id} offers "
            f"{', '.join(p.value for p in definition.products)}"
        ) from None
    try:
        feed, _ = market_feed(settings.prices, definition.currency, definition.interval(product))
    except LookupError as exc:
        raise ConfigError(
            f"bidding.market {settings.market} ({product.value}): {exc} for the simulated "
            "market to clear on (shipped: caiso energy_rt and energy_da, eu-day-ahead "
            f"energy_da); give bidding.prices, a {definition.currency}/MWh price file"
        ) from None
    except PriceDataError as exc:
        raise ConfigError(f"bidding.prices: {exc}") from None
    try:
        features = features_feed(
            settings.features, definition.currency, definition.interval(product)
        )
    except (PriceDataError, FileNotFoundError) as exc:
        raise ConfigError(f"bidding.features: {exc}") from None
    if features is not None:
        gaps = {k: v for k, v in features.gaps().items() if v}
        if gaps:
            log.warning("bidding.features: gaps (filled at decision time): %s", gaps)
    leadership = Leadership(engine.db, role="bidder", clock=engine.clock.now)
    market = LoggedMarket(
        SimulatedMarket(definition, FeedPrices(feed, product), clock=engine.clock.now),
        DbTxLog(engine.db, engine.clock.now, fence=leadership.fence, on_fenced=leadership.fenced),
    )
    engine.services.market = market
    bidder = Bidder(
        settings,
        engine.bids,
        market,
        feed,
        fleet,
        clock=engine.clock.now,
        features=features,
    )
    bidder.leading = leadership.is_leader
    leadership.listeners.append(bidder.take_over)
    engine.add(bidder)
    engine.add(leadership)  # after the bidder: elected once the bidder is ready

    async def first_bids() -> None:
        """Bid and submit at once instead of at the next scheduled cycle (up to 5 minutes
        away): at start-up and when this instance is elected. While the fleet has not
        reported (instances joining their consumer group, partials not combined yet) it
        tries again every 5 s."""
        if not leadership.is_leader():
            return
        await asyncio.to_thread(bidder.make_bids)
        await asyncio.to_thread(bidder.submit_due)
        if not bidder.fleet_seen:
            scheduler.soon("first-bids", first_bids, delay_s=5)

    async def lead() -> None:
        elected = leadership.elected
        await asyncio.to_thread(leadership.tick)
        if leadership.elected != elected:  # a new term: its predecessor stopped bidding
            scheduler.soon("first-bids", first_bids, delay_s=0.0)

    scheduler.every("leadership", engine.settings.leader.check_every_s, lead)
    step = definition.interval(product).total_seconds()
    # every interval, and at least every 5 minutes: a cycle bids only what is not bid yet,
    # so a day-ahead market (hourly products, one daily gate) still gets its first bids
    # soon after the fleet has reported, not an hour later
    scheduler.every("bidding", min(step, 300.0), bidder.cycle, offset_s=5)
    scheduler.every("submissions", 15, bidder.submit_cycle)
    scheduler.every("bid-settlement", 15, bidder.settle_cycle, offset_s=7)
    scheduler.every("awards", step, bidder.awards_cycle, offset_s=1)
    scheduler.soon("first-bids", first_bids, delay_s=5)
    return bidder


def _is_site(ingest: Ingest, node: str) -> bool:
    store = ingest.store
    return node not in store.group_index and node in store.index


def build_engine(
    settings: Settings, *, simulate: bool, auto_migrate: bool, clock: Clock | None = None
) -> Engine:
    """The engine with every component that exists, upstream to downstream; every one of
    them reads time from ``clock`` (the wall by default)."""
    engine = Engine(settings, auto_migrate=auto_migrate, clock=clock)
    topics = settings.bus.topics
    if settings.ingest.registry_file is not None:
        engine.add(RegistryFile(engine))
    if simulate:
        from vpp.sim.gateway import Simulator

        engine.add(Simulator(engine.bus, topics, settings.simulator, clock=engine.clock.time))
    ingest = Ingest(engine.bus, settings.ingest, topics, db=engine.db, clock=engine.clock.time)
    engine.add(ingest)
    engine.services.fleet = lambda: (ingest.latest, ingest.store)
    speed = float(getattr(engine.clock, "speed", 1.0))
    view = FleetView(engine.bus, settings.ingest, topics, clock=engine.clock.time, speed=speed)
    engine.add(view)
    engine.services.combined = view.view
    from vpp.dispatch.service import DispatchService
    from vpp.dispatch.shares import ShareSource

    # On Kafka other instances may share the fleet: targets travel on the targets topic and
    # each instance covers its share (alone, the share is the whole target).
    shared = settings.bus.kind == "kafka"
    share = None
    if shared:
        share = ShareSource(lambda: ingest.member, view.fresh, lambda node: _is_site(ingest, node))
    dispatch = DispatchService(
        settings.dispatch,
        engine.bus,
        topics,
        db=engine.db,
        store=lambda: ingest.store,
        clock=engine.clock.time,
        instance=ingest.member if shared else None,
        share=share,
    )
    if shared:
        ingest.shortfalls = dispatch.core.shortfalls
        ingest.ownership_listeners.append(dispatch.on_ownership)
    ingest.event_listeners.append(dispatch.on_site_events)
    engine.services.dispatch = dispatch
    scheduler = Scheduler(settings.scheduler, engine.clock)
    if settings.bidding.enabled:

        def fleet_to_bid() -> tuple[GroupsView | None, FleetStore | None]:
            """The bidder offers the whole fleet's capacity: every instance's partials
            combined when there are several instances, else this instance's snapshot."""
            return whole_fleet(view.view(), ingest.latest), ingest.store

        bidder = _bidding(engine, scheduler, fleet_to_bid)
        bidder.award_listeners.append(dispatch.on_awards)
        # Bids are sized on power every free site can hold over the whole bid horizon (a
        # day-ahead auction: the trading day; capped at the fleet's duration, see estimates).
        spec = bidder.definition.product(bidder.product)
        bid_h = (
            float(spec.horizon_hours)
            if spec.gate_closure.kind == "daily"
            else settings.bidding.horizon_intervals * bidder.step.total_seconds() / 3600
        )
        ingest.hierarchy.settings = replace(ingest.hierarchy.settings, bid_horizon_h=bid_h)
    engine.add(dispatch)
    shaver = None
    if settings.peak_shaving.enabled:
        shaver = _peak_shaving(engine, scheduler, lambda: ingest.store, dispatch)
    engine.services.peak_shaver = shaver
    if shaver is not None:
        dispatch.core.committed_sites = shaver.committed_sites

    def committed(store: FleetStore) -> npt.NDArray[np.bool_]:
        """Sites committed elsewhere now: on a target of their own, or peak shaving."""
        sites = dispatch.core.pinned_sites()
        if shaver is not None:
            sites += shaver.committed_sites()
        mask = np.zeros(store.n, dtype=bool)
        if sites:
            rows = store.rows_of(sites)
            mask[rows[rows >= 0]] = True
        return mask

    ingest.committed = committed
    if settings.history.enabled:
        _history(engine, scheduler, lambda: ingest.latest)
    engine.add(scheduler)
    return engine


def _history(engine: Engine, scheduler: Scheduler, snapshot: Callable[[], Any]) -> None:
    """Group aggregates recorded every ``aggregate_every_s``; history pruned hourly."""
    from vpp.store.history import AggregateRecorder

    cfg = engine.settings.history
    recorder = AggregateRecorder(
        engine.db, snapshot, engine.clock.now, cfg.retention_days, cfg.audit_retention_days
    )
    engine.services.history = recorder

    async def record() -> None:
        await asyncio.to_thread(recorder.record)

    async def prune() -> None:
        await asyncio.to_thread(recorder.prune)

    scheduler.every("history-aggregates", cfg.aggregate_every_s, record, offset_s=30)
    scheduler.every("history-retention", 3600.0, prune, offset_s=120)


def _peak_shaving(
    engine: Engine,
    scheduler: Scheduler,
    store: Callable[[], FleetStore | None],
    dispatch: DispatchService,
) -> PeakShaver:
    from vpp.peak_shaving import PeakShaver

    cfg = engine.settings.peak_shaving
    shaver = PeakShaver(cfg, engine.db, store, dispatch, clock=engine.clock.time)
    engine.add(shaver)

    async def replan() -> None:
        await shaver.replan()

    async def first() -> None:
        await shaver.sample()
        await shaver.replan()

    scheduler.every("peak-sample", cfg.sample_every_s, shaver.sample)
    # Re-plan shortly before each interval boundary, so the first planned interval is next.
    lead = min(30.0, cfg.replan_every_s / 2)
    scheduler.every("peak-replan", cfg.replan_every_s, replan, offset_s=cfg.replan_every_s - lead)
    scheduler.soon("peak-first", first, delay_s=15)
    return shaver
