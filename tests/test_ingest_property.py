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
from vpp.bus.deadletter import decode_dead_letter
from vpp.bus.embedded import EmbeddedBus
from vpp.config import IngestSettings, TopicsSettings
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
    st.none() | st.floats(0, 50),
    st.booleans(),
    st.sampled_from([None, "auto", "fault", "standby"]),
)

_bad_value = st.one_of(
    st.binary(max_size=40),
    _valid.map(lambda m: {**m, "soc": m["soc"] + 1.01}),
    _valid.map(lambda m: {**m, "p_kw": 7.6 + abs(m["p_kw"])}),
    _valid.map(lambda m: {**m, "site_id": "stranger"}),
    _valid.map(lambda m: {**m, "site_load_kw": -1.0 - abs(float(m.get("site_load_kw", 0.0)))}),
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
    from vpp.bus.deadletter import DeadLetterWriter

    ing._dlq = DeadLetterWriter(ing._producer, TOPICS.deadletter.name)
    return ing


def _key(value: bytes) -> bytes:
    """The Kafka key a gateway sends: its site id (unreadable values get a placeholder)."""
    try:
        site = json.loads(value).get("site_id")
    except (ValueError, AttributeError):
        return b"k"
    return site.encode() if isinstance(site, str) else b"k"


def _records(values: list[bytes]) -> list[BusRecord]:
    return [BusRecord(TOPICS.telemetry.name, 0, i, _key(v), v, 0) for i, v in enumerate(values)]


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


def _reference(values: list[bytes]) -> dict[str, dict[str, object]]:
    """The contract, one message at a time: each site keeps its newest (ts, seq); of two
    readings claiming the same identity the first folded wins."""
    state: dict[str, tuple[tuple[float, int], dict[str, object]]] = {}
    for raw in values:
        m = msgspec.json.decode(raw)
        key = (datetime.fromisoformat(m["ts"].replace("Z", "+00:00")).timestamp(), m["seq"])
        cur = state.get(m["site_id"])
        if cur is None or key > cur[0]:
            state[m["site_id"]] = (key, m)
    return {site: m for site, (_, m) in state.items()}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    valid=st.lists(_valid, max_size=25),
    bad=st.lists(_bad_value, max_size=10),
    data=st.data(),
)
def test_ingest_loop_invariants(
    valid: list[dict[str, object]], bad: list[object], data: st.DataObject
) -> None:
    good = [_bytes(m) for m in valid]
    if valid:
        # redeliveries (exact copies) and impostors (same identity, other content)
        good += data.draw(st.lists(st.sampled_from(good), max_size=5))
        twins = data.draw(st.lists(st.sampled_from(valid), max_size=4))
        good += [_bytes({**m, "soc": round(1.0 - float(m["soc"]), 3)}) for m in twins]  # type: ignore[arg-type]
    good_set = set(good)
    bad_bytes = [b for b in (_bytes(x) for x in bad) if b not in good_set]
    mixed = data.draw(st.permutations(good + bad_bytes))
    splits = data.draw(st.lists(st.integers(0, len(mixed)), max_size=3))

    store, refused = asyncio.run(_run(mixed, splits))
    # every refused message is in the dead-letter topic with a reason, exactly once
    refused_positions = sorted(pos for pos, _ in refused)
    bad_positions = sorted(i for i, v in enumerate(mixed) if v not in good_set)
    assert refused_positions == bad_positions
    assert all(reason for _, reason in refused)
    # whatever the batching, the twins hold what one-by-one folding in arrival order gives
    expected = _reference([v for v in mixed if v in good_set])
    for site in SITES:
        i = store.index[site]
        m = expected.get(site)
        if m is None:
            assert store.seq[i] == -1
            continue
        ts = datetime.fromisoformat(str(m["ts"]).replace("Z", "+00:00")).timestamp()
        assert (store.ts[i], store.seq[i]) == (ts, m["seq"])
        assert store.soc[i] == m["soc"] and store.p_kw[i] == m["p_kw"]
