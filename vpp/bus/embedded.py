"""The in-process bus: Kafka's semantics in one asyncio event loop, with bounded memory.

Model. Each partition is an append-only log (a Python list and the offset of its first
entry). Each consumer group keeps a committed offset per partition; members of a group
split the partitions round-robin and rebalance when one joins or leaves. A partition's
records below the *low-water mark* — the smallest committed offset of the groups
subscribed to the topic — are dropped.

Backpressure instead of growth: a producer appending to a partition whose backlog
(log end − low-water mark) has reached ``max_backlog_per_partition`` waits until a
consumer commits. A topic no group has subscribed to yet keeps only the newest
``max_backlog_per_partition`` records per partition (as Kafka's time/size retention
would), so publishing to an unread topic never blocks. On a compacted topic the dropped
prefix is folded into a per-key *head* (the newest record per key), so a new group still
reads every key's latest value, as on a compacted Kafka topic. Compacted topics never
apply backpressure: their memory is bounded by the number of keys, and a reader that falls
behind the retained log still sees every key's newest value.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterable, Mapping, Sequence

from vpp.bus.base import (
    AssignmentCallback,
    Bus,
    BusRecord,
    Consumer,
    Producer,
    Record,
    TopicPartition,
    now_ms,
    partition_of,
)
from vpp.config import EmbeddedBusSettings, TopicSpec
from vpp.metrics import BUS_BACKPRESSURE_SECONDS, BUS_CONSUMED, BUS_LAG, BUS_PUBLISHED

log = logging.getLogger(__name__)

_TRUNCATE_MIN = 512  # drop a log prefix only once it is this long (amortises list deletes)


class UnknownTopicError(KeyError):
    def __str__(self) -> str:
        return f"unknown topic {self.args[0]!r}: create it first with ensure_topics()"


class _Partition:
    __slots__ = ("base", "compacted", "head", "index", "low", "records", "space", "topic")

    def __init__(self, topic: str, index: int, compacted: bool) -> None:
        self.topic = topic
        self.index = index
        self.compacted = compacted
        self.records: list[Record] = []
        self.base = 0  # offset of records[0]
        self.low = 0  # low-water mark: smallest committed offset over subscribed groups
        self.head: dict[bytes | None, Record] = {}  # compacted topics: newest dropped per key
        self.space = asyncio.Event()
        self.space.set()

    @property
    def end(self) -> int:
        return self.base + len(self.records)

    @property
    def earliest(self) -> int:
        if self.head:
            return min(r.offset for r in self.head.values())
        return self.base

    def drop_below(self, offset: int, force: bool = False) -> None:
        count = min(offset, self.end) - self.base
        if count <= 0 or (count < _TRUNCATE_MIN and not force):
            return
        if self.compacted:
            for rec in self.records[:count]:
                self.head.pop(rec.key, None)
                self.head[rec.key] = rec
        del self.records[:count]
        self.base += count

    def read(self, position: int, limit: int) -> tuple[list[Record], int]:
        """Records from ``position`` on (at most ``limit``) and the position after them."""
        out: list[Record] = []
        if position < self.base:
            if self.head:
                out = sorted(
                    (r for r in self.head.values() if r.offset >= position),
                    key=lambda r: r.offset,
                )[:limit]
            if len(out) == limit:
                return out, out[-1].offset + 1
            position = self.base
        start = position - self.base
        chunk = self.records[start : start + limit - len(out)]
        out.extend(chunk)
        return out, position + len(chunk)


class _Topic:
    __slots__ = ("groups", "partitions", "spec")

    def __init__(self, spec: TopicSpec) -> None:
        self.spec = spec
        self.partitions = [_Partition(spec.name, i, spec.compacted) for i in range(spec.partitions)]
        self.groups: dict[str, _Group] = {}


class _Group:
    """Committed offsets and members of one consumer group."""

    def __init__(self, bus: EmbeddedBus, group_id: str) -> None:
        self.bus = bus
        self.group_id = group_id
        self.topics: set[str] = set()
        self.committed: dict[TopicPartition, int] = {}
        self.members: list[EmbeddedConsumer] = []

    async def rebalance(self) -> None:
        """Assign every partition of the group's topics to its members, round-robin."""
        tps = [
            (name, p.index) for name in sorted(self.topics) for p in self.bus.topic(name).partitions
        ]
        share: dict[int, set[TopicPartition]] = {id(m): set() for m in self.members}
        for i, tp in enumerate(tps):
            if self.members:
                share[id(self.members[i % len(self.members)])].add(tp)
        for member in list(self.members):
            await member._assign(frozenset(share[id(member)]))

    def start_offset(self, tp: TopicPartition) -> int:
        committed = self.committed.get(tp)
        part = self.bus.topic(tp[0]).partitions[tp[1]]
        if committed is None:
            return part.earliest
        return committed


