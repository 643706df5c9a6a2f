"""Partial aggregates (vpp.fleet.partials): the sum of the partials of instances owning
disjoint partitions equals the aggregate of one instance owning them all; stale partials
widen the bounds instead of vanishing; clashing claims count once; coverage says so."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest

from tests.test_twins import NOW, T0, reading, site
from vpp.fleet.hierarchy import FleetHierarchy, NodeAggregate
from vpp.fleet.partials import GroupPartial, combine, partials_of
from vpp.telemetry.decode import decode_batch
from vpp.twins.store import FleetStore

PARTITIONS = 6
SITES = 240


def _fleet(owned: list[int] | None) -> FleetHierarchy:
    """Every instance knows the whole registry; it folds only what its partitions carry
    (here: all telemetry is offered, the owned mask decides what counts)."""
    rng = np.random.default_rng(7)
    store = FleetStore(partitions=PARTITIONS)
    store.set_owned_partitions(owned)
    for i in range(SITES):
        store.register(
            site(
                f"s{i:03d}",
                ("north", "south", "west")[i % 3],
                capacity_kwh=float(rng.uniform(5, 20)),
                eff_charge=float(rng.uniform(0.9, 0.97)),
            )
        )
    msgs = []
    for i in range(SITES):
        age = float(rng.choice([1.0, 45.0, 200.0]))  # online, stale, offline
        if i % 17 == 0:
            continue  # never heard from
        msgs.append(
            reading(f"s{i:03d}", -age, 1, float(rng.uniform(0.1, 0.9)), float(rng.uniform(-5, 5)))
        )
    cols, _ = decode_batch(msgs)
    store.fold(cols, NOW)
    store.evaluate(NOW)
    hier = FleetHierarchy(store)
    hier.refresh(NOW, committed=np.arange(store.n) % 11 == 0)
    return hier


def _same(a: NodeAggregate, b: NodeAggregate) -> None:
    da, db = a.to_dict(), b.to_dict()
    for d in (da, db):
        d.pop("as_of")
    flat_a, flat_b = _flatten(da), _flatten(db)
    assert flat_a.keys() == flat_b.keys()
    for k, v in flat_a.items():
        if isinstance(v, float | int):
            assert flat_b[k] == pytest.approx(v, rel=1e-9, abs=1e-9), k
        else:
            assert flat_b[k] == v, k


def _flatten(d: dict[str, object], prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _partials(
    split: list[list[int]], ts_shift: dict[int, float] | None = None
) -> list[GroupPartial]:
    out = []
    for k, parts in enumerate(split):
        for p in partials_of(_fleet(parts), f"i{k}", parts, PARTITIONS):
            shift = (ts_shift or {}).get(k, 0.0)
            out.append(msgspec.structs.replace(p, ts=p.ts + shift))
    # what travels on the bus: encoded and decoded
    return [msgspec.json.decode(msgspec.json.encode(p), type=GroupPartial) for p in out]


def test_the_partials_of_three_instances_add_up_to_one_instances_aggregate() -> None:
    whole = _fleet(None).latest
    assert whole is not None
    view = combine(_partials([[0, 3], [1, 4], [2, 5]]), NOW, max_age_s=30)
    assert view.coverage.complete and view.coverage.partitions_reported == PARTITIONS
    _same(view.fleet, whole.fleet)
    assert view.groups.keys() == whole.groups.keys()
    for g, node in whole.groups.items():
        _same(view.groups[g], node)


def test_a_stale_instance_widens_the_upper_bounds_and_is_named() -> None:
    whole = _fleet(None).latest
    assert whole is not None
    partials = _partials([[0, 3], [1, 4], [2, 5]], ts_shift={2: -120.0})
    view = combine(partials, NOW, max_age_s=30)
    assert view.coverage.partitions_reported == 4 and view.coverage.stale_instances == ["i2"]
    assert not view.coverage.complete
    f, w = view.fleet, whole.fleet
    assert f.e_discharge_kwh.expected < w.e_discharge_kwh.expected  # its sites not expected
    assert f.e_discharge_kwh.lower < w.e_discharge_kwh.lower
    assert f.e_discharge_kwh.upper == pytest.approx(w.e_discharge_kwh.upper)  # but possible
    assert f.p_discharge_p90_kw < w.p_discharge_p90_kw
    assert f.sites < w.sites


def test_two_claims_on_a_partition_count_once_the_newer_wins() -> None:
    # during a rebalance the old owner of partition 2 has published, and the new one too
    partials = _partials([[0, 3], [1, 4], [2, 5], [2]], ts_shift={2: -5.0})
    view = combine(partials, NOW, max_age_s=30)
    assert view.coverage.stale_instances == ["i2"]
    assert view.coverage.partitions_reported == 5  # partition 5 went with i2's claim
    whole = _fleet(None).latest
    assert whole is not None
    assert view.fleet.sites < whole.fleet.sites


def test_no_partials_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no partial"):
        combine([], NOW, max_age_s=30)


def test_partials_carry_the_snapshot_time() -> None:
    (p, *_) = _partials([[0, 1, 2, 3, 4, 5]])
    assert p.ts == pytest.approx(T0.timestamp()) and p.partitions == [0, 1, 2, 3, 4, 5]


async def test_the_view_dead_letters_bad_partials_and_forgets_tombstones() -> None:
    from tests.conftest import wait_for
    from vpp.bus.deadletter import decode_dead_letter
    from vpp.bus.embedded import EmbeddedBus
    from vpp.config import IngestSettings, TopicsSettings
    from vpp.fleet.combined import FleetView
    from vpp.fleet.partials import encode_partial, partial_key

    topics = TopicsSettings()
    bus = EmbeddedBus()
    await bus.start()
    await bus.ensure_topics(topics.all())
    view = FleetView(bus, IngestSettings(), topics, clock=lambda: NOW)
    await view.start()
    dlq = await bus.consumer([topics.deadletter.name], "dlq-reader")
    try:
        good = _partials([[0, 1, 2, 3, 4, 5]])
        producer = await bus.producer()
        await producer.send_many(
            topics.aggregates.name,
            [
                *((partial_key(p), encode_partial(p)) for p in good),
                (b"north|x", b'{"group": "north"}'),  # fields missing
                (b"north|someone-else", encode_partial(good[0])),  # key names another
            ],
        )
        await producer.flush()
        await wait_for(lambda: view.refused == 2, "two refusals")
        assert len(view.partials) == len(good)
        letters = [decode_dead_letter(r.value) for r in await dlq.getmany(timeout_s=1.0) if r.value]
        assert sorted(x.reason for x in letters) == ["invalid", "key_mismatch"]
        view_now = view.view()
        assert view_now is not None and view_now.coverage.complete
        await producer.send(topics.aggregates.name, partial_key(good[0]), None)  # tombstone
        await producer.flush()
        await wait_for(lambda: len(view.partials) == len(good) - 1, "the tombstone applied")
        await producer.stop()
    finally:
        await dlq.stop()
        await view.stop()
        await bus.stop()


def test_a_dead_instances_partial_is_dropped_once_its_partitions_have_new_owners() -> None:
    whole = _fleet(None).latest
    assert whole is not None
    # i2 died long ago; i0 and i1 took its partitions 2 and 5 over and published since
    old = {0: -300.0, 1: -300.0, 2: -300.0}
    partials = _partials([[0, 3], [1, 4], [2, 5], [0, 2, 3], [1, 4, 5]], ts_shift=old)
    view = combine(partials, NOW, max_age_s=30)
    assert view.coverage.complete and view.coverage.stale_instances == []
    _same(view.fleet, whole.fleet)


def test_the_whole_fleet_is_the_combined_view_only_when_instances_share_it() -> None:
    from vpp.fleet.partials import whole_fleet

    local = _fleet([0, 3]).latest
    shared = combine(_partials([[0, 3], [1, 4], [2, 5]]), NOW, max_age_s=30)
    alone = combine(_partials([[0, 1, 2, 3, 4, 5]]), NOW, max_age_s=30)
    assert shared.coverage.instances == ["i0", "i1", "i2"]
    assert whole_fleet(shared, local) is shared
    assert whole_fleet(alone, local) is local  # one instance: its own, fresher snapshot
    assert whole_fleet(None, local) is local


def test_the_api_answers_from_the_combined_view_with_its_coverage(tmp_path: Path) -> None:
    from tests.api_support import build_api, engine_for

    api = build_api(next(engine_for("sqlite", tmp_path, None)))  # type: ignore[arg-type]
    shared = combine(_partials([[0, 3], [1, 4], [2, 5]], ts_shift={2: -120.0}), NOW, 30)
    api.services.combined = lambda: shared
    body = api.client.get("/api/v1/fleet", headers=api.h("viewer")).json()
    assert body["fleet"]["sites"] == shared.fleet.sites
    assert [g["node_id"] for g in body["groups"]] == ["north", "south", "west"]
    assert body["coverage"] == {
        "partitions_reported": 4,
        "partitions_total": PARTITIONS,
        "stale_instances": ["i2"],
        "instances": ["i0", "i1"],
    }


@pytest.mark.parametrize("speed", [10.0, 60.0])
def test_under_a_fast_clock_partials_age_by_the_wall(speed: float) -> None:
    """The walk-through at x10: partials are published every ``partials_every_s`` of the
    wall but stamped on the engine's clock, so each is ``speed`` times older in engine
    seconds when the next arrives; every instance (this one included) read as stale and
    coverage flipped between 8/8 and 0/8. The view's bound follows the clock's speed."""
    from vpp.bus.embedded import EmbeddedBus
    from vpp.config import IngestSettings, TopicsSettings
    from vpp.fleet.combined import FleetView
    from vpp.fleet.partials import partial_key

    settings = IngestSettings()
    every_engine_s = settings.partials_every_s * speed  # one publish period, engine seconds
    partials = _partials([[0, 3], [1, 4], [2, 5]], ts_shift={k: -every_engine_s for k in (0, 1, 2)})
    view = FleetView(EmbeddedBus(), settings, TopicsSettings(), clock=lambda: NOW, speed=speed)
    view.partials = {partial_key(p): p for p in partials}
    combined = view.view()
    assert combined is not None and combined.coverage.complete
    assert combined.coverage.stale_instances == []
    # an instance silent for the wall-clock bound is stale at every speed
    dead = _partials(
        [[0, 3], [1, 4], [2, 5]], ts_shift={2: -(settings.partials_max_age_s + 1) * speed}
    )
    view.partials = {partial_key(p): p for p in dead}
    assert view.view().coverage.stale_instances == ["i2"]  # type: ignore[union-attr]


def test_site_ages_are_on_the_engines_clock(tmp_path: Path) -> None:
    """``age_s`` of a site is the engine's now minus its reading (the walk-through's -363 s
    at x10 came from mixing the wall with simulated readings)."""
    from datetime import timedelta

    from tests.api_support import NOW as API_NOW
    from tests.api_support import build_api, engine_for

    api = build_api(next(engine_for("sqlite", tmp_path, None)))  # type: ignore[arg-type]
    api.clock.now = API_NOW + timedelta(seconds=30)  # the engine's clock, far from the wall
    sites = api.client.get("/api/v1/sites", headers=api.h("viewer")).json()["data"]
    one = api.client.get("/api/v1/sites/s0", headers=api.h("viewer")).json()
    assert [round(s["age_s"]) for s in sites] == [31] * len(sites)  # read 1 s before NOW
    assert round(one["age_s"]) == 31
