"""The bus on Apache Kafka (or any Kafka-protocol broker) through aiokafka.

Producer. ``send_many`` groups records by partition (Kafka's murmur2 partitioner, memoised
per key) and hands aiokafka whole ``BatchBuilder`` batches, which skips aiokafka's per-record
accumulator path. At most ``max_in_flight_batches`` batches wait for the broker; a further
send waits for a slot, so a producer's memory is bounded when the broker is slow or away.
A batch (or single record) that fails — the broker went away, a leader moved, a topic was
lost — is resent with backoff until ``send_retry_deadline_s``; after that, :meth:`flush`
raises, so a caller learns of the loss instead of it being silent.

Consumer. ``getmany`` batches; the consumer never auto-commits: :meth:`commit` commits
explicit offsets for what the caller processed. A rebalance drops the uncommitted positions
of revoked partitions (their records are delivered again to the new owner: at-least-once).
Broker outages surface as empty polls while aiokafka reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaError,
    RebalanceInProgressError,
    TopicAlreadyExistsError,
    UnknownMemberIdError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.structs import OffsetAndMetadata
from aiokafka.structs import TopicPartition as KafkaTP

from vpp.bus.base import (
    AssignmentCallback,
    Bus,
    Consumer,
    Producer,
    Record,
    TopicPartition,
    partition_of,
)
from vpp.config import BusSettings, KafkaSettings, TopicSpec
from vpp.metrics import (
    BUS_BACKPRESSURE_SECONDS,
    BUS_CONSUMED,
    BUS_LAG,
    BUS_PUBLISH_RETRIES,
    BUS_PUBLISHED,
)

log = logging.getLogger(__name__)

Item = tuple[bytes | None, bytes | None]


class PublishFailedError(RuntimeError):
    """Records could not be delivered within ``send_retry_deadline_s``."""


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """The connection options every aiokafka client of the engine shares (security included)."""
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
        "retry_backoff_ms": settings.retry_backoff_ms,
    }
    if settings.sasl_mechanism is not None:
        opts["sasl_mechanism"] = settings.sasl_mechanism
        opts["sasl_plain_username"] = settings.sasl_plain_username
        if settings.sasl_plain_password is not None:
            opts["sasl_plain_password"] = settings.sasl_plain_password.get_secret_value()
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        opts["ssl_context"] = _ssl_context(settings)
    return opts


def _ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    password = settings.ssl_password.get_secret_value() if settings.ssl_password else None
    return create_ssl_context(
        cafile=settings.ssl_cafile,
        certfile=settings.ssl_certfile,
        keyfile=settings.ssl_keyfile,
        password=password,
    )


class _Pending:
    """Records handed to aiokafka and not yet acknowledged, kept for a resend."""

    __slots__ = ("deadline", "items", "partition", "topic")

    def __init__(self, topic: str, partition: int, items: list[Item], deadline: float) -> None:
        self.topic = topic
        self.partition = partition
        self.items = items
        self.deadline = deadline


class KafkaProducer(Producer):
    def __init__(self, bus: KafkaBus, producer: AIOKafkaProducer) -> None:
        self._bus = bus
        self._producer = producer
        self._settings = bus.settings.kafka
        self._slots = asyncio.Semaphore(self._settings.max_in_flight_batches)
        self._inflight: set[asyncio.Task[None]] = set()
        self._failures: list[str] = []

    async def send(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        await self.send_many(topic, ((key, value),))

    async def send_many(self, topic: str, items: Iterable[Item]) -> None:
        partitions = await self._bus.partition_count(topic)
        by_part: dict[int, list[Item]] = {}
        for item in items:
            key = item[0]
            part = partition_of(key, partitions) if key is not None else 0
            bucket = by_part.get(part)
            if bucket is None:
                by_part[part] = [item]
            else:
                bucket.append(item)
        deadline = time.monotonic() + self._settings.send_retry_deadline_s
        for part, part_items in by_part.items():
            await self._submit(_Pending(topic, part, part_items, deadline))

    async def _submit(self, pending: _Pending) -> None:
        """Split into broker batches and hand each to aiokafka once an in-flight slot is free."""
        items = pending.items
        start = 0
        while start < len(items):
            batch = self._producer.create_batch()
            end = start
            while end < len(items):
                key, value = items[end]
                if batch.append(key=key, value=value, timestamp=None) is None:
                    break
                end += 1
            if end == start:  # a single record larger than a batch: let the broker judge it
                end = start + 1
                batch = self._producer.create_batch()
                batch.append(key=items[start][0], value=items[start][1], timestamp=None)
            chunk = _Pending(pending.topic, pending.partition, items[start:end], pending.deadline)
            if self._slots.locked():
                waited = time.monotonic()
                await self._slots.acquire()
                BUS_BACKPRESSURE_SECONDS.labels(pending.topic).inc(time.monotonic() - waited)
            else:
                await self._slots.acquire()
            try:
                # Queued in call order: aiokafka keeps one in-flight batch per partition, so
                # records of one key are written in the order they were sent.
                fut = await self._enqueue(batch, chunk)
            except BaseException:
                self._slots.release()
                raise
            task = asyncio.create_task(self._await_delivery(fut, chunk))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            start = end

    async def _enqueue(self, batch: Any, pending: _Pending) -> asyncio.Future[Any] | None:
        """Hand a batch to aiokafka, waiting out a broker outage; None when past the deadline."""
        while True:
            try:
                fut: asyncio.Future[Any] = await self._producer.send_batch(
                    batch, pending.topic, partition=pending.partition
                )
                return fut
            except KafkaError as exc:
                if not await self._backoff(pending, exc):
                    return None
                batch = self._rebuild(pending)

    async def _await_delivery(self, fut: asyncio.Future[Any] | None, pending: _Pending) -> None:
        try:
            while fut is not None:
                try:
                    await fut
                    BUS_PUBLISHED.labels(pending.topic).inc(len(pending.items))
                    return
                except KafkaError as exc:
                    if not await self._backoff(pending, exc):
                        return
                    fut = await self._enqueue(self._rebuild(pending), pending)
        finally:
            self._slots.release()

    async def _backoff(self, pending: _Pending, exc: Exception) -> bool:
        """Wait before a resend; False (and the loss recorded) once the deadline has passed."""
        if time.monotonic() > pending.deadline:
            msg = (
                f"{len(pending.items)} records to {pending.topic}[{pending.partition}]"
                f" not delivered before the retry deadline: {exc!r}"
            )
            log.error(msg)
            self._failures.append(msg)
            return False
        BUS_PUBLISH_RETRIES.labels(pending.topic).inc()
        log.warning(
            "publish to %s[%d] failed (%r); retrying", pending.topic, pending.partition, exc
        )
        await asyncio.sleep(self._settings.retry_backoff_ms / 1000)
        await self._bus.recover_topic(pending.topic)
        return True

    def _rebuild(self, pending: _Pending) -> Any:
        batch = self._producer.create_batch()
        for key, value in pending.items:
            batch.append(key=key, value=value, timestamp=None)
        return batch

    async def flush(self) -> None:
        while self._inflight:
            await asyncio.gather(*list(self._inflight))
        if self._failures:
            failures, self._failures = self._failures, []
            raise PublishFailedError("; ".join(failures))

    async def stop(self) -> None:
        try:
            await self.flush()
        finally:
            await self._producer.stop()


class _Listener(ConsumerRebalanceListener):
    def __init__(self, owner: KafkaConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        for tp in revoked:
            self._owner._processed.pop((tp.topic, tp.partition), None)
            self._owner._position.pop((tp.topic, tp.partition), None)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        tps = frozenset((tp.topic, tp.partition) for tp in assigned)
        self._owner._assigned = tps
        if self._owner._on_assign is not None:
            await self._owner._on_assign(tps)


class KafkaConsumer(Consumer):
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        group_id: str,
        on_assign: AssignmentCallback | None,
        backoff_s: float,
    ) -> None:
        self._consumer = consumer
        self._group_id = group_id
        self._on_assign = on_assign
        self._backoff_s = backoff_s
        self._processed: dict[TopicPartition, int] = {}  # read since the last commit
        self._position: dict[TopicPartition, int] = {}  # next offset to read
        self._assigned: frozenset[TopicPartition] = frozenset()

    async def getmany(self, max_records: int = 1000, timeout_s: float = 0.5) -> list[Record]:
        try:
            batches = await self._consumer.getmany(
                timeout_ms=int(timeout_s * 1000), max_records=max_records
            )
        except KafkaError as exc:
            log.warning("poll failed (%r); the client reconnects", exc)
            await asyncio.sleep(self._backoff_s)
            return []
        out: list[Record] = []
        for tp, msgs in batches.items():
            if not msgs:
                continue
            out.extend(msgs)
            self._processed[(tp.topic, tp.partition)] = msgs[-1].offset + 1
            self._position[(tp.topic, tp.partition)] = msgs[-1].offset + 1
            BUS_CONSUMED.labels(tp.topic, self._group_id).inc(len(msgs))
        return out

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        marks = self._processed if offsets is None else offsets
        commit_to = {
            KafkaTP(t, p): OffsetAndMetadata(off, "")
            for (t, p), off in marks.items()
            if (t, p) in self._assigned
        }
        if not commit_to:
            return
        try:
            await self._consumer.commit(commit_to)
        except (
            CommitFailedError,
            IllegalGenerationError,
            RebalanceInProgressError,
            UnknownMemberIdError,
        ) as exc:
            log.warning("commit lost to a rebalance (%r); records will be redelivered", exc)
        except KafkaError as exc:
            log.warning("commit failed (%r); records will be redelivered", exc)
        else:
            for key in [tp for tp in self._processed if KafkaTP(*tp) in commit_to]:
                if self._processed[key] <= commit_to[KafkaTP(*key)].offset:
                    del self._processed[key]
            self._update_lag()

    def _local_lag(self) -> dict[str, int]:
        """Lag per topic from the last fetch's high-water marks (no broker round trip)."""
        per_topic: dict[str, int] = {}
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            pos = self._position.get((tp.topic, tp.partition))
            if high is not None and pos is not None:
                per_topic[tp.topic] = per_topic.get(tp.topic, 0) + max(0, high - pos)
        return per_topic

    def _update_lag(self) -> None:
        for topic, lag in self._local_lag().items():
            BUS_LAG.labels(topic, self._group_id).set(lag)

    def backlog(self) -> int:
        return sum(self._local_lag().values())

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset((tp.topic, tp.partition) for tp in self._consumer.assignment())

    async def lag(self) -> dict[TopicPartition, int]:
        assigned = list(self._consumer.assignment())
        if not assigned:
            return {}
        ends = await self._consumer.end_offsets(assigned)
        out: dict[TopicPartition, int] = {}
        for tp in assigned:
            pos = await self._consumer.position(tp)
            out[(tp.topic, tp.partition)] = max(0, ends[tp] - pos)
        return out

    def positions(self) -> dict[TopicPartition, int]:
        return {tp: pos for tp, pos in self._position.items() if tp in self._assigned}

    async def seek(self, tp: TopicPartition, offset: int | None) -> None:
        if tp not in self._assigned:
            return
        ktp = KafkaTP(*tp)
        if offset is None:
            await self._consumer.seek_to_beginning(ktp)
            self._position.pop(tp, None)
        else:
            self._consumer.seek(ktp, offset)
            self._position[tp] = offset
        self._processed.pop(tp, None)

    async def stop(self) -> None:
        await self._consumer.stop()


