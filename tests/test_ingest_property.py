"""Property: whatever arrives, the ingest loop stays up, explains every refusal and folds
the valid readings to the same state in any order."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vpp.bus.base import BusRecord
from vpp.bus.embedded import EmbeddedBus
from vpp.config import IngestSettings, TopicsSettings
from vpp.ingest.deadletter import decode_dead_letter
from vpp.ingest.loop import Ingest
from vpp.twins.registry import SiteConfig
from vpp.twins.store import FleetStore

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
NOW = T0.timestamp()
SITES = [f"p{i}" for i in range(4)]
TOPICS = TopicsSettings()

_valid = st.builds(
    lambda site, dt, seq, soc, p, load, avail, mode: {
        "v": 1,
        "site_id": site,
        "ts": (T0 + timedelta(seconds=dt)).isoformat().replace("+00:00", "Z"),
        "seq": seq,
        "soc": soc,
        "p_kw": p,
        **({"site_load_kw": load} if load is not None else {}),
        "available": avail,
        **({"mode": mode} if mode else {}),
    },
    st.sampled_from(SITES),
    st.integers(-600, 20),  # within the replay window and the future skew
    st.integers(0, 50),
    st.floats(0, 1),
    st.floats(-7.5, 7.5),
    st.none() | st.floats(-50, 50),
    st.booleans(),
    st.sampled_from([None, "auto", "fault", "standby"]),
)

_bad_value = st.one_of(
    st.binary(max_size=40),
    _valid.map(lambda m: {**m, "soc": m["soc"] + 1.01}),
    _valid.map(lambda m: {**m, "p_kw": 7.6 + abs(m["p_kw"])}),
    _valid.map(lambda m: {**m, "site_id": "stranger"}),
    _valid.map(lambda m: {**m, "v": 3}),
    _valid.map(lambda m: {**m, "ts": "2026-11-21T12:00:00"}),
    _valid.map(lambda m: {**m, "ts": "2026-12-21T12:00:00Z"}),
    _valid.map(lambda m: {**m, "ts": "2025-11-21T12:00:00Z"}),
    _valid.map(lambda m: {**m, "ts": "9999-12-31T23:59:59-23:59"}),
    _valid.map(lambda m: {**m, "soc": "half"}),
    _valid.map(lambda m: {**m, "seq": -1}),
    _valid.map(lambda m: {**m, "mode": "party"}),
    _valid.map(lambda m: {**m, "extra": 1}),
    _valid.map(lambda m: {k: v for k, v in m.items() if k != "p_kw"}),
    st.just("NaN"),
    st.just('{"v":1,"soc":1e400}'),
)


def _bytes(x: object) -> bytes:
    if isinstance(x, bytes):
        return x
    if isinstance(x, str):
        return x.encode()
    return json.dumps(x).encode()


async def _ingest(bus: EmbeddedBus) -> Ingest:
    await bus.ensure_topics(TOPICS.all())
    ing = Ingest(bus, IngestSettings(), TOPICS, clock=lambda: NOW)
    for s in SITES:
        ing.store.register(
            SiteConfig(
                site_id=s, group="g", capacity_kwh=10, p_charge_max_kw=5, p_discharge_max_kw=5
            )
        )
    ing._producer = await bus.producer()
    from vpp.ingest.deadletter import DeadLetterWriter

    ing._dlq = DeadLetterWriter(ing._producer, TOPICS.deadletter.name)
    return ing


def _records(values: list[bytes]) -> list[BusRecord]:
    return [BusRecord(TOPICS.telemetry.name, 0, i, b"k", v, 0) for i, v in enumerate(values)]


async def _run(values: list[bytes], splits: list[int]) -> tuple[FleetStore, list[tuple[int, str]]]:
    bus = EmbeddedBus()
    await bus.start()
    ing = await _ingest(bus)
    dlq = await bus.consumer([TOPICS.deadletter.name], "dlq-reader")
    records = _records(values)
    start = 0
    for cut in [*sorted(splits), len(records)]:
        await ing.process(records[start:cut])
        start = max(start, cut)
    letters = await dlq.getmany(max_records=10_000, timeout_s=0)
    refused = [
        (d.offset, d.reason)
        for d in (decode_dead_letter(r.value) for r in letters if r.value is not None)
    ]
    for r in letters:
        assert r.value is not None
        d = decode_dead_letter(r.value)
        assert d.value == values[d.offset], "dead letter must carry the raw bytes"
        assert d.source_topic == TOPICS.telemetry.name and d.detail
    await bus.stop()
    return ing.store, refused


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    valid=st.lists(_valid, max_size=25),
    bad=st.lists(_bad_value, max_size=10),
    data=st.data(),
)
def test_ingest_loop_invariants(
    valid: list[dict[str, object]], bad: list[object], data: st.DataObject
) -> None:
    # (site_id, ts, seq) identifies a reading: a redelivery is an exact copy (the contract).
    unique = {(m["site_id"], m["ts"], m["seq"]): m for m in valid}
    valid_bytes = [_bytes(m) for m in unique.values()]
    dupes = data.draw(st.lists(st.sampled_from(valid_bytes), max_size=5)) if valid_bytes else []
    good = valid_bytes + dupes
    bad_bytes = [_bytes(b) for b in bad]
    mixed = data.draw(st.permutations(good + bad_bytes))
    splits = data.draw(st.lists(st.integers(0, len(mixed)), max_size=3))

    # Reference: the valid readings alone, in time order, one batch.
    in_order = sorted(
        good, key=lambda b: (msgspec.json.decode(b)["ts"], msgspec.json.decode(b)["seq"])
    )
    reference, none_refused = asyncio.run(_run(in_order, []))
    assert none_refused == []

    store, refused = asyncio.run(_run(mixed, splits))
    # every refused message is in the dead-letter topic with a reason, exactly once
    refused_positions = sorted(pos for pos, _ in refused)
    bad_positions = sorted(
        i for i, v in enumerate(mixed) if v in set(bad_bytes) and v not in set(good)
    )
    assert refused_positions == bad_positions
    assert all(reason for _, reason in refused)
    # refused messages left the twins exactly as the valid ones alone leave them,
    # and the valid ones in any order and batching give the in-order state
    assert store.state_equal(reference)
