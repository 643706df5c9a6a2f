"""One contract, two buses: the embedded bus and Kafka (a real Tansu broker over TCP)."""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from tests.conftest import kafka_bus_settings, unique
from vpp.bus import Bus, Consumer, Record
from vpp.bus.embedded import EmbeddedBus
from vpp.bus.kafka import KafkaBus
from vpp.config import EmbeddedBusSettings, TopicSpec


@dataclass
class BusCase:
    bus: Bus
    kind: str
    max_backlog: int = 0


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
async def case(request: pytest.FixtureRequest) -> AsyncIterator[BusCase]:
    bus: Bus
    if request.param == "embedded":
        bus = EmbeddedBus(EmbeddedBusSettings(max_backlog_per_partition=500))
        case = BusCase(bus, "embedded", 500)
    else:
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        bus = KafkaBus(
            kafka_bus_settings(
                bootstrap,
                max_in_flight_batches=8,
                max_batch_size=64 * 1024,
                max_partition_fetch_bytes=128 * 1024,
                fetch_max_bytes=512 * 1024,
            )
        )
        case = BusCase(bus, "kafka")
    await bus.start()
    try:
        yield case
    finally:
        await bus.stop()


async def new_topic(bus: Bus, partitions: int = 4) -> str:
    name = unique("contract")
    await bus.ensure_topics([TopicSpec(name=name, partitions=partitions)])
    return name


async def drain(consumer: Consumer, expected: int, timeout_s: float = 30.0) -> list[Record]:
    got: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < expected and time.monotonic() < deadline:
        got.extend(await consumer.getmany(max_records=500, timeout_s=0.5))
    return got


async def test_order_per_key_and_same_key_same_partition(case: BusCase) -> None:
    topic = await new_topic(case.bus)
    producer = await case.bus.producer()
    keys = [f"site-{i}".encode() for i in range(7)]
    items = [(k, f"{k.decode()}:{n}".encode()) for n in range(150) for k in keys]
    await producer.send_many(topic, items[:500])
    for key, value in items[500:600]:
        await producer.send(topic, key, value)
    await producer.send_many(topic, items[600:])
    await producer.stop()

    consumer = await case.bus.consumer([topic], unique("g"))
    try:
        got = await drain(consumer, len(items))
    finally:
        await consumer.stop()
    assert len(got) == len(items)
    by_key: dict[bytes, list[int]] = {}
    partition_of_key: dict[bytes, set[int]] = {}
    for rec in got:
        assert rec.key is not None and rec.value is not None
        by_key.setdefault(rec.key, []).append(int(rec.value.split(b":")[1]))
        partition_of_key.setdefault(rec.key, set()).add(rec.partition)
    assert all(seq == list(range(150)) for seq in by_key.values())
    assert all(len(parts) == 1 for parts in partition_of_key.values())
    assert len({p for parts in partition_of_key.values() for p in parts}) > 1


async def test_at_least_once_across_consumer_restart(case: BusCase) -> None:
    topic = await new_topic(case.bus, partitions=2)
    group = unique("g")
    values = [f"m{i}".encode() for i in range(600)]
    producer = await case.bus.producer()
    await producer.send_many(topic, [(f"k{i % 5}".encode(), v) for i, v in enumerate(values)])
    await producer.stop()

    first = await case.bus.consumer([topic], group)
    committed: list[bytes] = []
    while len(committed) < 200:
        batch = await first.getmany(max_records=50, timeout_s=1.0)
        committed.extend(r.value for r in batch if r.value is not None)
        await first.commit()
    uncommitted = await drain(first, 1)  # processed but never committed
    assert uncommitted
    await first.stop()

    second = await case.bus.consumer([topic], group)
    try:
        rest = await drain(second, len(values) - len(committed))
        extra = await second.getmany(max_records=500, timeout_s=1.0)
        rest.extend(extra)
        await second.commit()
    finally:
        await second.stop()
    redelivered = [r.value for r in rest if r.value is not None]
    assert set(committed) | set(redelivered) == set(values), "a record was lost"
    duplicates = set(committed) & set(redelivered)
    assert not duplicates, "a committed record was delivered again"
    uncommitted_values = {r.value for r in uncommitted}
    assert uncommitted_values <= set(redelivered), "an uncommitted record was not redelivered"
    assert len(redelivered) == len(set(redelivered))


