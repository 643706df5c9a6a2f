"""Bus throughput: 200,000 messages of ~120 bytes produced and consumed concurrently.

Cases, on one Tansu broker in one run:

(a) the embedded bus (in-process);
(b) Kafka through the bus interface (``send_many`` in chunks of 2,000: per-partition
    batches, bounded in-flight batches, retry bookkeeping);
(c) the baseline: bare aiokafka doing what the bus does without its bookkeeping — records
    grouped by partition (same partitioner), ``create_batch``/``send_batch`` per partition,
    every batch awaited at the end; ``getmany`` + ``commit`` on the consumer side;
(d) for reference, bare aiokafka's per-record ``send()`` with linger (the common idiom).

Each case: one producer and one consumer group member, four partitions, keys are 1,000 site
ids; the clock runs from the first publish to the last record consumed and committed. The
Kafka cases are interleaved (b, c, d, then c, d, b, …) and repeated ``--repeats`` times
(default 3) so broker warm-up and drift fall on every case alike; each figure is the median,
with min and max beside, and the ratio is of medians: bus over batched bare aiokafka.

    python benchmarks/bus.py [--messages N] [--repeats R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from benchmarks._broker import tansu_broker
from vpp.bus import Bus
from vpp.bus.base import partition_of
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


async def bare_aiokafka(
    bootstrap: str, messages: list[tuple[bytes, bytes]], *, batched: bool
) -> float:
    """Bare aiokafka: per-partition ``send_batch`` (batched) or ``send()`` per record."""
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

    async def produce_per_record() -> None:
        for key, value in messages:
            await producer.send(topic, value=value, key=key)
        await producer.flush()

    async def produce_batched() -> None:
        futures = []
        for i in range(0, total, CHUNK):
            by_part: dict[int, list[tuple[bytes, bytes]]] = {}
            for key, value in messages[i : i + CHUNK]:
                by_part.setdefault(partition_of(key, PARTITIONS), []).append((key, value))
            for part, items in by_part.items():
                start = 0
                while start < len(items):
                    batch = producer.create_batch()
                    end = start
                    while end < len(items) and batch.append(
                        key=items[end][0], value=items[end][1], timestamp=None
                    ):
                        end += 1
                    futures.append(await producer.send_batch(batch, topic, partition=part))
                    start = end
        await asyncio.gather(*futures)

    produce = produce_batched if batched else produce_per_record

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


def summary(rates: list[float]) -> dict[str, int]:
    return {
        "median": round(statistics.median(rates)),
        "min": round(min(rates)),
        "max": round(max(rates)),
    }


async def main(n: int, repeats: int) -> dict[str, object]:
    messages = make_messages(n)
    embedded_rates = []
    for _ in range(repeats):
        embedded = EmbeddedBus(EmbeddedBusSettings(max_backlog_per_partition=20_000))
        await embedded.start()
        embedded_rates.append(await through_bus(embedded, messages))
        await embedded.stop()

    rates: dict[str, list[float]] = {"bus": [], "bare_batched": [], "bare_per_record": []}
    with tansu_broker() as bootstrap:
        settings = BusSettings(
            kind="kafka",
            kafka=KafkaSettings(
                bootstrap_servers=bootstrap, enable_idempotence=False, heartbeat_interval_ms=500
            ),
        )
        kafka = KafkaBus(settings)
        await kafka.start()
        cases = {
            "bus": lambda: through_bus(kafka, messages),
            "bare_batched": lambda: bare_aiokafka(bootstrap, messages, batched=True),
            "bare_per_record": lambda: bare_aiokafka(bootstrap, messages, batched=False),
        }
        order = list(cases)
        for r in range(repeats):
            for name in order[r % 3 :] + order[: r % 3]:  # rotate: interleaved runs
                rates[name].append(await cases[name]())
        await kafka.stop()
    bus, bare = statistics.median(rates["bus"]), statistics.median(rates["bare_batched"])
    return {
        "benchmark": "bus",
        "messages": n,
        "message_bytes": len(messages[0][1]),
        "partitions": PARTITIONS,
        "repeats": repeats,
        "figures": "msgs/s, median of interleaved repeats (min, max beside)",
        "embedded_msgs_per_s": summary(embedded_rates),
        "kafka_bus_msgs_per_s": summary(rates["bus"]),
        "bare_aiokafka_batched_msgs_per_s": summary(rates["bare_batched"]),
        "bare_aiokafka_per_record_msgs_per_s": summary(rates["bare_per_record"]),
        "ratio_bus_to_bare_batched": round(bus / bare, 3),
        "goal": "kafka_bus >= 0.8 x bare aiokafka with batched sends",
        "goal_met": bus >= 0.8 * bare,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks it still runs")
    args = parser.parse_args()
    if args.smoke:
        args.messages, args.repeats = 5_000, 1
    print(json.dumps(asyncio.run(main(args.messages, args.repeats))))
