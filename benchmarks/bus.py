"""Bus throughput: 200,000 messages of ~120 bytes produced and consumed concurrently.

(a) the embedded bus, (b) Kafka (Tansu) through the bus interface, (c) a bare aiokafka
produce/consume loop on the same broker in the same run; reports msgs/s and (b)/(c).
Each case: one producer and one consumer group member, four partitions, keys are 1,000
site ids; the clock runs from the first publish to the last record consumed and committed.

    python benchmarks/bus.py [--messages N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from benchmarks._broker import tansu_broker
from vpp.bus import Bus
from vpp.bus.embedded import EmbeddedBus
from vpp.bus.kafka import KafkaBus
from vpp.config import (
    BusSettings,
    EmbeddedBusSettings,
    KafkaSettings,
    TopicSpec,
)

PARTITIONS = 4
CHUNK = 2_000


def make_messages(n: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(n):
        key = f"site-{i % 1000:05d}".encode()
        value = (
            b'{"v":1,"site_id":"%s","ts":"2026-11-21T14:05:00.000Z","seq":%d,'
            b'"soc":0.5123,"p_kw":-3.25,"site_load_kw":4.75,"pv_kw":1.5}' % (key, i)
        )
        out.append((key, value))
    return out


async def through_bus(bus: Bus, messages: list[tuple[bytes, bytes]]) -> float:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    await bus.ensure_topics([TopicSpec(name=topic, partitions=PARTITIONS)])
    consumer = await bus.consumer([topic], f"g-{uuid.uuid4().hex[:8]}")
    while not consumer.assignment():
        await consumer.getmany(max_records=1, timeout_s=0.2)
    producer = await bus.producer()
    total = len(messages)

    async def produce() -> None:
        for i in range(0, total, CHUNK):
            await producer.send_many(topic, messages[i : i + CHUNK])
        await producer.flush()

    async def consume() -> None:
        got = 0
        while got < total:
            got += len(await consumer.getmany(max_records=5_000, timeout_s=1.0))
            await consumer.commit()

    started = time.perf_counter()
    await asyncio.gather(produce(), consume())
    elapsed = time.perf_counter() - started
    await producer.stop()
    await consumer.stop()
    return total / elapsed


async def bare_aiokafka(bootstrap: str, messages: list[tuple[bytes, bytes]]) -> float:
    """The plain aiokafka idiom: send() per record with linger, getmany + commit."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"bare-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    await admin.close()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        heartbeat_interval_ms=500,
    )
    await consumer.start()
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=200, max_records=1)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024, acks=1
    )
    await producer.start()
    total = len(messages)

    async def produce() -> None:
        for key, value in messages:
            await producer.send(topic, value=value, key=key)
        await producer.flush()

    async def consume() -> None:
        got = 0
        while got < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5_000)
            got += sum(len(v) for v in batches.values())
            await consumer.commit()

    started = time.perf_counter()
    await asyncio.gather(produce(), consume())
    elapsed = time.perf_counter() - started
    await producer.stop()
    await consumer.stop()
    return total / elapsed


async def main(n: int) -> dict[str, object]:
    messages = make_messages(n)
    embedded = EmbeddedBus(EmbeddedBusSettings(max_backlog_per_partition=20_000))
    await embedded.start()
    embedded_rate = await through_bus(embedded, messages)
    await embedded.stop()

    with tansu_broker() as bootstrap:
        settings = BusSettings(
            kind="kafka",
            kafka=KafkaSettings(
                bootstrap_servers=bootstrap, enable_idempotence=False, heartbeat_interval_ms=500
            ),
        )
        kafka = KafkaBus(settings)
        await kafka.start()
        bare_rate = await bare_aiokafka(bootstrap, messages)
        bus_rate = await through_bus(kafka, messages)
        await kafka.stop()
    return {
        "benchmark": "bus",
        "messages": n,
        "message_bytes": len(messages[0][1]),
        "partitions": PARTITIONS,
        "embedded_msgs_per_s": round(embedded_rate),
        "kafka_bus_msgs_per_s": round(bus_rate),
        "bare_aiokafka_msgs_per_s": round(bare_rate),
        "ratio_bus_to_bare": round(bus_rate / bare_rate, 3),
        "goal": "kafka_bus >= 0.8 x bare_aiokafka",
        "goal_met": bus_rate >= 0.8 * bare_rate,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.messages))))
