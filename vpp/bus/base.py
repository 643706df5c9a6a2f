"""The bus interface shared by the embedded (in-process) and the Kafka implementation.

Semantics are Kafka's, so a component written against this interface runs unchanged on
either:

- a topic has a fixed number of partitions; a keyed record goes to the partition chosen by
  Kafka's murmur2 partitioner, so one key's records stay in order on one partition;
- a consumer belongs to a group; the group's members split the topic's partitions and
  rebalance when a member joins or leaves;
- delivery is at-least-once: :meth:`Consumer.commit` records what the caller has *processed*
  (everything returned by :meth:`Consumer.getmany` so far); a member that stops without
  committing leaves those records to be delivered again.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

from aiokafka.partitioner import murmur2

from vpp.config import TopicSpec


class Record(Protocol):
    """One consumed record. ``value is None`` is a tombstone (deletion on a compacted topic).

    A protocol, so the Kafka consumer hands out aiokafka's own records without copying them
    into another object on the hot path; ``timestamp`` is epoch milliseconds.
    """

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def timestamp(self) -> int: ...


@dataclass(frozen=True, slots=True)
class BusRecord:
    """A :class:`Record` made by the embedded bus (and by tests)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int


TopicPartition = tuple[str, int]
AssignmentCallback = Callable[[frozenset[TopicPartition]], Awaitable[None]]


class PartitionOf:
    """Kafka's default partitioner (murmur2 of the key), memoised per key.

    murmur2 in aiokafka is pure Python (~3 µs a key); a fleet's keys are a bounded set of site
    ids, so a dict lookup per message is all the hot path pays.
    """

    __slots__ = ("_cache", "_max_entries")

    def __init__(self, max_entries: int = 2_000_000) -> None:
        self._cache: dict[tuple[bytes, int], int] = {}
        self._max_entries = max_entries

    def __call__(self, key: bytes, partitions: int) -> int:
        hit = self._cache.get((key, partitions))
        if hit is not None:
            return hit
        part = (murmur2(key) & 0x7FFFFFFF) % partitions
        if len(self._cache) >= self._max_entries:
            self._cache.clear()
        self._cache[(key, partitions)] = part
        return part


partition_of = PartitionOf()


class Producer(abc.ABC):
    """Publishes keyed records. ``send_many`` is the batched path; both may wait (backpressure)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @abc.abstractmethod
    async def send(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        """Queue one record; returns once it is accepted for delivery (not yet acknowledged)."""

    @abc.abstractmethod
    async def send_many(
        self, topic: str, items: Iterable[tuple[bytes | None, bytes | None]]
    ) -> None:
        """Queue many (key, value) records, in order per key."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Wait until everything queued so far is acknowledged."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Flush and release the producer."""


class Consumer(abc.ABC):
    """One member of a consumer group."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @abc.abstractmethod
    async def getmany(self, max_records: int = 1000, timeout_s: float = 0.5) -> list[Record]:
        """Up to ``max_records`` records from the assigned partitions, in order per partition.

        Returns an empty list after ``timeout_s`` when nothing is available.
        """

    @abc.abstractmethod
    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit everything returned by :meth:`getmany` so far (the caller processed it),
        or only up to ``offsets`` (next offset per partition, as :meth:`positions` gave it
        after a batch) when a pipeline is still processing later batches."""

    @abc.abstractmethod
    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions this member owns now."""

    @abc.abstractmethod
    async def lag(self) -> dict[TopicPartition, int]:
        """Records after this member's position (not yet read), per assigned partition."""

    @abc.abstractmethod
    def backlog(self) -> int:
        """Records known to wait after this member's positions (cheap, no round trip)."""

    @abc.abstractmethod
    def positions(self) -> dict[TopicPartition, int]:
        """The next offset this member reads, per assigned partition it has a position for."""

    @abc.abstractmethod
    async def seek(self, tp: TopicPartition, offset: int | None) -> None:
        """Read ``tp`` from ``offset`` next (None = the earliest retained record).

        Call it from the ``on_assign`` callback (or after it): a seek on a partition the
        member does not own is ignored.
        """

    @abc.abstractmethod
    async def stop(self) -> None:
        """Leave the group (its partitions go to the other members)."""


class Bus(abc.ABC):
    """A message bus: topics, producers and consumer groups."""

    kind: str

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def ensure_topics(self, specs: Sequence[TopicSpec]) -> None:
        """Create the topics that do not exist yet with their partition counts."""

    @abc.abstractmethod
    async def producer(self) -> Producer:
        """A started producer."""

    @abc.abstractmethod
    async def consumer(
        self,
        topics: Sequence[str],
        group_id: str,
        *,
        on_assign: AssignmentCallback | None = None,
    ) -> Consumer:
        """A started member of ``group_id`` subscribed to ``topics``.

        A new group starts at the earliest retained offset. ``on_assign`` is awaited with
        the member's new assignment after every rebalance, before records of the newly
        assigned partitions are fetched (the place to :meth:`Consumer.seek`).
        """

    @abc.abstractmethod
    async def healthy(self) -> bool:
        """True when the bus can accept and deliver records now."""


def now_ms() -> int:
    return int(time.time() * 1000)
