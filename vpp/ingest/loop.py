"""The ingest loop: bus batch → decode → validate → fold → dead-letter → commit.

One :class:`Ingest` is one member of the ingest consumer group. It reads the whole site
registry (compacted ``vpp.sites``, from the beginning, before any telemetry) and owns the
twins of the telemetry partitions assigned to it; its aggregates cover those sites only,
so the members' partial aggregates sum to the fleet.

Durability: offsets are committed after each batch is folded and its refusals are
acknowledged by the dead-letter topic. Every ``snapshot_every_s`` the fleet store is
written to the database with the offsets it includes. When a partition is assigned — at
start-up or in a rebalance — the member adopts that partition's sites from the newest
snapshot covering it and seeks back to the snapshot's offset, so the replay reaches the
same state as an uninterrupted run (folding is idempotent: newest wins). With no snapshot
it replays from the earliest retained record.

Nothing a message contains can stop the loop: refusals are data, and an unexpected error
in one iteration is logged and the loop goes on after a short pause, without committing
the batch it failed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from prometheus_client import Counter, Gauge, Histogram
from rich.table import Table

from vpp.bus import Bus, Consumer, Producer, Record, TopicPartition
from vpp.bus.deadletter import DeadLetterWriter
from vpp.config import IngestSettings, TopicsSettings
from vpp.fleet.estimates import EstimateSettings
from vpp.fleet.hierarchy import FleetHierarchy, FleetSnapshot, NodeAggregate
from vpp.fleet.partials import encode_partial, partial_key, partials_of
from vpp.store.site_events import record_events
from vpp.store.snapshots import latest_covering, save_snapshot, tp_key
from vpp.telemetry.decode import check_keys, decode_batch
from vpp.twins.registry import Registry, RegistryChange, RegistryError, SiteConfig, parse_site
from vpp.twins.states import SiteEvent
from vpp.twins.store import ConnectivityRule, FleetStore, IngestLimits

log = logging.getLogger(__name__)

INGESTED = Counter("vpp_ingest_messages_total", "Telemetry messages by outcome", ["outcome"])
BATCH_SECONDS = Histogram(
    "vpp_ingest_batch_seconds",
    "Time to decode, validate and fold one batch",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
TWINS = Gauge("vpp_twins", "Owned site twins by state family and state", ["family", "state"])
REGISTRY_SITES = Gauge("vpp_registry_sites", "Sites in the registry (active)")


@dataclass(slots=True)
class IngestStats:
    messages: int = 0
    applied: int = 0
    superseded: int = 0
    refused: int = 0
    rate_per_s: float = 0.0


def ingest_store(settings: IngestSettings, partitions: int) -> FleetStore:
    """An empty fleet store with the ingest settings' limits and thresholds."""
    return FleetStore(
        limits=IngestLimits(
            max_future_skew_s=settings.max_future_skew_s,
            replay_window_s=settings.replay_window_s,
            power_tolerance=settings.power_tolerance,
        ),
        rule=ConnectivityRule(
            stale_after_intervals=settings.stale_after_intervals,
            offline_after_intervals=settings.offline_after_intervals,
            health_window_s=settings.health_window_s,
        ),
        partitions=partitions,
        trace_depth=settings.trace_depth,
        trace_every_s=settings.trace_every_s,
        day_trace_depth=settings.day_trace_depth,
        day_trace_every_s=settings.day_trace_every_s,
    )


