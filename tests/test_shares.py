"""Dispatch shares (vpp.dispatch.shares): instances sharing a fleet split a group target
in proportion to their headroom, an instance's shortfall moves to the others, and the
interval's record is the sum of every instance's part."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from tests.test_twins import NOW, T0, reading, site
from vpp.config import DatabaseSettings, DispatchSettings
from vpp.dispatch.core import DispatchCore
from vpp.dispatch.shares import ShareSource, split_shares
from vpp.dispatch.targets import GroupTarget, decode_target, encode_target
from vpp.fleet.hierarchy import FleetHierarchy
from vpp.fleet.partials import GroupPartial, partials_of
from vpp.store import db, dispatch_log
from vpp.store.tables import dispatch_intervals, dispatch_shares
from vpp.telemetry.decode import decode_batch
from vpp.twins.store import FleetStore

PARTITIONS = 4
SITES = 40  # 5 kW each: 200 kW of discharge in the group when all are free


def test_shares_follow_headroom_and_a_shortfall_moves_to_the_spare() -> None:
    got = split_shares(300.0, {"a": 100.0, "b": 300.0}, {})
    assert got["a"] == pytest.approx((75.0, 75.0)) and got["b"] == pytest.approx((225.0, 225.0))
    # a can only do 25 of its 75: it keeps 25, b takes the 50 within its 75 kW spare
    got = split_shares(300.0, {"a": 100.0, "b": 300.0}, {"a": 50.0})
    assert got["a"] == pytest.approx((75.0, 25.0)) and got["b"] == pytest.approx((225.0, 275.0))
    # more than the spare: b is capped at its headroom, the rest stays short
    got = split_shares(390.0, {"a": 100.0, "b": 300.0}, {"a": 97.5})
    assert got["b"][1] == pytest.approx(300.0) and got["a"][1] == pytest.approx(0.0)
    # charging targets are negative, headroom is the charge side's
    got = split_shares(-100.0, {"a": 150.0, "b": 50.0}, {"b": -20.0})
    assert got["a"] == pytest.approx((-75.0, -95.0)) and got["b"] == pytest.approx((-25.0, -5.0))
    # nobody with headroom: equal bases (each then reports its own shortfall)
    assert split_shares(10.0, {"a": 0.0, "b": 0.0}, {}) == {"a": (5.0, 5.0), "b": (5.0, 5.0)}


def _instance(owned: list[int]) -> tuple[FleetStore, FleetHierarchy]:
    """Every instance registers every site; it counts the ones its partitions carry."""
    store = FleetStore(partitions=PARTITIONS)
    store.set_owned_partitions(owned)
    for i in range(SITES):
        store.register(site(f"s{i:02d}", "north"))
    cols, _ = decode_batch([reading(f"s{i:02d}", -1.0, 1, 0.5) for i in range(SITES)])
    store.fold(cols, NOW)
    store.evaluate(NOW)
    hier = FleetHierarchy(store)
    hier.refresh(NOW)
    return store, hier


def _setpoints(core: DispatchCore, now: float) -> float:
    eff = core.tick(now)
    return sum(c.setpoint_kw for c in eff.commands)


def test_two_instances_cover_a_group_target_and_hand_over_a_shortfall() -> None:
    a_store, a_hier = _instance([0, 1])
    b_store, b_hier = _instance([2, 3])
    assert a_store.owned[:SITES].sum() + b_store.owned[:SITES].sum() == SITES
    partials: dict[str, list[GroupPartial]] = {}

    def publish(
        name: str, hier: FleetHierarchy, core: DispatchCore | None, parts: list[int]
    ) -> None:
        shortfalls = core.shortfalls() if core is not None else None
        partials[name] = partials_of(hier, name, parts, PARTITIONS, shortfalls)

    def fresh() -> list[GroupPartial]:
        return [p for ps in partials.values() for p in ps]

    settings = DispatchSettings()
    cores = {}
    for name, store in (("a", a_store), ("b", b_store)):
        share = ShareSource(lambda name=name: name, fresh, lambda node: node.startswith("s"))
        cores[name] = DispatchCore(settings, lambda store=store: store, seed=1, share=share)
    publish("a", a_hier, None, [0, 1])
    publish("b", b_hier, None, [2, 3])
    target = GroupTarget(
        dispatch_id="north-1",
        group="north",
        interval_start=T0 - timedelta(minutes=1),
        interval_end=T0 + timedelta(minutes=4),
        target_kw=120.0,
    )
    for core in cores.values():
        core.add_targets([target], NOW)
    sent = {name: _setpoints(core, NOW) for name, core in cores.items()}
    owned = {"a": float(a_store.owned[:SITES].sum()), "b": float(b_store.owned[:SITES].sum())}
    for name in cores:  # each covers the fraction of the target its headroom is of the whole
        assert sent[name] == pytest.approx(120.0 * owned[name] / SITES, abs=0.2)
    assert sum(sent.values()) == pytest.approx(120.0, abs=0.2)
    assert not cores["a"].shortfalls() and not cores["b"].shortfalls()

    # a's partial overstates what it can do (its sites were counted free, now half of them
    # belong to a site target of their own): it cannot allocate its base share ...
    lost = [f"s{i:02d}" for i in np.flatnonzero(a_store.owned[:SITES]).tolist()[::2]]
    pinned = [replace(target, dispatch_id=f"{s}-own", group=s, target_kw=0.0) for s in lost]
    cores["a"].add_targets(pinned, NOW)
    cores["a"].tick(NOW + 1)  # the site targets take their sites out of the group's split
    cores["a"]._redispatch.add("north")
    cores["a"].tick(NOW + 2)
    short = cores["a"].shortfalls()
    assert short["north"]["north-1"] > 5.0
    # ... reports it with its next partial, and b takes it over within its spare headroom
    publish("a", a_hier, cores["a"], [0, 1])
    b_before = cores["b"].deliveries["north-1"].allocated_kw
    cores["b"].tick(NOW + 3)
    b_after = cores["b"].deliveries["north-1"].allocated_kw
    assert b_after == pytest.approx(b_before + short["north"]["north-1"], abs=0.5)
    total = sum(cores[n].deliveries["north-1"].allocated_kw for n in cores)
    assert total == pytest.approx(120.0, abs=0.5)
    # stable: a keeps reporting the same shortfall against its base share, b keeps its share
    publish("a", a_hier, cores["a"], [0, 1])
    cores["a"].tick(NOW + 4)
    assert cores["a"].shortfalls()["north"]["north-1"] == pytest.approx(
        short["north"]["north-1"], abs=0.5
    )
    cores["b"].tick(NOW + 5)
    assert cores["b"].deliveries["north-1"].allocated_kw == pytest.approx(b_after, abs=0.5)
    # the site targets are a's alone: b does not own those sites, so nothing of them is b's
    cores["b"].add_targets(pinned[:1], NOW + 5)
    cores["b"].tick(NOW + 6)
    d = cores["b"].deliveries[pinned[0].dispatch_id]
    assert d.foreign and d.shortfall_kw == 0.0


def test_a_reserve_only_target_holds_every_owned_site_on_every_instance() -> None:
    """A 0 kW target with reserves: each instance holds the group's sites it owns at 0 kW,
    so together they hold the whole group's headroom, none of it twice."""
    stores = {"a": _instance([0, 1]), "b": _instance([2, 3])}
    partials = {
        name: partials_of(hier, name, parts, PARTITIONS, None)
        for (name, (_, hier)), parts in zip(stores.items(), ([0, 1], [2, 3]), strict=True)
    }

    def fresh() -> list[GroupPartial]:
        return [p for ps in partials.values() for p in ps]

    target = GroupTarget(
        dispatch_id="north-reserve",
        group="north",
        interval_start=T0 - timedelta(minutes=1),
        interval_end=T0 + timedelta(minutes=4),
        target_kw=0.0,
        reserve_up_kw=80.0,
        reserve_down_kw=40.0,
    )
    commanded: dict[str, str] = {}
    for name, (store, _) in stores.items():
        share = ShareSource(lambda name=name: name, fresh, lambda node: node.startswith("s"))
        core = DispatchCore(DispatchSettings(), lambda store=store: store, seed=1, share=share)
        core.add_targets([target], NOW)
        eff = core.tick(NOW)
        assert {c.setpoint_kw for c in eff.commands} == {0.0}
        owned = {store.ids[i] for i in np.flatnonzero(store.owned[:SITES]).tolist()}
        assert {c.site_id for c in eff.commands} == owned
        for c in eff.commands:
            assert commanded.setdefault(c.site_id, name) == name
    assert len(commanded) == SITES