class EmbeddedProducer(Producer):
    def __init__(self, bus: EmbeddedBus) -> None:
        self._bus = bus

    async def send(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        await self._bus._append(topic, key, value)

    async def send_many(
        self, topic: str, items: Iterable[tuple[bytes | None, bytes | None]]
    ) -> None:
        await self._bus._append_many(topic, items)

    async def flush(self) -> None:
        return None  # an accepted record is already visible to consumers

    async def stop(self) -> None:
        return None


class EmbeddedConsumer(Consumer):
    def __init__(
        self,
        bus: EmbeddedBus,
        group: _Group,
        on_assign: AssignmentCallback | None,
    ) -> None:
        self._bus = bus
        self._group = group
        self._on_assign = on_assign
        self._assigned: frozenset[TopicPartition] = frozenset()
        self._order: list[TopicPartition] = []
        self._position: dict[TopicPartition, int] = {}
        self._wakeup = asyncio.Event()
        self._rr = 0
        self._stopped = False

    async def _assign(self, tps: frozenset[TopicPartition]) -> None:
        kept = {tp: pos for tp, pos in self._position.items() if tp in tps}
        self._position = {tp: kept.get(tp, self._group.start_offset(tp)) for tp in sorted(tps)}
        changed = tps != self._assigned
        self._assigned = tps
        self._order = sorted(tps)
        self._wakeup.set()
        if changed and self._on_assign is not None:
            await self._on_assign(tps)

    def _notify(self) -> None:
        self._wakeup.set()

    async def getmany(self, max_records: int = 1000, timeout_s: float = 0.5) -> list[Record]:
        if self._stopped:
            raise RuntimeError("consumer is stopped")
        deadline = time.monotonic() + timeout_s
        while True:
            self._wakeup.clear()
            out: list[Record] = []
            n = len(self._order)
            for i in range(n):
                tp = self._order[(self._rr + i) % n]
                part = self._bus.topic(tp[0]).partitions[tp[1]]
                pos = self._position[tp]
                if pos >= part.end:
                    continue
                chunk, self._position[tp] = part.read(pos, max_records - len(out))
                out.extend(chunk)
                if len(out) >= max_records:
                    break
            if n:
                self._rr = (self._rr + 1) % n
            if out:
                counts: dict[str, int] = {}
                for rec in out:
                    counts[rec.topic] = counts.get(rec.topic, 0) + 1
                for topic, count in counts.items():
                    BUS_CONSUMED.labels(topic, self._group.group_id).inc(count)
                return out
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return []

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        marks = self._position if offsets is None else offsets
        for tp, pos in marks.items():
            if tp in self._assigned and self._group.committed.get(tp) != pos:
                self._group.committed[tp] = pos
                self._bus._advance_low(tp[0], tp[1])
        await self._update_lag()

    async def _update_lag(self) -> None:
        group = self._group
        for name in group.topics:
            parts = self._bus.topic(name).partitions
            lag = sum(p.end - group.start_offset((name, p.index)) for p in parts)
            BUS_LAG.labels(name, group.group_id).set(lag)

    def assignment(self) -> frozenset[TopicPartition]:
        return self._assigned

    async def lag(self) -> dict[TopicPartition, int]:
        return {
            tp: self._bus.topic(tp[0]).partitions[tp[1]].end - pos
            for tp, pos in self._position.items()
        }

    def backlog(self) -> int:
        topic = self._bus.topic
        return sum(topic(t).partitions[p].end - pos for (t, p), pos in self._position.items())

    def positions(self) -> dict[TopicPartition, int]:
        return dict(self._position)

    async def seek(self, tp: TopicPartition, offset: int | None) -> None:
        if tp not in self._assigned:
            return
        part = self._bus.topic(tp[0]).partitions[tp[1]]
        self._position[tp] = part.earliest if offset is None else max(offset, part.earliest)
        self._wakeup.set()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self in self._group.members:
            self._group.members.remove(self)
            await self._group.rebalance()


class EmbeddedBus(Bus):
    """See the module docstring. Not thread-safe: every user runs in the bus's event loop."""

    kind = "embedded"

    def __init__(self, settings: EmbeddedBusSettings | None = None) -> None:
        self._settings = settings or EmbeddedBusSettings()
        self._topics: dict[str, _Topic] = {}
        self._groups: dict[str, _Group] = {}
        self._started = False
        self._rr_keyless = itertools.count()

    @property
    def max_backlog(self) -> int:
        return self._settings.max_backlog_per_partition

    def topic(self, name: str) -> _Topic:
        try:
            return self._topics[name]
        except KeyError:
            raise UnknownTopicError(name) from None

    async def start(self) -> None:
        self._started = True

    async def stop(self) -> None:
        self._started = False
        for group in self._groups.values():
            for member in list(group.members):
                await member.stop()

    async def ensure_topics(self, specs: Sequence[TopicSpec]) -> None:
        for spec in specs:
            if spec.name not in self._topics:
                self._topics[spec.name] = _Topic(spec)

    async def producer(self) -> Producer:
        return EmbeddedProducer(self)

    async def consumer(
        self,
        topics: Sequence[str],
        group_id: str,
        *,
        on_assign: AssignmentCallback | None = None,
    ) -> Consumer:
        for name in topics:
            self.topic(name)
        group = self._groups.get(group_id)
        if group is None:
            group = self._groups[group_id] = _Group(self, group_id)
        for name in topics:
            if name not in group.topics:
                group.topics.add(name)
                topic = self._topics[name]
                topic.groups[group_id] = group
                for part in topic.partitions:
                    self._advance_low(name, part.index)
        member = EmbeddedConsumer(self, group, on_assign)
        group.members.append(member)
        await group.rebalance()
        return member

    async def healthy(self) -> bool:
        return self._started

    def backlog(self, topic: str) -> int:
        """Records held in memory for ``topic`` (all partitions): what backpressure bounds."""
        return sum(len(p.records) + len(p.head) for p in self.topic(topic).partitions)

    # -- internals -------------------------------------------------------------------------

    def _advance_low(self, topic_name: str, index: int) -> None:
        topic = self._topics[topic_name]
        part = topic.partitions[index]
        if topic.groups and not topic.spec.compacted:
            part.low = min(g.start_offset((topic_name, index)) for g in topic.groups.values())
            part.drop_below(part.low)
        if part.end - part.low < self.max_backlog:
            part.space.set()

    async def _wait_for_space(self, part: _Partition) -> None:
        started = time.monotonic()
        while part.end - part.low >= self.max_backlog:
            part.space.clear()
            await part.space.wait()
        BUS_BACKPRESSURE_SECONDS.labels(part.topic).inc(time.monotonic() - started)

    def _wake(self, topic: _Topic) -> None:
        for group in topic.groups.values():
            for member in group.members:
                member._notify()

    def _blocks(self, topic: _Topic, part: _Partition) -> bool:
        """Backpressure: a read, non-compacted partition whose backlog is full."""
        return (
            bool(topic.groups)
            and not topic.spec.compacted
            and part.end - part.low >= self.max_backlog
        )

    def _push(
        self, topic: _Topic, part: _Partition, key: bytes | None, value: bytes | None
    ) -> None:
        part.records.append(BusRecord(topic.spec.name, part.index, part.end, key, value, now_ms()))
        if (not topic.groups or topic.spec.compacted) and len(part.records) > self.max_backlog:
            # Unread or compacted: keep the newest records (retention), never block.
            part.low = part.end - self.max_backlog
            part.drop_below(part.low, force=True)

    async def _append(self, topic_name: str, key: bytes | None, value: bytes | None) -> None:
        topic = self.topic(topic_name)
        part = topic.partitions[self._partition(topic, key)]
        if self._blocks(topic, part):
            await self._wait_for_space(part)
        self._push(topic, part, key, value)
        BUS_PUBLISHED.labels(topic_name).inc()
        self._wake(topic)

    async def _append_many(
        self, topic_name: str, items: Iterable[tuple[bytes | None, bytes | None]]
    ) -> None:
        topic = self.topic(topic_name)
        count = 0
        for key, value in items:
            part = topic.partitions[self._partition(topic, key)]
            if self._blocks(topic, part):
                if count:
                    BUS_PUBLISHED.labels(topic_name).inc(count)
                    count = 0
                self._wake(topic)
                await self._wait_for_space(part)
            self._push(topic, part, key, value)
            count += 1
        if count:
            BUS_PUBLISHED.labels(topic_name).inc(count)
        self._wake(topic)

    def _partition(self, topic: _Topic, key: bytes | None) -> int:
        n = topic.spec.partitions
        if key is None:
            return next(self._rr_keyless) % n
        return partition_of(key, n)
