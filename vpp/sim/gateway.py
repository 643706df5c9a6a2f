"""The simulator as an engine component: publishes the registry, then telemetry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from vpp.bus import Bus, Consumer, Producer
from vpp.config import SimulatorSettings, TopicsSettings
from vpp.ingest.loop import publish_registry
from vpp.periodic import run_every
from vpp.sim.fleet import (
    CommandFaults,
    SimulatedFleet,
    TelemetryFaults,
    handle_commands,
    make_sites,
)
from vpp.twins.registry import SiteConfig

log = logging.getLogger(__name__)


def fleet_from_settings(
    settings: SimulatorSettings, sites: list[SiteConfig] | None = None
) -> SimulatedFleet:
    sites = sites or make_sites(
        settings.sites,
        list(settings.groups),
        seed=settings.seed,
        interval_s=settings.telemetry_interval_s,
    )
    f = settings.faults
    faults = TelemetryFaults(
        offline_per_hour=f.offline_per_hour,
        offline_s=f.offline_s,
        gap=f.gap,
        duplicate=f.duplicate,
        reorder=f.reorder,
        malformed=f.malformed,
    )
    command_faults = CommandFaults(
        ack_loss=f.ack_loss,
        ack_delay_s=f.ack_delay_s,
        reject=f.reject,
        offline_mid_interval=f.offline_mid_interval,
    )
    return SimulatedFleet(sites, seed=settings.seed, faults=faults, command_faults=command_faults)


class Simulator:
    """Simulated site gateways on the bus (a :class:`vpp.runtime.Component`)."""

    name = "simulator"

    def __init__(
        self,
        bus: Bus,
        topics: TopicsSettings,
        settings: SimulatorSettings,
        *,
        fleet: SimulatedFleet | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bus = bus
        self.topics = topics
        self.settings = settings
        self.fleet = fleet or fleet_from_settings(settings)
        self.clock = clock
        self._producer: Producer | None = None
        self._commands: Consumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._producer = await self.bus.producer()
        await publish_registry(self._producer, self.topics.sites.name, self.fleet.sites)
        self._commands = await self.bus.consumer([self.topics.commands.name], "vpp-sim-gateways")
        self._task = asyncio.create_task(self._run(), name="simulator")

    async def stop(self) -> None:
        try:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        finally:
            if self._commands is not None:
                await self._commands.stop()
            if self._producer is not None:
                await self._producer.stop()

    async def tick(self) -> int:
        """Commands in, one physics step, readings and acks out; returns readings published."""
        assert self._producer is not None
        now = self.clock()
        if self._commands is not None:
            records = await self._commands.getmany(max_records=50_000, timeout_s=0)
            if records:
                handle_commands(self.fleet, [r.value for r in records if r.value], now)
                await self._commands.commit()
        self.fleet.step(now)
        messages = self.fleet.readings(now)
        if messages:
            await self._producer.send_many(self.topics.telemetry.name, messages)
        acks = self.fleet.acks_due(now)
        if acks:
            await self._producer.send_many(self.topics.acks.name, acks)
        return len(messages)

    async def _run(self) -> None:
        await run_every(self.settings.tick_s, self.tick, log, "simulator step")

    def status(self) -> dict[str, Any]:
        f = self.fleet
        return {
            "line": f"{len(f.sites)} sites, {f.sent} readings ({f.malformed_sent} malformed), "
            f"{f.acks_sent} acks ({f.acks_lost} lost)",
            "sent": f.sent,
        }
