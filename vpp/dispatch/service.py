"""The engine's dispatch driver: the core (:mod:`vpp.dispatch.core`) on the bus and the
database.

Each tick (``tick_s``) runs :meth:`DispatchCore.tick` and carries out its effects in order:
the ledger rows are appended (by the ledger's writer), then the commands are published,
then the dispatch log is updated and site events are recorded. Acks are consumed in
batches on their own loop; each batch goes through :meth:`DispatchCore.on_acks`, its
ledger rows are written and only then are its offsets committed, while the next batch is
already being fetched. A restarted service rebuilds the tracker from the ledger and
resends what was in flight under its own ids.

The logic — targets, the split, eligibility, follow checks, re-dispatch, delivery — lives
in the core, which the backtest drives on a simulated clock; this module only moves bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter as Tally
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import sqlalchemy as sa
from prometheus_client import Counter, Gauge

from market.clearing import Award
from vpp.bus import Bus, Consumer, Producer
from vpp.bus.deadletter import DeadLetterWriter
from vpp.config import DispatchSettings, TopicsSettings
from vpp.dispatch.contract import (
    Ack,
    Command,
    ack_decoder,
    command_encoder,
)
from vpp.dispatch.core import DispatchCore, Effects
from vpp.dispatch.delivery import Delivery
from vpp.dispatch.targets import (
    GroupTarget,
    TargetRecord,
    decode_target,
    encode_target,
    from_awards,
)
from vpp.framing import decode_each
from vpp.logs import ctx
from vpp.periodic import run_every
from vpp.store import dispatch_log, ledger
from vpp.store.ledger import CommandStatus, LedgerEntry
from vpp.store.site_events import record_events
from vpp.twins.states import SiteEvent
from vpp.twins.store import FleetStore

log = logging.getLogger(__name__)

COMMANDS = Counter("vpp_commands_total", "Command ledger events", ["event"])
COMMAND_STATES = Gauge("vpp_commands_tracked", "Tracked commands by state", ["state"])
SHORTFALL = Gauge("vpp_dispatch_shortfall_kw", "Target the group cannot cover now", ["group"])
EXPIRED_WHILE_DOWN = Counter(
    "vpp_commands_expired_while_down_total",
    "Commands whose validity ended while the engine was down, closed at start-up",
)

# Targets are scheduled (and reloaded after a restart) at most this far ahead.
TARGET_HORIZON = timedelta(days=7)


class DispatchService:
    """A :class:`vpp.runtime.Component`."""

    name = "dispatch"

    def __init__(
        self,
        settings: DispatchSettings,
        bus: Bus,
        topics: TopicsSettings,
        *,
        db: sa.Engine,
        store: Callable[[], FleetStore],
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
        instance: str | None = None,
        share: Callable[[GroupTarget], tuple[float, float] | None] | None = None,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.topics = topics
        self.db = db
        self.store = store
        self.clock = clock
        # Sharing the fleet with other instances (``instance`` set): targets go out on the
        # targets topic and come in from it, each instance covers its share
        # (vpp.dispatch.shares) and writes its own part of each interval.
        self.instance = instance
        self.core = DispatchCore(settings, store, seed=seed, share=share)
        self._outbox: list[tuple[GroupTarget, bool]] = []
        # sites gained before start (None once started)
        self._pending_sites: set[str] | None = set()
        self._targets: Consumer | None = None
        self.targets_received = 0
        self.tracker = self.core.tracker
        self._ledger = ledger.LedgerWriter(db)
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._dlq: DeadLetterWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        # One writer thread for the dispatch log and site events: writes reach the database
        # in the order they were made (a site's "unresponsive -> acked" never before its
        # cause) and never block the event loop.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vpp-dispatch-writer")
        self._loop: asyncio.AbstractEventLoop | None = None
        self.acks_seen = 0
        self.closed: dict[str, int] = {"delivered": 0, "short": 0}  # intervals closed
        self.expired_while_down = 0

    @property
    def deliveries(self) -> dict[str, Delivery]:
        return self.core.deliveries

    @property
    def _redispatch(self) -> set[str]:
        return self.core._redispatch

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._producer = await self.bus.producer()
        self._dlq = DeadLetterWriter(self._producer, self.topics.deadletter.name)
        # Sharing the fleet, an ack may come back for any instance's command: each instance
        # reads every ack (its own consumer group) and takes the ones it tracks.
        group = self.settings.consumer_group
        if self.instance is not None:
            group = f"{group}-{self.instance.replace('/', '-')}"
        self._consumer = await self.bus.consumer([self.topics.acks.name], group)
        await asyncio.to_thread(self._load_targets, self.clock())
        # An award stored just before a crash whose target never reached the log: a target
        # now, not at the next interval boundary (when the bidder reads the market's awards
        # again and the interval may be over).
        moment = datetime.fromtimestamp(self.clock(), UTC)
        stored = await asyncio.to_thread(dispatch_log.awards_not_over, self.db, moment)
        fresh = [
            t
            for t in from_awards(stored)
            if (d := self.core.deliveries.get(t.dispatch_id)) is None or d.target.source != "award"
        ]
        if fresh:  # none held yet, or held by an operator's target the award outranks
            added = self.add_targets(fresh)
            log.warning("dispatching %d stored awards that had no target yet", len(added))
        if self.instance is None:
            await self._restore()
        else:  # the sites owned before start (assigned early) are taken over now
            pending, self._pending_sites = self._pending_sites, None
            if pending:
                await self._take_over(pending)
        self._tasks = [
            asyncio.create_task(self._ack_loop(), name="dispatch acks"),
            asyncio.create_task(self._tick_loop(), name="dispatch ticks"),
        ]
        if self.instance is not None:
            # Every instance reads the whole compacted targets topic from the start.
            self._targets = await self.bus.consumer(
                [self.topics.targets.name], f"vpp-targets-{uuid.uuid4().hex[:8]}"
            )
            self._tasks.append(asyncio.create_task(self._targets_loop(), name="dispatch targets"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._ledger.stop()
        await asyncio.to_thread(self._writer.shutdown, wait=True)  # drain pending writes
        for closer in (self._consumer, self._targets, self._producer):
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer.stop()

    async def on_ownership(self, gained: set[str], lost: set[str]) -> None:
        """After a rebalance: stop tracking the commands of sites another instance now owns
        (it takes them over from the ledger), and take over the open commands of the sites
        this instance gained: pending ones are resent under their own ids, none is lost
        or duplicated."""
        if lost:
            async with self._lock:
                dropped = self.tracker.hand_over(lost)
                self.core.ownership_changed(lost)
            log.info("handed over %d commands of %d sites", dropped, len(lost))
        if not gained:
            return
        if self._pending_sites is not None:  # not started yet: start() takes them over
            self._pending_sites |= gained
            return
        await self._take_over(gained)

    async def _take_over(self, sites: set[str]) -> None:
        async with self._lock:
            await self._restore(sites)
            self.core.ownership_changed(sites)

    async def _restore(self, sites: set[str] | None = None) -> None:
        now = self.clock()
        moment = datetime.fromtimestamp(now, UTC)
        closed = await asyncio.to_thread(ledger.close_expired_while_down, self.db, moment, sites)
        if closed:
            EXPIRED_WHILE_DOWN.inc(len(closed))
            self._count(closed)
            log.warning(
                "closed %d commands whose validity ended while the engine was down", len(closed)
            )
        self.expired_while_down = len(closed)
        rows = await asyncio.to_thread(ledger.open_commands, self.db, moment, sites)
        if not rows:
            return
        eff = self.core.restore(rows, now)
        await self._carry_out(eff)
        log.info(
            "dispatch restored %d open commands from the ledger, resent %d",
            len(rows),
            len(eff.commands),
        )

    # -- inputs ----------------------------------------------------------------------------

    def _persist(self, rows: list[dict[str, Any]]) -> Future[None]:
        """Write dispatch-log rows on the writer thread (one transaction per call): the
        interval rows, or, sharing the fleet, this instance's parts and their sums."""
        if self.instance is None:
            future = self._writer.submit(dispatch_log.upsert_many, self.db, rows)
        else:
            future = self._writer.submit(dispatch_log.upsert_shared, self.db, self.instance, rows)
        future.add_done_callback(_log_write_failure)
        return future

    def _announce(self, targets: Sequence[GroupTarget], *, cancelled: bool = False) -> None:
        """Sharing the fleet: targets made here go out on the targets topic (next tick)."""
        if self.instance is not None:
            self._outbox.extend((t, cancelled) for t in targets)

    async def _flush_targets(self) -> None:
        if not self._outbox or self._producer is None:
            return
        out, self._outbox = self._outbox, []
        await self._producer.send_many(
            self.topics.targets.name,
            [(t.dispatch_id.encode(), encode_target(t, cancelled=c)) for t, c in out],
        )

    def _report_outranked(self, targets: Sequence[GroupTarget]) -> None:
        for standing, new in self.core.outranked(targets):
            log.warning(
                "the %s target for %s at %s replaces the %s target of %g kW there "
                "(%s outranks %s): %g kW",
                new.source,
                new.group,
                new.interval_start.isoformat(),
                standing.source,
                standing.target_kw,
                new.source,
                standing.source,
                new.target_kw,
            )

    def add_targets(self, targets: Sequence[GroupTarget]) -> list[GroupTarget]:
        """Schedule targets (persisted — on the writer thread — so a restarted engine still
        knows them). Call from the event loop."""
        self._report_outranked(targets)
        added, rows = self.core.add_targets(targets, self.clock())
        self._persist(rows)  # one transaction for a whole plan
        self._announce(added)
        return added

    async def add_targets_async(self, targets: Sequence[GroupTarget]) -> list[GroupTarget]:
        """:meth:`add_targets`, returning once the rows are in the database."""
        self._report_outranked(targets)
        added, rows = self.core.add_targets(targets, self.clock())
        await asyncio.wrap_future(self._persist(rows))
        self._announce(added)
        await self._flush_targets()
        return added

    def conflicts(self, targets: Sequence[GroupTarget]) -> list[GroupTarget]:
        return self.core.conflicts(targets)

    def replace_targets(self, targets: Sequence[GroupTarget]) -> list[GroupTarget]:
        """Add targets, replacing same-source ones (see :meth:`DispatchCore.replace_targets`)."""
        changed, rows = self.core.replace_targets(targets, self.clock())
        self._persist(rows)
        self._announce(changed)
        return changed

    async def replace_targets_async(self, targets: Sequence[GroupTarget]) -> list[GroupTarget]:
        """:meth:`replace_targets`, returning once the rows are in the database."""
        changed, rows = self.core.replace_targets(targets, self.clock())
        await asyncio.wrap_future(self._persist(rows))
        self._announce(changed)
        await self._flush_targets()
        return changed

    async def cancel_target(self, dispatch_id: str) -> None:
        """Cancel a target (see :meth:`DispatchCore.cancel`): ledger, release commands and
        the closed record, in that order."""
        async with self._lock:
            target = self.core.deliveries[dispatch_id].target
            await self._carry_out(self.core.cancel(dispatch_id, self.clock()))
            self._announce([target], cancelled=True)
            await self._flush_targets()

    async def override_targets(self, targets: Sequence[GroupTarget]) -> None:
        """Replace targets whatever their source (see :meth:`DispatchCore.override`)."""
        await asyncio.wrap_future(self._persist(self.core.override(targets, self.clock())))
        self._announce(targets)
        await self._flush_targets()

    async def _targets_loop(self) -> None:
        """Targets other instances made (and, harmlessly, this one's own, already known):
        new ones are scheduled, changed ones replace theirs, cancelled ones are cancelled;
        a record that does not decode goes to the dead-letter topic."""
        consumer = self._targets
        assert consumer is not None and self._dlq is not None
        while True:
            try:
                records = await consumer.getmany(max_records=5000, timeout_s=0.5)
                if not records:
                    continue
                good, refused = [], []
                for r in records:
                    if r.value is None:
                        continue  # a tombstone: compaction's, nothing to do
                    try:
                        rec = decode_target(r.value)
                    except ValueError as exc:
                        refused.append((r, "invalid", str(exc)))
                        continue
                    if r.key is not None and r.key != rec.dispatch_id.encode():
                        refused.append((r, "key_mismatch", f"key {r.key!r} is not the id"))
                        continue
                    good.append(rec)
                if refused:
                    await self._dlq.refuse(refused)
                    await self._dlq.flush()
                await self._apply_remote(good)
                await consumer.commit()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("targets batch failed; it is not committed")
                await asyncio.sleep(1.0)

    async def _apply_remote(self, records: Sequence[TargetRecord]) -> None:
        async with self._lock:
            now = self.clock()
            moment = datetime.fromtimestamp(now, UTC)
            rows: list[dict[str, Any]] = []
            for rec in records:
                t = rec.target()
                if t.interval_end <= moment:
                    continue
                self.targets_received += 1
                known = self.core.deliveries.get(t.dispatch_id)
                if rec.cancelled:
                    if known is not None:
                        await self._carry_out(self.core.cancel(t.dispatch_id, now))
                elif known is None:
                    rows += self.core.add_targets([t], now)[1]
                elif known.target != t:
                    rows += self.core.override([t], now)
            if rows:
                self._persist(rows)

    def _load_targets(self, now: float) -> None:
        rows, _ = dispatch_log.list_intervals(
            self.db, start_to=datetime.fromtimestamp(now, UTC) + TARGET_HORIZON, limit=10_000
        )
        moment = datetime.fromtimestamp(now, UTC)
        for r in rows:
            if r["status"] in ("scheduled", "active") and r["interval_end"] > moment:
                t = GroupTarget(
                    dispatch_id=r["dispatch_id"],
                    group=r["group_id"],
                    interval_start=r["interval_start"],
                    interval_end=r["interval_end"],
                    target_kw=r["target_kw"],
                    reserve_up_kw=r["reserve_up_kw"],
                    reserve_down_kw=r["reserve_down_kw"],
                    source=r["source"],
                )
                self.core.restore_target(t, int(r["redispatches"]))

    def on_awards(self, awards: Sequence[Award]) -> None:
        """Awards become targets — on the event loop, whatever thread reports them (the
        bidder collects awards in a worker thread; the core is not thread-safe)."""
        loop = self._loop
        if loop is not None and loop.is_running():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                loop.call_soon_threadsafe(self.on_awards, list(awards))
                return
        self.add_targets(from_awards(awards))

    def on_site_events(self, events: Sequence[SiteEvent]) -> None:
        self.core.on_site_events(events)

    # -- the loop --------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        await run_every(self.settings.tick_s, self.tick, log, "dispatch tick")

    async def tick(self, now: float | None = None) -> None:
        async with self._lock:
            now = self.clock() if now is None else now
            eff = self.core.tick(now)
            await self._carry_out(eff)
            await self._flush_targets()
            self._gauge()

    async def _carry_out(self, eff: Effects) -> None:
        """The ledger first, then the bus, then the dispatch log and the site events."""
        if eff.entries:
            await self._ledger.write(eff.entries)
            self._count(eff.entries)
        await self._publish(eff.commands)
        for row in eff.rows:
            if row.get("foreign"):
                continue  # another instance's site: its owner logs and counts it
            if row["status"] in ("active", "delivered", "short"):
                self._log_dispatch(row)
            if row["status"] in self.closed:
                self.closed[row["status"]] += 1
        if eff.rows:
            self._persist(eff.rows)
        self._record_events(eff.events)

    @staticmethod
    def _log_dispatch(row: dict[str, Any]) -> None:
        SHORTFALL.labels(row["group_id"]).set(row["shortfall_kw"])
        log.info(
            "dispatch %s %s: target %.1f kW, allocated %.1f kW, shortfall %.1f kW",
            row["dispatch_id"],
            row["status"],
            row["target_kw"],
            row["allocated_kw"],
            row["shortfall_kw"],
            extra=ctx(
                group_id=row["group_id"],
                dispatch_id=row["dispatch_id"],
                interval_start=row["interval_start"],
            ),
        )

    # -- acks ------------------------------------------------------------------------------

    async def _ack_loop(self) -> None:
        """Fetch, decode and apply acks; each batch's ledger write and commit follow in
        :meth:`_settle`, in batch order, while the next batch is already being fetched
        (commits name the batch's own offsets)."""
        consumer = self._consumer
        assert consumer is not None and self._dlq is not None
        settling: asyncio.Task[None] | None = None
        try:
            while True:
                try:
                    records = await consumer.getmany(max_records=50_000, timeout_s=0.2)
                    if not records:
                        continue
                    marks = consumer.positions()
                    acks, refused = self._decode(records)
                    if refused:
                        await self._dlq.refuse(refused)
                        await self._dlq.flush()
                    async with self._lock:
                        eff = self.core.on_acks(acks, self.clock())
                        written = self._ledger.submit(eff.entries)
                        await self._publish(eff.commands)
                        self._record_events(eff.events)
                    settling = asyncio.create_task(
                        self._settle(settling, written, eff.entries, marks, len(acks))
                    )
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("ack batch failed; it is not committed")
                    await asyncio.sleep(1.0)
        finally:
            if settling is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(settling, 30)

    async def _settle(
        self,
        previous: asyncio.Task[None] | None,
        written: asyncio.Future[None],
        entries: list[LedgerEntry],
        marks: dict[Any, int],
        n_acks: int,
    ) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous  # its failure was logged there; order is what matters here
        consumer = self._consumer
        assert consumer is not None
        try:
            await written
        except Exception:
            log.exception("writing an ack batch to the ledger failed; it is not committed")
            return
        self._count(entries)
        await consumer.commit(marks)
        self.acks_seen += n_acks

    def _decode(self, records: Sequence[Any]) -> tuple[list[Ack], list[tuple[Any, str, str]]]:
        values = [r.value for r in records]
        if None not in values:
            try:
                return decode_each(ack_decoder, values), []
            except msgspec.MsgspecError:
                pass
        good: list[Ack] = []
        bad: list[tuple[Any, str, str]] = []
        for r in records:
            if r.value is None:
                bad.append((r, "undecodable", "empty ack"))
                continue
            try:
                good.append(ack_decoder.decode(r.value))
            except msgspec.MsgspecError as exc:
                bad.append((r, "ack_invalid", str(exc)))
        return good, bad

    # -- effects ---------------------------------------------------------------------------

    @staticmethod
    def _count(entries: Sequence[LedgerEntry]) -> None:
        for event, n in Tally(e.event for e in entries).items():
            COMMANDS.labels(event).inc(n)

    def _record_events(self, events: Sequence[SiteEvent]) -> None:
        if not events:
            return
        for e in events:
            log.warning(
                "site %s: command %s -> %s",
                e.site_id,
                e.from_state,
                e.to_state,
                extra=ctx(site_id=e.site_id),
            )
        if self.db is not None:
            self._writer.submit(record_events, self.db, list(events)).add_done_callback(
                _log_write_failure
            )

    async def _publish(self, commands: Sequence[Command]) -> None:
        if not commands:
            return
        assert self._producer is not None
        await self._producer.send_many(
            self.topics.commands.name,
            [(c.site_id.encode(), command_encoder.encode(c)) for c in commands],
        )

    def _gauge(self) -> None:
        for state in CommandStatus:
            COMMAND_STATES.labels(state.value).set(self.tracker.counts[state])

    # -- reporting -------------------------------------------------------------------------

    def live(self) -> list[dict[str, Any]]:
        """The open intervals: target vs delivered so far."""
        return self.core.live(self.clock())

    def status(self) -> dict[str, Any]:
        active = [d for d in self.deliveries.values() if d.dispatched]
        counts = {state.value: n for state, n in self.tracker.counts.items() if n}
        parts = [
            f"{d.target.group} {round(d.target.target_kw)}→{round(d.delivered_kw or 0.0)} kW"
            for d in active
        ]
        shown = ", ".join(parts[:4]) + (f", +{len(parts) - 4} more" if len(parts) > 4 else "")
        line = (
            (shown or "no target now")
            + f"; {self.closed['delivered']} intervals delivered, {self.closed['short']} short"
            + "; commands "
            + (", ".join(f"{n} {state.replace('_', ' ')}" for state, n in counts.items()) or "none")
        )
        return {
            "line": line,
            "commands": counts,
            "targets": len(self.deliveries),
            "closed": dict(self.closed),
        }


def _log_write_failure(fut: Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("a dispatch write failed: %r", fut.exception())