async def test_commit_up_to_marks_leaves_later_batches_uncommitted(case: BusCase) -> None:
    """A pipelined consumer commits batch k's marks after reading batch k+1: a restart
    resumes right after batch k, so batch k+1 is delivered again (nothing is skipped)."""
    topic = await new_topic(case.bus, partitions=1)
    group = unique("g")
    values = [f"m{i}".encode() for i in range(300)]
    producer = await case.bus.producer()
    await producer.send_many(topic, [(b"k", v) for v in values])
    await producer.stop()

    first = await case.bus.consumer([topic], group)
    batch_k: list[bytes] = []
    while len(batch_k) < 100:
        got = await first.getmany(max_records=100 - len(batch_k), timeout_s=1.0)
        batch_k.extend(r.value for r in got if r.value is not None)
    marks = first.positions()
    batch_k1 = await first.getmany(max_records=50, timeout_s=1.0)
    assert batch_k1
    await first.commit(marks)  # batch k done; batch k+1 still "in flight"
    await first.stop()

    second = await case.bus.consumer([topic], group)
    try:
        again = await drain(second, len(values) - len(batch_k))
        await second.commit()
    finally:
        await second.stop()
    assert [r.value for r in again] == values[len(batch_k) :]


async def _assignment_settles(
    consumers: list[Consumer], want: set[tuple[str, int]], timeout_s: float = 30.0
) -> list[frozenset[tuple[str, int]]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await asyncio.gather(*(c.getmany(max_records=100, timeout_s=0.2) for c in consumers))
        shares = [c.assignment() for c in consumers]
        union = set().union(*shares)
        disjoint = sum(len(s) for s in shares) == len(union)
        if union == want and disjoint and all(shares):
            return shares
    raise AssertionError(f"assignment never settled: {[c.assignment() for c in consumers]}")


async def test_group_members_split_partitions_and_rebalance_on_leave(case: BusCase) -> None:
    topic = await new_topic(case.bus, partitions=4)
    group = unique("g")
    want = {(topic, p) for p in range(4)}
    one = await case.bus.consumer([topic], group)
    two = await case.bus.consumer([topic], group)
    try:
        shares = await _assignment_settles([one, two], want)
        assert len(shares[0]) == 2 and len(shares[1]) == 2
        await two.stop()
        await _assignment_settles([one], want)

        producer = await case.bus.producer()
        await producer.send_many(topic, [(f"k{i}".encode(), b"after") for i in range(40)])
        await producer.stop()
        got = await drain(one, 40)
        assert {r.partition for r in got} == set(range(4))
    finally:
        await one.stop()
        await two.stop()


async def test_backpressure_bounds_memory_with_a_10x_slower_consumer(case: BusCase) -> None:
    """A consumer ten times slower than the producer: memory stays bounded, nothing is lost."""
    topic = await new_topic(case.bus, partitions=4)
    total, size = 12_000, 1_000
    payload = b"x" * size
    consumer = await case.bus.consumer([topic], unique("g"))
    await consumer.getmany(max_records=1, timeout_s=0.5)  # join the group before producing
    producer = await case.bus.producer()

    produce_s = 0.0
    received = 0

    async def produce() -> None:
        nonlocal produce_s
        started = time.perf_counter()
        for i in range(0, total, 200):
            await producer.send_many(
                topic, [(f"k{j % 16}".encode(), payload) for j in range(i, i + 200)]
            )
        await producer.flush()
        produce_s = time.perf_counter() - started

    async def consume() -> None:
        nonlocal received
        deadline = time.monotonic() + 60
        while received < total and time.monotonic() < deadline:
            batch = await consumer.getmany(max_records=200, timeout_s=0.5)
            received += len(batch)
            await consumer.commit()
            await asyncio.sleep(0.002 + len(batch) * 1e-4)  # the slow consumer

    gc.collect()
    tracemalloc.start()
    try:
        await asyncio.gather(produce(), consume())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await producer.stop()
        await consumer.stop()
    assert received == total
    unbounded = total * size
    assert peak < unbounded / 3, f"peak {peak / 1e6:.1f} MB for {unbounded / 1e6:.0f} MB sent"
    if isinstance(case.bus, EmbeddedBus):
        # The producer was held back: it could not finish far ahead of the consumer.
        assert case.bus.backlog(topic) <= 4 * case.max_backlog
        assert produce_s > 0.5
