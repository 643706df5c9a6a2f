"""The engine's own twins, dispatch and peak shaving against a simulated fleet, in simulated
time.

This is the production path from awards to delivered energy, driven by a
:class:`vpp.clock.SimClock` instead of the wall and by direct calls instead of the bus:

- the simulated gateways (:class:`vpp.sim.fleet.SimulatedFleet`: battery physics, the
  scenario's loads, faults — silent sites, lost readings, lost and delayed acks,
  rejections) report telemetry as contract bytes, which the ingest's batch decoder and the
  twins' fold (:meth:`vpp.twins.store.FleetStore.fold`) take in, as they do from Kafka;
- the fleet hierarchy reports each group's health (P50/P90) and its free capacity;
- awards become targets of the dispatch core (:class:`vpp.dispatch.core.DispatchCore`):
  the split, commands with retries and timeouts, re-dispatch, follow checks; commands are
  encoded to the contract and handled by the gateways, which answer with acks;
- tariffed sites are re-planned by the peak-shaving planner
  (:class:`vpp.peak_shaving.PeakShaver`) from the load profile it learns from telemetry.

Time moves from event to event — the telemetry grid, command deadlines, ack arrivals,
target boundaries and whatever the runner asks for — never by sleeping. Everything random
derives from the scenario's seed, so a run is reproducible.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from vpp.clock import SimClock
from vpp.config import DispatchSettings, PeakShavingSettings
from vpp.dispatch.contract import Ack, ack_decoder, command_encoder
from vpp.dispatch.core import DispatchCore, Effects
from vpp.dispatch.targets import GroupTarget
from vpp.fleet.estimates import EstimateSettings
from vpp.fleet.hierarchy import FleetHierarchy, FleetSnapshot
from vpp.framing import decode_each
from vpp.peak_shaving import PeakShaver
from vpp.sim.fleet import CommandFaults, LoadSource, SimulatedFleet, TelemetryFaults
from vpp.sim.fleet import handle_commands as gateways_handle
from vpp.telemetry.decode import decode_batch
from vpp.twins.registry import SiteConfig
from vpp.twins.store import FleetStore, IngestLimits

F64 = npt.NDArray[np.float64]


@dataclass
class ExecutorStats:
    readings: int = 0
    refused: int = 0
    commands_sent: int = 0  # messages on the command topic (first sends and resends)
    acks: int = 0
    events: Counter[str] = field(default_factory=Counter)  # site events by kind
    peak_plans: int = 0
    peak_skipped: int = 0


class FleetExecutor:
    def __init__(
        self,
        sites: list[SiteConfig],
        *,
        start_s: float,
        seed: int,
        soc0: F64,
        loads: LoadSource | None,
        telemetry_faults: TelemetryFaults,
        command_faults: CommandFaults,
        dispatch: DispatchSettings,
        peak_shaving: PeakShavingSettings | None,
        sustain_h: float = 1.0,
    ) -> None:
        self.clock = SimClock(start_s)
        self.fleet = SimulatedFleet(
            sites,
            seed=seed,
            faults=telemetry_faults,
            command_faults=command_faults,
            jitter=0.0,
            loads=loads,
            soc0=soc0,
            aligned=True,
        )
        self.store = FleetStore(partitions=1, limits=IngestLimits(max_future_skew_s=1.0))
        for cfg in sites:
            self.store.register(cfg)
        self.hierarchy = FleetHierarchy(self.store, EstimateSettings(sustain_h=sustain_h))
        self.core = DispatchCore(dispatch, lambda: self.store, seed=seed)
        self.grid_s = float(min(cfg.telemetry_interval_s for cfg in sites))
        self.committed = np.array([cfg.tariff is not None for cfg in sites])
        committed_ids = tuple(cfg.site_id for cfg in sites if cfg.tariff is not None)
        self.core.committed_sites = lambda: committed_ids
        self.shaver: PeakShaver | None = None
        self._replan_s = 0.0
        if peak_shaving is not None and self.committed.any():
            self.shaver = PeakShaver(
                peak_shaving, None, lambda: self.store, None, clock=self.clock.time
            )
            self._replan_s = float(peak_shaving.replan_every_s)
        self.stats = ExecutorStats()
        self.closed: list[dict[str, Any]] = []  # closed dispatch intervals (the dispatch log)
        self.last_event: dict[str, str] = {}  # command id -> its newest ledger event
        self.fleet.step(start_s)

    @property
    def now(self) -> float:
        return self.clock.time()

    # -- inputs ----------------------------------------------------------------------------

    def add_targets(self, targets: list[GroupTarget]) -> None:
        self.core.add_targets(targets, self.now)

    def snapshot(self) -> FleetSnapshot:
        """The hierarchy now, with tariffed sites committed to peak shaving."""
        return self.hierarchy.refresh(self.now, committed=self.committed)

    # -- time ------------------------------------------------------------------------------

    def _next_event(self, after: float) -> float:
        grid = self.grid_s
        candidates = [(np.floor(after / grid + 1e-9) + 1.0) * grid]
        if self._replan_s:
            candidates.append((np.floor(after / self._replan_s + 1e-9) + 1.0) * self._replan_s)
        for t in (self.core.next_due(), self.fleet.next_ack_due()):
            if t is not None and t > after:
                candidates.append(t)
        for d in self.core.deliveries.values():
            for edge in (d.target.interval_start.timestamp(), d.target.interval_end.timestamp()):
                if edge > after:
                    candidates.append(edge)
        return float(min(candidates))

    def advance(self, t_end: float) -> None:
        """Run every event up to and including ``t_end``."""
        while True:
            t = self._next_event(self.now)
            if t >= t_end - 1e-9:
                break
            self._instant(t)
        if t_end > self.now + 1e-9:
            self._instant(t_end)

    def _instant(self, t: float) -> None:
        self.clock.advance_to(t)
        fleet = self.fleet
        fleet.step(t)
        messages = fleet.readings(t)
        events = []
        if messages:
            cols, refusals = decode_batch([v for _, v in messages])
            outcome = self.store.fold(cols, t)
            self.stats.readings += len(messages)
            self.stats.refused += len(refusals) + len(outcome.refusals)
            events.extend(outcome.events)
        events.extend(self.store.evaluate(t))
        for e in events:
            self.stats.events[f"{e.family}:{e.to_state}"] += 1
        self.core.on_site_events(events)
        if self.shaver is not None:
            self.shaver.profiles.sample(self.store, t)
            if abs(t / self._replan_s - round(t / self._replan_s)) < 1e-9:
                self._replan(t)
        self.settle()

    def settle(self) -> None:
        """Run dispatch at the current instant until it is quiet: acks due now, the tick,
        and the commands (and acks) that follow without time passing."""
        t = self.now
        fleet = self.fleet
        for _ in range(8):  # acks due now can trigger commands whose acks are due now
            acks = fleet.acks_due(t)
            if acks:
                self._apply(self.core.on_acks(_decode_acks([v for _, v in acks]), t), t)
                self.stats.acks += len(acks)
            eff = self.core.tick(t)
            self._apply(eff, t)
            due = fleet.next_ack_due()
            if not eff.commands and (due is None or due > t):
                break

    def _replan(self, t: float) -> None:
        assert self.shaver is not None
        for site_plan, row in self.shaver.plan_all(t):
            targets = self.shaver.dispatchable(site_plan)
            if self.core.conflicts(targets):
                self.stats.peak_skipped += 1
                continue
            self.core.replace_targets(targets, t)
            self.shaver.planned_site(site_plan.site_id, row)
            self.stats.peak_plans += 1
        self.stats.peak_skipped += len(self.shaver.skipped)

    def _apply(self, eff: Effects, t: float) -> None:
        for e in eff.entries:
            self.last_event[e.command_id] = e.event
        if eff.commands:
            values = [command_encoder.encode(c) for c in eff.commands]
            gateways_handle(self.fleet, values, t)
            self.stats.commands_sent += len(values)
        self.closed.extend(r for r in eff.rows if r["status"] in ("delivered", "short"))


def _decode_acks(values: list[bytes]) -> list[Ack]:
    try:
        return decode_each(ack_decoder, values)
    except msgspec.MsgspecError:
        out = []
        for v in values:
            try:
                out.append(ack_decoder.decode(v))
            except msgspec.MsgspecError:
                continue
        return out
