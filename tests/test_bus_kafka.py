"""Kafka-only behaviour: topic creation at start-up and surviving a broker restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.conftest import TansuBroker, kafka_bus_settings, unique
from vpp.bus.kafka import KafkaBus, client_options

pytestmark = pytest.mark.kafka


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[TansuBroker]:
    broker = TansuBroker(tmp_path / "tansu.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


async def test_start_creates_configured_topics_with_partition_counts(kafka_bootstrap: str) -> None:
    settings = kafka_bus_settings(kafka_bootstrap)
    async with KafkaBus(settings):
        admin = AIOKafkaAdminClient(**client_options(settings.kafka))
        await admin.start()
        try:
            described = await admin.describe_topics([t.name for t in settings.topics.all()])
        finally:
            await admin.close()
    counts = {d["topic"]: len(d["partitions"]) for d in described}
    assert counts == {t.name: t.partitions for t in settings.topics.all()}


async def test_producer_and_consumer_survive_a_broker_restart(
    private_broker: TansuBroker,
) -> None:
    settings = kafka_bus_settings(
        private_broker.bootstrap, request_timeout_ms=8000, retry_backoff_ms=200
    )
    topic = settings.topics.telemetry.name
    bus = KafkaBus(settings)
    await bus.start()
    producer = await bus.producer()
    consumer = await bus.consumer([topic], unique("g"))
    try:
        await producer.send_many(topic, [(b"a", b"before-%d" % i) for i in range(10)])
        await producer.flush()
        seen: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(seen) < 10 and time.monotonic() < deadline:
            seen += [r.value for r in await consumer.getmany(timeout_s=0.5) if r.value]
        await consumer.commit()
        assert len(seen) == 10

        private_broker.stop()  # memory-only: the restarted broker has no topics, no groups
        await asyncio.sleep(0.5)
        private_broker.start()

        await producer.send_many(topic, [(b"a", b"after-%d" % i) for i in range(10)])
        await producer.flush()  # raises if anything was lost
        after: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(after) < 10 and time.monotonic() < deadline:
            after += [
                r.value
                for r in await consumer.getmany(timeout_s=0.5)
                if r.value and r.value.startswith(b"after")
            ]
        assert sorted(after) == sorted(b"after-%d" % i for i in range(10))
    finally:
        await consumer.stop()
        await producer.stop()
        await bus.stop()