class KafkaBus(Bus):
    kind = "kafka"

    def __init__(self, settings: BusSettings) -> None:
        self.settings = settings
        self._kafka = settings.kafka
        self._partitions: dict[str, int] = {}
        self._specs: dict[str, TopicSpec] = {spec.name: spec for spec in settings.topics.all()}
        self._admin: AIOKafkaAdminClient | None = None
        self._recover_lock = asyncio.Lock()

    async def start(self) -> None:
        self._admin = AIOKafkaAdminClient(**client_options(self._kafka))
        await self._admin.start()
        if self._kafka.create_topics:
            await self.ensure_topics(self.settings.topics.all())

    async def stop(self) -> None:
        if self._admin is not None:
            admin, self._admin = self._admin, None
            await admin.close()

    def _require_admin(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            raise RuntimeError("the Kafka bus is not started")
        return self._admin

    async def ensure_topics(self, specs: Sequence[TopicSpec]) -> None:
        admin = self._require_admin()
        for spec in specs:
            self._specs[spec.name] = spec
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                spec.name,
                num_partitions=spec.partitions,
                replication_factor=self._kafka.replication_factor,
                topic_configs={"cleanup.policy": "compact"} if spec.compacted else {},
            )
            for spec in specs
            if spec.name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
            log.info("created topics %s", ", ".join(t.name for t in missing))
        for spec in specs:
            self._partitions.pop(spec.name, None)

    async def recover_topic(self, topic: str) -> None:
        """Recreate a topic a restarted broker has lost (known specs only)."""
        spec = self._specs.get(topic)
        if spec is None or not self._kafka.create_topics:
            return
        async with self._recover_lock:
            try:
                await self.ensure_topics([spec])
            except KafkaError as exc:
                log.warning("cannot check topic %s yet (%r)", topic, exc)

    async def partition_count(self, topic: str) -> int:
        count = self._partitions.get(topic)
        if count is None:
            described = await self._require_admin().describe_topics([topic])
            parts = described[0].get("partitions") or []
            if not parts:
                raise KafkaError(f"topic {topic} has no partitions (does it exist?)")
            count = self._partitions[topic] = len(parts)
        return count

    async def producer(self) -> Producer:
        kafka = self._kafka
        producer = AIOKafkaProducer(
            **client_options(kafka),
            linger_ms=kafka.linger_ms,
            max_batch_size=kafka.max_batch_size,
            max_request_size=max(kafka.max_batch_size, 1024 * 1024),
            enable_idempotence=kafka.enable_idempotence,
            acks="all" if kafka.enable_idempotence else 1,
        )
        await producer.start()
        return KafkaProducer(self, producer)

    async def consumer(
        self,
        topics: Sequence[str],
        group_id: str,
        *,
        on_assign: AssignmentCallback | None = None,
    ) -> Consumer:
        kafka = self._kafka
        raw = AIOKafkaConsumer(
            **client_options(kafka),
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=kafka.session_timeout_ms,
            heartbeat_interval_ms=kafka.heartbeat_interval_ms,
            max_partition_fetch_bytes=kafka.max_partition_fetch_bytes,
            fetch_max_bytes=kafka.fetch_max_bytes,
        )
        wrapper = KafkaConsumer(raw, group_id, on_assign, kafka.retry_backoff_ms / 1000)
        raw.subscribe(list(topics), listener=_Listener(wrapper))
        try:
            await raw.start()
        except BaseException:
            await raw.stop()
            raise
        return wrapper

    async def healthy(self) -> bool:
        if self._admin is None:
            return False
        try:
            await asyncio.wait_for(self._admin.list_topics(), timeout=2.0)
        except (KafkaError, TimeoutError, OSError):
            return False
        return True