def test_the_interval_record_is_the_sum_of_every_instances_part(tmp_path: Path) -> None:
    engine = db.create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path}/s.db"))
    db.upgrade(engine)
    start = T0
    base = {
        "dispatch_id": "north-1",
        "group_id": "north",
        "interval_start": start,
        "interval_end": start + timedelta(minutes=5),
        "source": "award",
        "target_kw": 100.0,
        "reserve_up_kw": 0.0,
        "reserve_down_kw": 0.0,
        "delivered_kwh": None,
        "redispatches": 0,
        "updated_at": start,
        "foreign": False,
    }
    a = {**base, "share_kw": 60.0, "allocated_kw": 60.0, "shortfall_kw": 0.0}
    b = {**base, "share_kw": 40.0, "allocated_kw": 30.0, "shortfall_kw": 10.0}
    dispatch_log.upsert_shared(engine, "a", [{**a, "status": "active", "delivered_kw": None}])
    dispatch_log.upsert_shared(engine, "b", [{**b, "status": "active", "delivered_kw": None}])
    dispatch_log.upsert_shared(engine, "a", [{**a, "status": "delivered", "delivered_kw": 59.0}])
    with engine.connect() as conn:
        row = conn.execute(sa.select(dispatch_intervals)).one()
    assert row.target_kw == 100.0 and row.allocated_kw == 90.0 and row.shortfall_kw == 10.0
    assert row.status == "delivered"  # a's part closed; b's still open
    dispatch_log.upsert_shared(engine, "b", [{**b, "status": "short", "delivered_kw": 28.0}])
    # a late "active" from a lagging writer does not reopen a closed part
    dispatch_log.upsert_shared(engine, "b", [{**b, "status": "active", "delivered_kw": 1.0}])
    with engine.connect() as conn:
        row = conn.execute(sa.select(dispatch_intervals)).one()
        parts = conn.execute(sa.select(sa.func.count()).select_from(dispatch_shares)).scalar()
    assert parts == 2 and row.status == "short" and row.delivered_kw == pytest.approx(87.0)


