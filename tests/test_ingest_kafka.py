"""Simulator → real broker → ingest: the twins and aggregates equal the simulator's truth."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from tests.conftest import kafka_bus_settings, wait_for
from vpp.bus.kafka import KafkaBus
from vpp.config import BusSettings, DatabaseSettings, IngestSettings, SimulatorSettings
from vpp.fleet.combined import FleetView
from vpp.ingest.loop import Ingest
from vpp.sim.fleet import SimulatedFleet, TelemetryFaults, make_sites
from vpp.sim.gateway import Simulator
from vpp.store import db
from vpp.twins.states import Connectivity

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

T0 = 1_795_000_000.0  # a fixed simulated epoch


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def fleet(n: int = 120, seed: int = 7) -> SimulatedFleet:
    sites = make_sites(n, ["north", "south", "east"], seed=seed, interval_s=1.0)
    faults = TelemetryFaults(gap=0.05, duplicate=0.05, reorder=0.05, malformed=0.02)
    return SimulatedFleet(sites, seed=seed, faults=faults)


async def drive(sim: Simulator, clock: Clock, seconds: float, step: float = 0.25) -> None:
    for _ in range(int(seconds / step)):
        clock.t += step
        await sim.tick()


async def settle(ingests: list[Ingest], expected_msgs: int, timeout_s: float = 60) -> None:
    """Wait until the members have read at least ``expected_msgs`` and have no lag left."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sum(i.stats.messages for i in ingests) >= expected_msgs:
            lags = [await i._consumer.lag() for i in ingests]  # type: ignore[union-attr]
            if all(lag and sum(lag.values()) == 0 for lag in lags):
                await asyncio.sleep(0.3)  # the batch read last is folded
                return
        await asyncio.sleep(0.1)
    got = sum(i.stats.messages for i in ingests)
    raise AssertionError(f"ingest saw {got} of {expected_msgs} messages")


async def dead_letters(bus: KafkaBus, topic: str, expected: int) -> set[tuple[int, int]]:
    """Unique (partition, offset) of the source records on the dead-letter topic."""
    from vpp.bus.deadletter import decode_dead_letter

    consumer = await bus.consumer([topic], f"dlq-{time.monotonic_ns()}")
    seen: set[tuple[int, int]] = set()
    deadline = time.monotonic() + 30
    try:
        while len(seen) < expected and time.monotonic() < deadline:
            for rec in await consumer.getmany(timeout_s=0.5):
                assert rec.value is not None
                letter = decode_dead_letter(rec.value)
                assert letter.reason and letter.detail and letter.value is not None
                seen.add((letter.partition, letter.offset))
    finally:
        await consumer.stop()
    return seen


def check_against_truth(ingests: list[Ingest], sim: SimulatedFleet, now: float) -> None:
    """Every site's twin holds the simulator's newest valid reading; aggregates add up."""
    truth = sim.truth
    seen = np.isfinite(truth.ts)
    assert seen.sum() > 0.9 * len(sim.sites)
    owners: dict[str, Ingest] = {}
    for ing in ingests:
        store = ing.store
        for sid in sim.ids:
            i = store.index[sid]
            if store.owned[i]:
                assert sid not in owners, f"{sid} owned twice"
                owners[sid] = ing
    assert set(owners) == set(sim.ids), "every site is owned by exactly one member"
    for k, sid in enumerate(sim.ids):
        store = owners[sid].store
        i = store.index[sid]
        if not seen[k]:
            assert store.conn[i] == Connectivity.UNKNOWN
            continue
        assert store.ts[i] == pytest.approx(truth.ts[k], abs=1e-3), sid
        assert store.seq[i] == truth.seq[k], sid
        assert store.soc[i] == pytest.approx(truth.soc[k]), sid
        assert store.p_kw[i] == pytest.approx(truth.p_kw[k]), sid

    # Aggregates: an independent sum of the truth over the sites not offline at `now`
    # (online and stale sites both carry their last reading as the expected value).
    online = seen & (now - truth.ts <= 10 * sim.interval)
    cap, e = sim.capacity, np.nan_to_num(truth.soc) * sim.capacity
    e_dis = np.maximum(e - sim.soc_min * cap, 0) * sim.eta_d
    p_net = truth.p_kw
    for ing in ingests:
        ing.store.evaluate(now)
    snaps = [ing.refresh(now) for ing in ingests]
    assert sum(s.fleet.sites for s in snaps) == len(sim.sites)
    got_e = sum(s.fleet.e_discharge_kwh.expected for s in snaps)
    got_p = sum(s.fleet.p_net_kw.expected for s in snaps)
    assert got_e == pytest.approx(float(e_dis[online].sum()), rel=1e-9)
    assert got_p == pytest.approx(float(p_net[online].sum()), rel=1e-9, abs=1e-9)
    for group in ("north", "south", "east"):
        mask = online & np.array([s.group == group for s in sim.sites])
        got = sum(s.groups[group].e_discharge_kwh.expected for s in snaps if group in s.groups)
        assert got == pytest.approx(float(e_dis[mask].sum()), rel=1e-9)


async def _start(
    bus_settings: BusSettings, clock: Clock, engine: sa.Engine | None, member: str
) -> tuple[KafkaBus, Ingest]:
    bus = KafkaBus(bus_settings)
    await bus.start()
    ing = Ingest(
        bus,
        IngestSettings(snapshot_every_s=0.5, batch_max_records=500),
        bus_settings.topics,
        db=engine,
        clock=clock,
        member_id=member,
        evaluate_every_s=0.0,
    )
    await ing.start()
    return bus, ing


async def _stop(bus: KafkaBus, ing: Ingest) -> None:
    await ing.stop()
    await bus.stop()