class Ingest:
    """One ingest member (a :class:`vpp.runtime.Component`)."""

    name = "ingest"

    def __init__(
        self,
        bus: Bus,
        settings: IngestSettings,
        topics: TopicsSettings,
        *,
        db: sa.Engine | None = None,
        clock: Callable[[], float] = time.time,
        member_id: str | None = None,
        evaluate_every_s: float = 1.0,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.topics = topics
        self.db = db
        self.clock = clock
        self.member = f"{settings.group_id}/{member_id or uuid.uuid4().hex[:8]}"
        self.store = ingest_store(settings, topics.telemetry.partitions)
        self.hierarchy = FleetHierarchy(
            self.store,
            EstimateSettings(
                sustain_h=settings.sustain_h, stale_availability=settings.stale_availability
            ),
        )
        self.registry = Registry()
        self.stats = IngestStats()
        self.recent_events: deque[SiteEvent] = deque(maxlen=200)
        self.event_listeners: list[Callable[[Sequence[SiteEvent]], None]] = []
        # Sites committed elsewhere now (peak shaving, site targets), by store row: the
        # hierarchy reports their capacity as committed, the rest as free to offer.
        self.committed: Callable[[FleetStore], npt.NDArray[np.bool_]] | None = None
        # Per group, the dispatch shortfalls this instance reports with its partials (set by
        # the wiring from dispatch: group -> dispatch id -> kW).
        self.shortfalls: Callable[[], dict[str, dict[str, float]]] | None = None
        # Told (sites gained, sites lost) after every rebalance that moved partitions:
        # dispatch takes over the gained sites' open commands from the ledger.
        self.ownership_listeners: list[Callable[[set[str], set[str]], Awaitable[None]]] = []
        self.evaluate_every_s = evaluate_every_s
        self._producer: Producer | None = None
        self._dlq: DeadLetterWriter | None = None
        self._registry_consumer: Consumer | None = None
        self._consumer: Consumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._owned: frozenset[TopicPartition] = frozenset()
        self._last_eval = 0.0
        self._refreshed_at = 0.0
        self._unrefreshed = False
        self._last_snapshot = time.monotonic()
        self._partials_at = -float("inf")
        self.partials_sent = 0
        self._rate_window: deque[tuple[float, int]] = deque(maxlen=20)
        self.ready = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._producer = await self.bus.producer()
        self._dlq = DeadLetterWriter(self._producer, self.topics.deadletter.name)
        self._registry_consumer = await self.bus.consumer(
            [self.topics.sites.name], f"{self.member}-registry-{uuid.uuid4().hex[:6]}"
        )
        await self._catch_up_registry()
        self._consumer = await self.bus.consumer(
            [self.topics.telemetry.name], self.settings.group_id, on_assign=self._on_assign
        )
        self._task = asyncio.create_task(self._run(), name=f"ingest {self.member}")
        self.ready.set()

    async def stop(self) -> None:
        try:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            await self._snapshot(force=True)
        finally:
            for closer in (self._consumer, self._registry_consumer, self._producer):
                if closer is not None:
                    with contextlib.suppress(Exception):
                        await closer.stop()

    # -- registry --------------------------------------------------------------------------

    async def _catch_up_registry(self, timeout_s: float = 60.0) -> None:
        """Read ``vpp.sites`` to its end before any telemetry is validated against it."""
        consumer = self._registry_consumer
        assert consumer is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            records = await consumer.getmany(max_records=10_000, timeout_s=0.2)
            await self._apply_registry(records)
            if not records and consumer.assignment():
                lag = await consumer.lag()
                if sum(lag.values()) == 0:
                    return
        raise TimeoutError(f"site registry not read within {timeout_s} s")

    async def _poll_registry(self) -> None:
        assert self._registry_consumer is not None
        records = await self._registry_consumer.getmany(max_records=10_000, timeout_s=0)
        await self._apply_registry(records)

    async def _apply_registry(self, records: list[Record]) -> None:
        """Apply registry records in order. No record can stop the engine: one that cannot
        be handled — bad JSON, a key/body mismatch, a producer timestamp out of range, or
        any other exception while applying it — is dead-lettered with its reason and the
        next one is read (a compacted topic would otherwise replay it at every start)."""
        refused: list[tuple[Record, str, str]] = []
        for rec in records:
            where = f"{rec.topic}[{rec.partition}]@{rec.offset}"
            try:
                problem = self._apply_registry_record(rec, where)
            except Exception as exc:  # any failure: dead-letter it and go on
                log.exception("registry record %s could not be applied", where)
                problem = f"{where}: {type(exc).__name__}: {exc}"
            if problem is not None:
                refused.append((rec, "registry_invalid", problem))
        if refused and self._dlq is not None:
            await self._dlq.refuse(refused)
            await self._dlq.flush()
        REGISTRY_SITES.set(len(self.registry.current))

    def _apply_registry_record(self, rec: Record, where: str) -> str | None:
        """Apply one registry record; the reason it is refused, or ``None``."""
        key = rec.key.decode("utf-8", errors="replace") if rec.key is not None else None
        if key is None:
            return f"{where}: record without a key"
        try:
            ts = datetime.fromtimestamp(rec.timestamp / 1000, UTC)
        except (ValueError, OverflowError, OSError):
            return f"{where}: producer timestamp {rec.timestamp} ms is not a date"
        if rec.value is None:
            if self.registry.apply(RegistryChange(ts, key, None)):
                self.store.decommission(key)
                log.info("site decommissioned", extra={"site_id": key})
            return None
        try:
            cfg = parse_site(rec.value, where)
        except RegistryError as exc:
            return str(exc)
        if cfg.site_id != key:
            return f"{where}: key {key!r} differs from site_id {cfg.site_id!r}"
        if self.registry.apply(RegistryChange(ts, key, cfg)):
            self.store.register(cfg)
        return None

    # -- partitions ------------------------------------------------------------------------

    async def _on_assign(self, tps: frozenset[TopicPartition]) -> None:
        telemetry = self.topics.telemetry.name
        gained = [tp for tp in tps if tp not in self._owned and tp[0] == telemetry]
        lost = [tp for tp in self._owned if tp not in tps and tp[0] == telemetry]
        self._owned = tps
        self.store.set_owned_partitions(p for t, p in tps if t == telemetry)
        for tp in gained:
            await self._restore_partition(tp)
        if self.hierarchy.latest is not None:  # the view learns the new split at once
            self.refresh()
            await self.publish_partials(force=True)
        if self.ownership_listeners and (gained or lost):
            sites_gained = self._sites_of({p for _, p in gained})
            sites_lost = self._sites_of({p for _, p in lost})
            for listener in self.ownership_listeners:
                await listener(sites_gained, sites_lost)

    def _sites_of(self, partitions: set[int]) -> set[str]:
        if not partitions:
            return set()
        store = self.store
        rows = np.flatnonzero(np.isin(store.partition[: store.n], list(partitions)))
        return {store.ids[i] for i in rows.tolist()}

    async def _restore_partition(self, tp: TopicPartition) -> None:
        consumer = self._consumer
        snap = None
        if self.db is not None:
            snap = await asyncio.to_thread(
                latest_covering, self.db, f"{self.settings.group_id}/", tp_key(*tp)
            )
        if snap is None:
            if consumer is not None:
                await consumer.seek(tp, None)
            log.info("partition %s:%d: no snapshot, replaying from the earliest record", *tp)
            return
        other = FleetStore.restore(snap.data, limits=self.store.limits, rule=self.store.rule)
        adopted = self.store.adopt(other, [tp[1]])
        if consumer is not None:
            await consumer.seek(tp, snap.offsets[tp_key(*tp)])
        log.info(
            "partition %s:%d: adopted %d sites from snapshot %d, replaying from offset %d",
            tp[0],
            tp[1],
            adopted,
            snap.snapshot_id,
            snap.offsets[tp_key(*tp)],
        )

    # -- the loop --------------------------------------------------------------------------

    async def process(self, records: Sequence[Record]) -> int:
        """Decode, validate and fold one batch; publish its refusals. Returns applied rows."""
        if not records:
            return 0
        started = time.perf_counter()
        now = self.clock()
        cols, refusals = decode_batch([r.value for r in records])
        cols, wrong_key = check_keys(cols, [r.key for r in records])
        refusals.extend(wrong_key)
        outcome = self.store.fold(cols, now)
        refused = [
            (records[r.position], r.reason, r.detail) for r in (*refusals, *outcome.refusals)
        ]
        if refused:
            assert self._dlq is not None
            await self._dlq.refuse(refused)
        self._emit(outcome.events)
        stats = self.stats
        stats.messages += len(records)
        stats.applied += outcome.applied
        stats.superseded += outcome.superseded
        stats.refused += len(refused)
        INGESTED.labels("applied").inc(outcome.applied)
        INGESTED.labels("superseded").inc(outcome.superseded)
        INGESTED.labels("refused").inc(len(refused))
        BATCH_SECONDS.observe(time.perf_counter() - started)
        return outcome.applied

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None and self._dlq is not None
        while True:
            try:
                await self._poll_registry()
                timeout = self.settings.poll_timeout_s
                if self._unrefreshed:  # do not let a quiet poll hold back a due refresh
                    due = self._refreshed_at + self.settings.refresh_min_interval_s
                    timeout = min(timeout, max(0.0, due - time.monotonic()))
                records = await consumer.getmany(
                    max_records=self.settings.batch_max_records, timeout_s=timeout
                )
                if records:
                    await self.process(records)
                    await self._dlq.flush()
                    await consumer.commit()
                    self._rate_window.append((time.monotonic(), self.stats.messages))
                now = self.clock()
                # Replaying a backlog, readings are older than the clock: ageing them now
                # would flap sites offline and back, one event each.
                catching_up = consumer.backlog() > self.settings.batch_max_records
                if not catching_up and now - self._last_eval >= self.evaluate_every_s:
                    self._last_eval = now
                    self._emit(self.store.evaluate(now))
                    self.refresh(now)
                elif records or self._unrefreshed:
                    self._unrefreshed = True
                    if (
                        time.monotonic() - self._refreshed_at
                        >= self.settings.refresh_min_interval_s
                    ):
                        self.refresh(now)
                await self._snapshot()
                await self.publish_partials()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ingest iteration failed; the batch is not committed")
                await asyncio.sleep(1.0)

    def refresh(self, now: float | None = None) -> FleetSnapshot:
        committed = self.committed(self.store) if self.committed is not None else None
        snap = self.hierarchy.refresh(self.clock() if now is None else now, committed=committed)
        self._refreshed_at = time.monotonic()
        self._unrefreshed = False
        for family, states in snap.fleet.counts.items():
            for state, count in states.items():
                TWINS.labels(family, state).set(count)
        return snap

    def _emit(self, events: Sequence[SiteEvent]) -> None:
        if not events:
            return
        notable = [e for e in events if e.from_state != "unknown"]
        for event in notable:
            log.info(
                "%s %s -> %s",
                event.family,
                event.from_state,
                event.to_state,
                extra={"site_id": event.site_id, "event": event.kind},
            )
        self.recent_events.extend(notable)
        if notable and self.db is not None:
            engine = self.db
            task = asyncio.get_running_loop().run_in_executor(None, record_events, engine, notable)
            task.add_done_callback(_log_failure)
        for listener in self.event_listeners:
            listener(events)

    async def _snapshot(self, *, force: bool = False) -> None:
        if self.db is None or self._consumer is None:
            return
        due = time.monotonic() - self._last_snapshot >= self.settings.snapshot_every_s
        if not (due or force):
            return
        self._last_snapshot = time.monotonic()
        positions = self._consumer.positions()
        if not positions:
            return
        offsets = {tp_key(t, p): off for (t, p), off in positions.items()}
        blob = self.store.snapshot()
        await asyncio.to_thread(
            save_snapshot,
            self.db,
            self.member,
            datetime.now(UTC),
            offsets,
            self.store.n,
            blob,
            self.settings.snapshots_kept,
        )

    async def publish_partials(self, *, force: bool = False) -> int:
        """This member's partial of every group to the aggregates topic (compacted, keyed
        ``group|member``): every ``partials_every_s``, and at once on ``force``."""
        if self._producer is None or self.hierarchy.latest is None:
            return 0
        if not force and time.monotonic() - self._partials_at < self.settings.partials_every_s:
            return 0
        self._partials_at = time.monotonic()
        telemetry = self.topics.telemetry
        owned = [p for t, p in self._owned if t == telemetry.name]
        shortfalls = self.shortfalls() if self.shortfalls is not None else None
        partials = partials_of(self.hierarchy, self.member, owned, telemetry.partitions, shortfalls)
        await self._producer.send_many(
            self.topics.aggregates.name,
            [(partial_key(p), encode_partial(p)) for p in partials],
        )
        self.partials_sent += len(partials)
        return len(partials)

    # -- reporting -------------------------------------------------------------------------

    @property
    def latest(self) -> FleetSnapshot | None:
        return self.hierarchy.latest

    def rate(self) -> float:
        if len(self._rate_window) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._rate_window[0], self._rate_window[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def telemetry_partitions(self) -> list[int]:
        """The telemetry partitions this member owns now (its sites' twins)."""
        return sorted(p for t, p in self._owned if t == self.topics.telemetry.name)

    def status(self) -> dict[str, Any]:
        snap = self.latest
        dead = self._dlq.count if self._dlq else 0
        rate = self.rate()
        line = f"{self.stats.messages} msgs ({rate:.0f}/s), {dead} dead-lettered"
        out: dict[str, Any] = {
            "line": line,
            "messages": self.stats.messages,
            "deadletters": dead,
            "partitions": self.telemetry_partitions(),
        }
        if snap is not None:
            out["table"] = fleet_table(snap, rate, dead)
        return out


def _log_failure(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("writing site events failed: %r", fut.exception())


def _fmt(b: Any) -> str:
    return f"{b.expected:,.0f} [{b.lower:,.0f}, {b.upper:,.0f}]"


def fleet_table(snap: FleetSnapshot, rate: float, dead: int) -> Table:
    table = Table(
        title=f"fleet at {snap.as_of:%H:%M:%S}Z · ingest {rate:,.0f} msg/s · dead-letters {dead}",
        title_justify="left",
    )
    for col in (
        "node",
        "sites",
        "online/stale/offline",
        "E dis kWh [lo, hi]",
        "E chg kWh [lo, hi]",
        "P dis kW P50 / P90",
        "P net kW",
    ):
        table.add_column(col, justify="right" if col != "node" else "left")

    def row(node: NodeAggregate) -> None:
        c = node.counts["connectivity"]
        table.add_row(
            node.node_id,
            str(node.sites),
            f"{c['online']}/{c['stale']}/{c['offline']}",
            _fmt(node.e_discharge_kwh),
            _fmt(node.e_charge_kwh),
            f"{node.p_discharge_p50_kw:,.0f} / {node.p_discharge_p90_kw:,.0f}",
            f"{node.p_net_kw.expected:,.1f}",
        )

    row(snap.fleet)
    for name in sorted(snap.groups):
        row(snap.groups[name])
    return table


async def publish_registry(producer: Producer, topic: str, sites: Sequence[SiteConfig]) -> None:
    """Publish site records (key ``site_id``) on the registry topic."""
    await producer.send_many(
        topic, [(s.site_id.encode(), s.model_dump_json().encode()) for s in sites]
    )
    await producer.flush()