def test_target_records_round_trip_and_bad_ones_are_named() -> None:
    t = GroupTarget(
        dispatch_id="north-1",
        group="north",
        interval_start=T0,
        interval_end=T0 + timedelta(minutes=5),
        target_kw=-250.0,
        reserve_up_kw=10.0,
        source="manual",
    )
    rec = decode_target(encode_target(t, cancelled=True))
    assert rec.target() == t and rec.cancelled
    with pytest.raises(ValueError, match="interval_end"):
        decode_target(encode_target(replace(t, interval_end=T0)))
    with pytest.raises(ValueError, match="target_kw"):
        decode_target(
            b'{"dispatch_id":"x","group":"g","interval_start":"2026-11-21T12:00:00Z",'
            b'"interval_end":"2026-11-21T12:05:00Z","target_kw":"lots"}'
        )
    with pytest.raises(ValueError):
        decode_target(
            b'{"dispatch_id":"x","group":"g","interval_start":"2026-11-21T12:00:00",'
            b'"interval_end":"2026-11-21T12:05:00Z","target_kw":1}'
        )


async def test_a_rebalance_hands_in_flight_commands_to_the_new_owner(tmp_path: Path) -> None:
    """Two dispatch services share a fleet (one bus, one database). A site's command in
    flight when its partition moves is taken over by the new owner from the ledger: resent
    under its own id, acked there; the old owner stops tracking it; no second command."""
    import asyncio

    import msgspec

    from vpp.bus.embedded import EmbeddedBus
    from vpp.config import TopicsSettings
    from vpp.dispatch.contract import Ack, command_decoder
    from vpp.dispatch.service import DispatchService
    from vpp.store.ledger import CommandStatus

    engine = db.create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path}/h.db"))
    db.upgrade(engine)
    topics = TopicsSettings()
    bus = EmbeddedBus()
    await bus.start()
    await bus.ensure_topics(topics.all())
    now = [NOW]
    settings = DispatchSettings(tick_s=3600, ack_timeout_s=30.0, max_attempts=3)
    stores = {"a": _instance([0, 1])[0], "b": _instance([2, 3])[0]}
    services = {
        name: DispatchService(
            settings,
            bus,
            topics,
            db=engine,
            store=lambda store=store: store,
            clock=lambda: now[0],
            instance=name,
            share=ShareSource(lambda name=name: name, list, lambda n: n.startswith("s")),
        )
        for name, store in stores.items()
    }
    gateway = await bus.consumer([topics.commands.name], "gateways")
    producer = await bus.producer()
    a_sites = {f"s{i:02d}" for i in range(SITES) if stores["a"].owned[i]}
    site_id = sorted(a_sites)[0]
    try:
        for svc in services.values():
            await svc.start()
        await services["a"].on_ownership(a_sites, set())
        t = GroupTarget(
            dispatch_id=f"{site_id}-own",
            group=site_id,
            interval_start=T0 - timedelta(minutes=1),
            interval_end=T0 + timedelta(minutes=9),
            target_kw=3.0,
            source="manual",
        )
        await services["a"].add_targets_async([t])
        for _ in range(100):  # b learns the target from the targets topic
            if t.dispatch_id in services["b"].deliveries:
                break
            await asyncio.sleep(0.02)
        assert t.dispatch_id in services["b"].deliveries
        await services["a"].tick()
        await services["b"].tick()
        first = [command_decoder.decode(r.value) for r in await gateway.getmany(1000, 0.3)]
        assert [c.site_id for c in first] == [site_id]  # only the owner commands the site
        assert services["b"].deliveries[t.dispatch_id].foreign

        # The site's partition moves from a to b.
        moved = {
            s
            for s in a_sites
            if stores["a"].partition[stores["a"].index[s]]
            == stores["a"].partition[stores["a"].index[site_id]]
        }
        stores["a"].set_owned_partitions(
            sorted({0, 1} - {int(stores["a"].partition[stores["a"].index[site_id]])})
        )
        stores["b"].set_owned_partitions(
            sorted({2, 3} | {int(stores["b"].partition[stores["b"].index[site_id]])})
        )
        await services["a"].on_ownership(set(), moved)
        await services["b"].on_ownership(moved, set())
        assert first[0].command_id not in services["a"].tracker.commands
        taken = services["b"].tracker.commands[first[0].command_id]
        assert taken.state == CommandStatus.PENDING and taken.command.attempt == 2
        resent = [command_decoder.decode(r.value) for r in await gateway.getmany(1000, 0.3)]
        assert [(c.command_id, c.attempt) for c in resent] == [(first[0].command_id, 2)]

        ack = Ack(1, first[0].command_id, site_id, "accepted", T0)  # type: ignore[arg-type]
        await producer.send_many(topics.acks.name, [(site_id.encode(), msgspec.json.encode(ack))])
        for _ in range(100):
            if services["b"].tracker.commands[first[0].command_id].state == CommandStatus.ACKED:
                break
            await asyncio.sleep(0.02)
        assert services["b"].tracker.commands[first[0].command_id].state == CommandStatus.ACKED
        await services["b"].tick()  # the new owner keeps the command: nothing new is sent
        assert not await gateway.getmany(1000, 0.3)
    finally:
        for svc in services.values():
            await svc.stop()
        await gateway.stop()
        await producer.stop()
        await bus.stop()
    with engine.connect() as conn:
        from vpp.store.tables import command_ledger

        ids = (
            conn.execute(
                sa.select(command_ledger.c.command_id).where(command_ledger.c.site_id == site_id)
            )
            .scalars()
            .all()
        )
    assert set(ids) == {first[0].command_id}  # one command, never re-issued under a new id
    engine.dispose()
