"""Assembles the engine from its components for `vpp run` and `vpp serve`."""

from __future__ import annotations

from typing import Any

from market.adapter import LoggedMarket, SimulatedMarket
from market.definitions import Product, load_market
from vpp.config import ConfigError, Settings
from vpp.ingest.loop import Ingest, publish_registry
from vpp.runtime import Engine
from vpp.scheduler import Scheduler
from vpp.store.txlog import DbTxLog
from vpp.twins.registry import load_registry_file


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


def _bidding(engine: Engine, scheduler: Scheduler) -> Any:
    from vpp.bidding.bidder import Bidder
    from vpp.bidding.feed import FeedPrices, us_realtime_feed

    settings = engine.settings.bidding
    definition = load_market(settings.market)
    feed = us_realtime_feed()
    if definition.currency != feed.currency:
        raise ConfigError(
            f"bidding.market {settings.market} trades in {definition.currency}, the embedded "
            f"price feed is {feed.currency} (use bidding.market: caiso)"
        )
    product = Product(settings.product)
    definition.product(product)  # the market must offer it
    if definition.interval(product) != feed.interval:
        raise ConfigError(
            f"bidding.product {product.value} runs {definition.interval(product)} intervals; "
            f"the embedded price feed has {feed.interval} (use energy_rt)"
        )
    market = LoggedMarket(
        SimulatedMarket(definition, FeedPrices(feed, product)), DbTxLog(engine.db)
    )
    engine.services.market = market
    bidder = Bidder(settings, engine.services.bids, market, feed, engine.services.fleet)
    engine.add(bidder)
    step = definition.interval(product).total_seconds()
    scheduler.every("bidding", step, bidder.cycle, offset_s=5)
    scheduler.every("submissions", 15, bidder.submit_cycle)
    scheduler.every("awards", step, bidder.awards_cycle, offset_s=1)
    scheduler.soon("first-bids", bidder.cycle, delay_s=5)
    return bidder


def build_engine(settings: Settings, *, simulate: bool, auto_migrate: bool) -> Engine:
    """The engine with every component that exists, upstream to downstream."""
    engine = Engine(settings, auto_migrate=auto_migrate)
    topics = settings.bus.topics
    if settings.ingest.registry_file is not None:
        engine.add(RegistryFile(engine))
    if simulate:
        from vpp.sim.gateway import Simulator

        engine.add(Simulator(engine.bus, topics, settings.simulator))
    ingest = Ingest(engine.bus, settings.ingest, topics, db=engine.db)
    engine.add(ingest)
    engine.services.fleet = lambda: (ingest.latest, ingest.store)
    from vpp.dispatch.service import DispatchService

    dispatch = DispatchService(
        settings.dispatch, engine.bus, topics, db=engine.db, store=lambda: ingest.store
    )
    ingest.event_listeners.append(dispatch.on_site_events)
    engine.services.dispatch = dispatch
    scheduler = Scheduler(settings.scheduler)
    if settings.bidding.enabled:
        bidder = _bidding(engine, scheduler)
        bidder.award_listeners.append(dispatch.on_awards)
    engine.add(dispatch)
    if settings.peak_shaving.enabled:
        _peak_shaving(engine, scheduler, lambda: ingest.store, dispatch)
    engine.add(scheduler)
    return engine


def _peak_shaving(engine: Engine, scheduler: Scheduler, store: Any, dispatch: Any) -> None:
    from vpp.peak_shaving import PeakShaver

    cfg = engine.settings.peak_shaving
    shaver = PeakShaver(cfg, engine.db, store, dispatch)
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
