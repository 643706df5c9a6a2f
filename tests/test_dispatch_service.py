"""The dispatch service on the embedded bus with a driven clock: per-site targets, the
deadband, the follow check (a reading counts once), timeouts making a twin unresponsive
and an answer bringing it back — each with the ledger and the site events it writes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa

from vpp.bus.base import Consumer, Producer
from vpp.bus.embedded import EmbeddedBus
from vpp.config import DatabaseSettings, DispatchSettings, TopicsSettings
from vpp.dispatch.contract import Ack, Command, command_decoder
from vpp.dispatch.service import DispatchService
from vpp.dispatch.targets import GroupTarget, dispatch_id
from vpp.store import db
from vpp.store.site_events import site_history
from vpp.store.tables import command_ledger
from vpp.telemetry.contract import encode_telemetry
from vpp.telemetry.decode import decode_batch
from vpp.twins.registry import SiteConfig
from vpp.twins.states import CommandState
from vpp.twins.store import FleetStore

T0 = datetime(2026, 11, 21, 14, 0, tzinfo=UTC)
TOPICS = TopicsSettings()


@dataclass
class Rig:
    service: DispatchService
    store: FleetStore
    engine: sa.Engine
    gateway: Consumer
    producer: Producer
    now: list[float]

    def read(self, site: str, p_kw: float, at_s: float, seq: int, soc: float = 0.5) -> None:
        """A reading from ``site`` stamped ``at_s`` seconds after T0, folded into the twins."""
        ts = T0 + timedelta(seconds=at_s)
        cols, _ = decode_batch([encode_telemetry(site, ts, seq, soc, p_kw)])
        self.store.fold(cols, ts.timestamp())
        self.store.evaluate(ts.timestamp())

    async def tick(self, at_s: float) -> None:
        self.now[0] = T0.timestamp() + at_s
        await self.service.tick()

    async def commands(self) -> list[Command]:
        records = await self.gateway.getmany(max_records=1000, timeout_s=0.2)
        await self.gateway.commit()
        return [command_decoder.decode(r.value) for r in records if r.value]

    async def ack(self, commands: list[Command], status: str = "accepted") -> None:
        seen = self.service.acks_seen
        await self.producer.send_many(
            TOPICS.acks.name,
            [
                (
                    c.site_id.encode(),
                    msgspec.json.encode(Ack(1, c.command_id, c.site_id, status, T0)),  # type: ignore[arg-type]
                )
                for c in commands
            ],
        )
        for _ in range(200):  # the ack loop settles them: written, reflected, committed
            if self.service.acks_seen >= seen + len(commands):
                return
            await asyncio.sleep(0.01)
        raise AssertionError("acks were not settled")


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    engine = db.create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path}/d.db"))
    db.upgrade(engine)
    store = FleetStore()
    for i in range(3):
        store.register(
            SiteConfig(
                site_id=f"s{i}",
                group="g",
                capacity_kwh=20.0,
                p_charge_max_kw=5.0,
                p_discharge_max_kw=5.0,
                eff_charge=1.0,
                eff_discharge=1.0,
            )
        )
    now = [T0.timestamp()]
    bus = EmbeddedBus()
    await bus.start()
    await bus.ensure_topics(TOPICS.all())
    service = DispatchService(
        DispatchSettings(
            tick_s=3600,  # the test drives the ticks
            ack_timeout_s=1.0,
            max_attempts=1,
            backoff_s=0.0,
            follow_grace_s=1.0,
            deadband_kw=0.05,
            resolution_kw=0.1,
        ),
        bus,
        TOPICS,
        db=engine,
        store=lambda: store,
        clock=lambda: now[0],
    )
    gateway = await bus.consumer([TOPICS.commands.name], "gateways")
    producer = await bus.producer()
    r = Rig(service, store, engine, gateway, producer, now)
    for i in range(3):
        r.read(f"s{i}", 0.0, -1.0, 1)
    await service.start()
    try:
        yield r
    finally:
        await service.stop()
        await gateway.stop()
        await producer.stop()
        await bus.stop()
        engine.dispose()


def target(node: str, kw: float, minutes: int = 5) -> GroupTarget:
    return GroupTarget(
        dispatch_id=dispatch_id(node, T0),
        group=node,
        interval_start=T0,
        interval_end=T0 + timedelta(minutes=minutes),
        target_kw=kw,
    )


async def test_a_site_target_commands_only_that_site(rig: Rig) -> None:
    rig.service.add_targets([target("s1", 3.0)])
    await rig.tick(0.5)
    commands = await rig.commands()
    assert [(c.site_id, c.setpoint_kw) for c in commands] == [("s1", 3.0)]
    assert rig.store.cmd[rig.store.index["s1"]] == CommandState.PENDING
    assert rig.store.cmd[rig.store.index["s0"]] == CommandState.NONE


async def test_a_site_with_its_own_target_leaves_its_groups_split(rig: Rig) -> None:
    # The group must deliver 6 kW; s1 follows its own schedule (-2 kW, charging) for the
    # first two minutes: it is committed to that, outside the group's award, so s0 and s2
    # cover the group's 6 kW.
    rig.service.add_targets([target("g", 6.0)])
    own = GroupTarget(
        dispatch_id=dispatch_id("s1", T0),
        group="s1",
        interval_start=T0,
        interval_end=T0 + timedelta(minutes=2),
        target_kw=-2.0,
    )
    rig.service.add_targets([own])
    await rig.tick(0.5)
    sent = await rig.commands()
    assert {c.site_id: c.setpoint_kw for c in sent} == {"s0": 3.0, "s1": -2.0, "s2": 3.0}
    await rig.ack(sent)
    rig.read("s1", -2.0, 5.0, 2)  # s1 follows its schedule: nothing to change
    await rig.tick(6.0)
    assert await rig.commands() == []
    # Its own target over, s1 rejoins the group's split.
    for site, kw in (("s0", 3.0), ("s1", -2.0), ("s2", 3.0)):
        rig.read(site, kw, 119.0, 3)
    await rig.tick(120.5)
    rejoined = {c.site_id: c.setpoint_kw for c in await rig.commands()}
    assert rejoined == {"s0": 2.0, "s1": 2.0, "s2": 2.0}


async def test_an_award_takes_the_interval_an_operator_had_set_by_hand(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """A manual target and an award share a node's interval (and its id): the award, owed
    to the market, used to be dropped as "known already" when it came second."""
    from dataclasses import replace

    manual = replace(target("g", -3.0), source="manual")
    rig.service.add_targets([manual])
    await rig.tick(0.5)
    sent = await rig.commands()
    assert sorted(c.setpoint_kw for c in sent) == [-1.0, -1.0, -1.0]
    await rig.ack(sent)
    award = target("g", 6.0)  # source "award"
    with caplog.at_level("WARNING", logger="vpp.dispatch.service"):
        assert await rig.service.add_targets_async([award]) == [award]  # stored, then on
    assert "the award target for g" in caplog.text and "replaces the manual target" in caplog.text
    assert rig.service.deliveries[award.dispatch_id].target == award
    await rig.tick(1.0)
    assert sorted(c.setpoint_kw for c in await rig.commands()) == [2.0, 2.0, 2.0]
    # the other way round, a hand-set target does not displace the award, nor does a plan
    assert rig.service.add_targets([manual]) == []
    plan = replace(target("g", 1.0), source="peak_shaving")
    assert rig.service.add_targets([plan]) == []
    assert rig.service.deliveries[award.dispatch_id].target == award
    with rig.engine.connect() as conn:
        source = conn.execute(
            sa.text("select source from dispatch_intervals where dispatch_id = :d"),
            {"d": award.dispatch_id},
        ).scalar_one()
    assert source == "award"


async def test_redispatch_sends_only_changed_setpoints(rig: Rig) -> None:
    rig.service.add_targets([target("g", 9.0)])
    await rig.tick(0.5)
    first = await rig.commands()
    assert sorted(c.setpoint_kw for c in first) == [3.0, 3.0, 3.0]
    await rig.ack(first)
    assert (rig.store.column("cmd") == CommandState.ACKED).all()
    rig.service._redispatch.add("g")  # e.g. a site event: nothing actually changed
    await rig.tick(1.0)
    assert await rig.commands() == []  # every new setpoint is within the deadband


async def test_a_site_not_following_is_excluded_after_two_distinct_readings(rig: Rig) -> None:
    rig.service.add_targets([target("g", 9.0)])
    await rig.tick(0.5)
    first = await rig.commands()
    await rig.ack(first)
    # s0 keeps idling; s1 and s2 follow. Readings before the grace period do not count.
    for i, kw in ((0, 0.0), (1, 3.0), (2, 3.0)):
        rig.read(f"s{i}", kw, 1.2, 2)
    await rig.tick(1.3)
    for i, kw in ((0, 0.0), (1, 3.0), (2, 3.0)):
        rig.read(f"s{i}", kw, 2.0, 3)
    await rig.tick(2.1)
    await rig.tick(2.2)  # the same readings again: not a second strike
    assert rig.service.core.follow.strikes[rig.store.index["s0"]] == 1
    assert await rig.commands() == []
    for i, kw in ((0, 0.0), (1, 3.0), (2, 3.0)):
        rig.read(f"s{i}", kw, 3.0, 4)
    await rig.tick(3.1)
    again = await rig.commands()
    # s0 is out; its 0 kW is what it delivers, so s1 and s2 cover all 9 kW.
    assert sorted((c.site_id, c.setpoint_kw) for c in again) == [("s1", 4.5), ("s2", 4.5)]
    d = rig.service.deliveries[target("g", 9.0).dispatch_id]
    assert d.excluded == {"s0"} and d.redispatches == 1


async def test_timeout_makes_the_twin_unresponsive_until_it_answers(rig: Rig) -> None:
    rig.service.add_targets([target("g", 6.0)])
    await rig.tick(0.5)
    first = await rig.commands()
    await rig.ack([c for c in first if c.site_id != "s2"])
    await rig.tick(2.0)  # s2's only attempt timed out: its share is re-dispatched
    s2 = rig.store.index["s2"]
    assert rig.store.cmd[s2] == CommandState.UNRESPONSIVE
    again = await rig.commands()
    assert sorted((c.site_id, c.setpoint_kw) for c in again) == [("s0", 3.0), ("s1", 3.0)]
    late = next(c for c in first if c.site_id == "s2")
    await rig.ack([late])  # a late ack: the command stays timed out, the site is back
    assert rig.store.cmd[s2] == CommandState.ACKED
    assert rig.service.tracker.commands[late.command_id].state == "timed_out"
    for _ in range(100):  # site events are written off the event loop
        events = site_history(rig.engine, "s2")
        if len(events) == 2:
            break
        await asyncio.sleep(0.02)
    assert [(e["from_state"], e["to_state"]) for e in reversed(events)] == [
        ("pending", "unresponsive"),
        ("unresponsive", "acked"),
    ]
    with rig.engine.connect() as conn:
        rows = conn.execute(
            sa.select(command_ledger.c.event, command_ledger.c.reason).where(
                command_ledger.c.command_id == late.command_id
            )
        ).all()
    assert [r.event for r in rows] == ["issued", "timeout"]
    assert rows[1].reason == "no ack after 1 attempts"


async def test_an_award_stored_before_a_crash_is_dispatched_at_start(tmp_path: Path) -> None:
    """The probe's restart: the award was stored, its target was not; the restarted
    service dispatches it at once (the interval is under way), not at the next boundary."""
    from market.clearing import clear_bid
    from tests.api_support import make_bids
    from vpp.store.bids import BidStore

    engine = db.create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path}/a.db"))
    db.upgrade(engine)
    bid = make_bids(1)[0]
    BidStore(engine).create([bid], solve_id="s", report={})
    award = clear_bid(bid, 100.0)  # clears the whole offer
    BidStore(engine).record_awards([award])
    store = FleetStore()
    bus = EmbeddedBus()
    await bus.start()
    await bus.ensure_topics(TOPICS.all())
    mid = bid.interval_start + timedelta(minutes=2)
    service = DispatchService(
        DispatchSettings(tick_s=3600),
        bus,
        TOPICS,
        db=engine,
        store=lambda: store,
        clock=lambda: mid.timestamp(),
    )
    await service.start()
    try:
        d = service.deliveries.get(dispatch_id(bid.group, bid.interval_start))
        assert d is not None and d.target.target_kw == award.p_mw * 1000
    finally:
        await service.stop()
        await bus.stop()
        engine.dispose()