def _snapshots(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("select count(*) from fleet_snapshots")).scalar() or 0)


def _sqlite(tmp_path: Path) -> sa.Engine:
    engine = db.create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path}/vpp.db"))
    db.upgrade(engine)
    return engine


async def _with_sim(
    bus_settings: BusSettings, clock: Clock, sim_fleet: SimulatedFleet
) -> tuple[KafkaBus, Simulator]:
    bus = KafkaBus(bus_settings)
    await bus.start()
    sim = Simulator(bus, bus_settings.topics, SimulatorSettings(), fleet=sim_fleet, clock=clock)
    await sim.start()
    return bus, sim


async def _publish_rest(sim: Simulator) -> None:
    assert sim._producer is not None
    rest = sim.fleet.flush_held()
    if rest:
        await sim._producer.send_many(sim.topics.telemetry.name, rest)
    await sim._producer.flush()


async def test_simulator_to_broker_to_ingest_matches_ground_truth(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = kafka_bus_settings(kafka_bootstrap)
    clock = Clock()
    sim_bus, sim = await _with_sim(settings, clock, fleet())
    bus, ing = await _start(settings, clock, _sqlite(tmp_path), "solo")
    try:
        await drive(sim, clock, 6.0)
        await _publish_rest(sim)
        await settle([ing], sim.fleet.sent)
        refused = await dead_letters(bus, settings.topics.deadletter.name, sim.fleet.malformed_sent)
        assert len(refused) == sim.fleet.malformed_sent > 0
        check_against_truth([ing], sim.fleet, clock.t)
    finally:
        await _stop(bus, ing)
        await sim.stop()
        await sim_bus.stop()


async def test_ingest_killed_mid_stream_and_restarted_reaches_the_same_state(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = kafka_bus_settings(kafka_bootstrap)
    engine = _sqlite(tmp_path)
    clock = Clock()
    sim_bus, sim = await _with_sim(settings, clock, fleet(seed=11))
    bus, first = await _start(settings, clock, engine, "a")
    try:
        await drive(sim, clock, 3.0)
        await settle([first], sim.fleet.sent // 2)
        await wait_for(lambda: _snapshots(engine) > 0, "a snapshot to land")
        # Kill: the task dies mid-stream, no final snapshot, no goodbye commit.
        assert first._task is not None
        first._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first._task
        for c in (first._consumer, first._registry_consumer, first._producer):
            assert c is not None
            await c.stop()
        await bus.stop()
        assert _snapshots(engine) > 0

        await drive(sim, clock, 3.0)
        await _publish_rest(sim)
        bus, second = await _start(settings, clock, engine, "b")
        await settle([second], sim.fleet.sent // 3)
        check_against_truth([second], sim.fleet, clock.t)

        # ... and equal to an uninterrupted run over the same stream (a fresh group).
        fresh_settings = settings.model_copy(
            update={"kafka": settings.kafka.model_copy()},
        )
        ref_bus = KafkaBus(fresh_settings)
        await ref_bus.start()
        ref = Ingest(
            ref_bus,
            IngestSettings(group_id="reference"),
            settings.topics,
            clock=clock,
            evaluate_every_s=0.0,
        )
        await ref.start()
        await settle([ref], sim.fleet.sent)
        second.store.evaluate(clock.t)
        ref.store.evaluate(clock.t)
        assert second.store.differences(ref.store) == []
        await ref.stop()
        await ref_bus.stop()
        await _stop(bus, second)
    finally:
        await sim.stop()
        await sim_bus.stop()


async def test_two_members_split_partitions_and_partial_aggregates_sum_to_truth(
    kafka_bootstrap: str,
) -> None:
    settings = kafka_bus_settings(kafka_bootstrap)
    clock = Clock()
    sim_bus, sim = await _with_sim(settings, clock, fleet(seed=3))
    (bus_a, a), (bus_b, b) = await asyncio.gather(
        _start(settings, clock, None, "a"), _start(settings, clock, None, "b")
    )
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            pa, pb = a._consumer.assignment(), b._consumer.assignment()  # type: ignore[union-attr]
            if pa and pb and not (pa & pb) and len(pa | pb) == 4:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the two members never split the partitions")
        await drive(sim, clock, 5.0)
        await _publish_rest(sim)
        await settle([a, b], sim.fleet.sent)
        assert a.stats.messages > 0 and b.stats.messages > 0
        check_against_truth([a, b], sim.fleet, clock.t)
        # Each member publishes its partials; a third instance's view combines them into
        # the whole fleet, read back from the broker.
        assert await a.publish_partials(force=True) and await b.publish_partials(force=True)
        await asyncio.gather(a._producer.flush(), b._producer.flush())  # type: ignore[union-attr]
        view_bus = KafkaBus(settings)
        await view_bus.start()
        view = FleetView(view_bus, IngestSettings(), settings.topics, clock=clock)
        await view.start()
        try:
            members = {a.member, b.member}
            await wait_for(
                lambda: {p.instance for p in view.partials.values()} == members,
                "the view has both members' partials",
            )
            combined = view.view()
            assert combined is not None and combined.coverage.complete
            assert combined.coverage.partitions_reported == settings.topics.telemetry.partitions
            assert combined.fleet.sites == len(sim.fleet.sites)
            snaps = [a.latest, b.latest]
            assert combined.fleet.e_discharge_kwh.expected == pytest.approx(
                sum(s.fleet.e_discharge_kwh.expected for s in snaps if s is not None), rel=1e-9
            )
        finally:
            await view.stop()
            await view_bus.stop()
    finally:
        await asyncio.gather(_stop(bus_a, a), _stop(bus_b, b))
        await sim.stop()
        await sim_bus.stop()
