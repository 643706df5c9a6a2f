"""Assembles the engine from its components for `vpp run` and `vpp serve`."""

from __future__ import annotations

from typing import Any

from vpp.config import Settings
from vpp.ingest.loop import Ingest, publish_registry
from vpp.runtime import Engine
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
    return engine
