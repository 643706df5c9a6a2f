"""Dispatch: targets → split → commands on the bus → acks → retries, timeouts, re-dispatch.

Each tick (``tick_s``) the service

1. asks the tracker what is due: resends (same ``command_id``, next attempt) and timeouts
   (the site's twin becomes unresponsive; its share goes to the others);
2. dispatches every group whose target covers now and that has not been dispatched, or
   must be re-dispatched (a command timed out or was rejected, a site went stale or
   offline, or a site's telemetry shows it not following its acked setpoint);
3. samples delivery: the group's measured net power (its online sites' newest readings)
   against the target, and who follows their setpoint;
4. closes ended intervals into the dispatch log (target, delivered kW and kWh, shortfall,
   re-dispatches, per-site compliance).

Acks are consumed in batches on their own loop; the ledger rows every change produces are
written before the change is acted upon (publishing, re-dispatching), so a restarted
service rebuilds its tracker from the ledger and resends what was in flight under its own
ids. A dispatch sends a command to every eligible site of the group — a site left without
one would run its default behaviour inside a controlled group — except where the new
setpoint is within the deadband of the site's active command. Online sites that cannot be
steered (unresponsive, excluded, unavailable) still deliver what their telemetry shows;
the split covers the target minus that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import compress
from typing import Any

import msgspec
import numpy as np
from prometheus_client import Counter, Gauge

from market.clearing import Award
from vpp.bus import Bus, Consumer, Producer
from vpp.config import DispatchSettings, TopicsSettings
from vpp.dispatch.contract import (
    Ack,
    Command,
    ack_batch_decoder,
    ack_decoder,
    command_encoder,
    new_command_ids,
)
from vpp.dispatch.split import SplitInput, split
from vpp.dispatch.targets import GroupTarget, from_awards
from vpp.dispatch.tracker import Outcome, Tracker, TrackerSettings
from vpp.ingest.deadletter import DeadLetterWriter
from vpp.logs import ctx
from vpp.periodic import run_every
from vpp.store import dispatch_log, ledger
from vpp.store.ledger import LedgerEntry
from vpp.store.site_events import record_events
from vpp.twins.states import NAMES, CommandState, Connectivity, Operation, SiteEvent
from vpp.twins.store import FleetStore

log = logging.getLogger(__name__)

COMMANDS = Counter("vpp_commands_total", "Command ledger events", ["event"])
COMMAND_STATES = Gauge("vpp_commands_tracked", "Tracked commands by state", ["state"])
SHORTFALL = Gauge("vpp_dispatch_shortfall_kw", "Target the group cannot cover now", ["group"])


# The twin command state each ledger event leaves a site in (others: unchanged).
_EVENT_STATE = {
    "issued": int(CommandState.PENDING),
    "acked": int(CommandState.ACKED),
    "timeout": int(CommandState.UNRESPONSIVE),
}

# Targets are scheduled (and reloaded after a restart) at most this far ahead.
TARGET_HORIZON = timedelta(days=7)


@dataclass
class Delivery:
    target: GroupTarget
    allocated_kw: float = 0.0
    shortfall_kw: float = 0.0
    redispatches: int = -1  # the first dispatch is not a re-dispatch
    commands: int = 0
    samples: list[tuple[float, float]] = field(default_factory=list)  # (epoch, kW)
    compliance: float | None = None
    excluded: set[str] = field(default_factory=set)
    dispatched: bool = False
    # Setpoint of each site's live command of this delivery, by store row (NaN: none);
    # the deadband compares a re-dispatch against it.
    active_sp: np.ndarray = field(default_factory=lambda: np.full(0, np.nan))

    def active_at(self, rows: np.ndarray, n: int) -> np.ndarray:
        if self.active_sp.size < n:
            grown = np.full(max(n, 2 * self.active_sp.size), np.nan)
            grown[: self.active_sp.size] = self.active_sp
            self.active_sp = grown
        return self.active_sp[rows]

    @property
    def delivered_kw(self) -> float | None:
        return float(np.mean([kw for _, kw in self.samples])) if self.samples else None

    def delivered_kwh(self) -> float | None:
        if len(self.samples) < 2:
            return None
        t = np.array([s[0] for s in self.samples])
        kw = np.array([s[1] for s in self.samples])
        return float(np.sum(kw[:-1] * np.diff(t)) / 3600.0)

    def row(self, status: str) -> dict[str, Any]:
        t = self.target
        return {
            "dispatch_id": t.dispatch_id,
            "group_id": t.group,
            "interval_start": t.interval_start,
            "interval_end": t.interval_end,
            "source": t.source,
            "target_kw": t.target_kw,
            "reserve_up_kw": t.reserve_up_kw,
            "reserve_down_kw": t.reserve_down_kw,
            "allocated_kw": self.allocated_kw,
            "shortfall_kw": self.shortfall_kw,
            "delivered_kw": self.delivered_kw,
            "delivered_kwh": self.delivered_kwh(),
            "redispatches": max(0, self.redispatches),
            "status": status,
            "updated_at": datetime.now(UTC),
        }


class DispatchService:
    """A :class:`vpp.runtime.Component`."""

    name = "dispatch"

    def __init__(
        self,
        settings: DispatchSettings,
        bus: Bus,
        topics: TopicsSettings,
        *,
        db: Any,
        store: Callable[[], FleetStore],
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.topics = topics
        self.db = db
        self.store = store
        self.clock = clock
        self.tracker = Tracker(
            TrackerSettings(
                ack_timeout_s=settings.ack_timeout_s,
                max_attempts=settings.max_attempts,
                backoff_s=settings.backoff_s,
                jitter=settings.backoff_jitter,
                seed=seed,
            )
        )
        self.deliveries: dict[str, Delivery] = {}
        self._ledger = ledger.LedgerWriter(db)
        self._redispatch: set[str] = set()
        self._pinned: dict[str, float] = {}  # sites with their own target now -> its kW
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._dlq: DeadLetterWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        # One writer thread: a site's events reach the store in the order they happened
        # (the default pool could write "unresponsive -> acked" before its cause).
        self._events = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vpp-site-events")
        self.acks_seen = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._producer = await self.bus.producer()
        self._dlq = DeadLetterWriter(self._producer, self.topics.deadletter.name)
        self._consumer = await self.bus.consumer(
            [self.topics.acks.name], self.settings.consumer_group
        )
        await asyncio.to_thread(self._load_targets, self.clock())
        await self._restore()
        self._tasks = [
            asyncio.create_task(self._ack_loop(), name="dispatch acks"),
            asyncio.create_task(self._tick_loop(), name="dispatch ticks"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._ledger.stop()
        await asyncio.to_thread(self._events.shutdown, wait=True)  # drain pending events
        for closer in (self._consumer, self._producer):
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer.stop()

    async def _restore(self) -> None:
        now = self.clock()
        rows = await asyncio.to_thread(
            ledger.open_commands, self.db, datetime.fromtimestamp(now, UTC)
        )
        if not rows:
            return
        store = self.store()
        groups = {sid: store.groups[int(store.group[i])] for sid, i in store.index.items()}
        entries, resend = self.tracker.restore(rows, groups, now)
        await self._write(entries)
        self._reflect(self.tracker.live_entries(now))  # twins and deliveries know them again
        await self._publish(resend)
        log.info(
            "dispatch restored %d open commands from the ledger, resent %d", len(rows), len(resend)
        )

    # -- inputs ----------------------------------------------------------------------------

    def add_targets(self, targets: Sequence[GroupTarget]) -> list[GroupTarget]:
        """Schedule targets (persisted, so a restarted engine still knows them)."""
        added, rows = [], []
        for t in targets:
            if t.dispatch_id not in self.deliveries:
                d = self.deliveries[t.dispatch_id] = Delivery(t)
                rows.append(d.row("scheduled"))
                added.append(t)
        dispatch_log.upsert_many(self.db, rows)  # one transaction for a whole plan
        return added

    def conflicts(self, targets: Sequence[GroupTarget]) -> list[GroupTarget]:
        """Existing targets that ``targets`` would change but may not replace: a different
        target of another source (an award or a manual override outranks a re-plan)."""
        out = []
        for t in targets:
            d = self.deliveries.get(t.dispatch_id)
            if d is not None and d.target != t and d.target.source != t.source:
                out.append(d.target)
        return out

    def replace_targets(self, targets: Sequence[GroupTarget]) -> list[GroupTarget]:
        """Add targets, replacing same-source ones of the same node and interval (a re-plan).

        A replaced target that is under way is re-split at the next tick; its delivery
        samples and command count carry over, so the interval's record stays whole.
        Call :meth:`conflicts` first: a target of another source is never replaced.
        """
        new = [t for t in targets if t.dispatch_id not in self.deliveries]
        changed, rows = [], []
        for t in targets:
            d = self.deliveries.get(t.dispatch_id)
            if d is not None and d.target != t and d.target.source == t.source:
                d.target = t
                if d.dispatched:
                    self._redispatch.add(t.group)
                rows.append(d.row("active" if d.dispatched else "scheduled"))
                changed.append(t)
        dispatch_log.upsert_many(self.db, rows)
        return self.add_targets(new) + changed

    def _load_targets(self, now: float) -> None:
        rows, _ = dispatch_log.list_intervals(
            self.db, start_to=datetime.fromtimestamp(now, UTC) + TARGET_HORIZON, limit=10_000
        )
        moment = datetime.fromtimestamp(now, UTC)
        for r in rows:
            if r["status"] in ("scheduled", "active") and r["interval_end"] > moment:
                t = GroupTarget(
                    r["dispatch_id"],
                    r["group_id"],
                    r["interval_start"],
                    r["interval_end"],
                    r["target_kw"],
                    r["reserve_up_kw"],
                    r["reserve_down_kw"],
                    r["source"],
                )
                d = self.deliveries.setdefault(t.dispatch_id, Delivery(t))
                d.redispatches = max(d.redispatches, int(r["redispatches"]) - 1)

    def on_awards(self, awards: Sequence[Award]) -> None:
        self.add_targets(from_awards(awards))

    def on_site_events(self, events: Sequence[SiteEvent]) -> None:
        """A site lost (stale, offline, fault) re-dispatches its group."""
        if not events:
            return
        store = self.store()
        for e in events:
            lost = (e.family == "connectivity" and e.to_state in ("stale", "offline")) or (
                e.family == "operation" and e.to_state in ("fault", "unavailable")
            )
            i = store.index.get(e.site_id)
            if lost and i is not None:
                self._redispatch.add(store.groups[int(store.group[i])])

    # -- the loop --------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        await run_every(self.settings.tick_s, self.tick, log, "dispatch tick")

    async def tick(self, now: float | None = None) -> None:
        async with self._lock:
            now = self.clock() if now is None else now
            moment = datetime.fromtimestamp(now, UTC)
            # Timeouts first, so a site that just timed out is re-dispatched in this tick.
            entries, outcome = self.tracker.due(now)
            await self._write(entries)
            await self._apply(outcome)
            self._update_pinned(moment)
            for d in list(self.deliveries.values()):
                t = d.target
                if t.interval_end <= moment:
                    await self._close(d)
                elif t.covers(moment):
                    self._check_following(d, now)
                    if not d.dispatched or t.group in self._redispatch:
                        await self._dispatch(d, now)
            self._redispatch.clear()
            for d in self.deliveries.values():
                if d.target.covers(moment):
                    d.samples.append((now, self._measure(d.target.group)))
            self._gauge()

    def _update_pinned(self, moment: datetime) -> None:
        """Sites with a target of their own now (a peak-shaving schedule) leave their group's
        split: the site target wins, and the group counts that target as fixed power. A
        group re-splits when one of its sites gains, changes or loses its own target."""
        store = self.store()
        pinned = {
            d.target.group: d.target.target_kw
            for d in self.deliveries.values()
            if d.target.covers(moment)
            and d.target.group not in store.group_index
            and d.target.group in store.index
        }
        for site_id in pinned.keys() | self._pinned.keys():
            if pinned.get(site_id) != self._pinned.get(site_id):
                self._redispatch.add(store.groups[int(store.group[store.index[site_id]])])
        self._pinned = pinned

    def _rows(self, node: str) -> np.ndarray:
        """The store rows a target's node names: a group's sites, or one site (a per-site
        target such as a peak-shaving schedule). A group wins if a site has its name."""
        store = self.store()
        gid = store.group_index.get(node)
        if gid is None:
            i = store.index.get(node)
            if i is None or not (store.active[i] and store.owned[i]):
                return np.empty(0, dtype=np.int64)
            return np.array([i], dtype=np.int64)
        mask = (store.column("group") == gid) & store.column("active") & store.column("owned")
        return np.flatnonzero(mask)

    def _measure(self, group: str) -> float:
        store = self.store()
        rows = self._rows(group)
        online = store.column("conn")[rows] == Connectivity.ONLINE
        return float(store.column("p_kw")[rows][online].sum())

    def _check_following(self, d: Delivery, now: float) -> None:
        """Sites whose readings twice in a row disagree with their acked setpoint are dropped.

        Vectorized over the group. A reading counts once (only readings newer than the
        last one checked), and only from ``follow_grace_s`` after the command was issued.
        """
        store = self.store()
        rows = self._rows(d.target.group)
        ts = store.ts[rows]
        fresh = (
            ~np.isnan(store.setpoint_kw[rows])
            & (ts >= store.setpoint_from[rows])
            & (ts > store.follow_seen[rows])
        )
        r = rows[fresh]
        if not r.size:
            return
        rating = np.maximum(store.p_charge_max_kw[r], store.p_discharge_max_kw[r])
        off = np.abs(store.p_kw[r] - store.setpoint_kw[r]) > self.settings.follow_tolerance * rating
        store.strikes[r] = np.where(off, store.strikes[r] + 1, 0)
        store.follow_seen[r] = store.ts[r]
        for i in r[store.strikes[r] >= 2].tolist():
            site_id = store.ids[i]
            store.setpoint_kw[i] = np.nan  # checked no further in this interval
            t = self.tracker.active(site_id)
            if t is None or t.state != "acked" or t.command.dispatch_id != d.target.dispatch_id:
                continue
            if site_id not in d.excluded:
                d.excluded.add(site_id)
                self._redispatch.add(d.target.group)
                log.warning(
                    "site not following its setpoint; re-dispatching its share",
                    extra=ctx(site_id=site_id, dispatch_id=d.target.dispatch_id),
                )

    async def _dispatch(self, d: Delivery, now: float) -> None:
        t = d.target
        store = self.store()
        rows = self._rows(t.group)
        if not rows.size:
            d.dispatched = True
            d.shortfall_kw = t.target_kw
            return
        col = store.column
        pinned = self._pinned if t.group in store.group_index else {}
        excluded = np.isin(rows, store.rows_of([*d.excluded, *pinned]))
        op = col("op")[rows]
        eligible = (
            (col("conn")[rows] == Connectivity.ONLINE)
            & col("available")[rows]
            & (op != Operation.FAULT)
            & (op != Operation.UNAVAILABLE)
            & (col("cmd")[rows] != CommandState.UNRESPONSIVE)
            & ~excluded
        )
        inp = SplitInput(
            eligible=eligible,
            soc=np.nan_to_num(col("soc")[rows], nan=0.0),
            capacity_kwh=col("capacity_kwh")[rows],
            soc_min=col("soc_min")[rows],
            soc_max=col("soc_max")[rows],
            p_charge_max_kw=col("p_charge_max_kw")[rows],
            p_discharge_max_kw=col("p_discharge_max_kw")[rows],
            eff_charge=col("eff_charge")[rows],
            eff_discharge=col("eff_discharge")[rows],
        )
        # Online sites dispatch cannot steer (unresponsive, excluded, unavailable) still
        # deliver what their telemetry shows: the controllable sites make up the rest.
        # Sites on their own target count with that target instead.
        pinned_rows = store.rows_of(list(pinned))
        pinned_kw = np.fromiter(pinned.values(), np.float64, len(pinned))
        is_pinned = np.isin(rows, pinned_rows)
        uncontrolled = (col("conn")[rows] == Connectivity.ONLINE) & ~eligible & ~is_pinned
        fixed_kw = float(col("p_kw")[rows][uncontrolled].sum()) + float(
            pinned_kw[np.isin(pinned_rows, rows)].sum()
        )
        hours_left = max((t.interval_end.timestamp() - now) / 3600.0, 1e-6)
        result = split(
            inp,
            t.target_kw - fixed_kw,
            hours_left,
            reserve_up_kw=t.reserve_up_kw,
            reserve_down_kw=t.reserve_down_kw,
            resolution_kw=self.settings.resolution_kw,
        )
        sel = rows[eligible]
        setpoints = result.setpoint_kw[eligible]
        prev = d.active_at(sel, store.n)
        unchanged = np.abs(prev - setpoints) <= self.settings.deadband_kw  # False for NaN
        sel, setpoints = sel[~unchanged], setpoints[~unchanged]
        issued_at = datetime.fromtimestamp(now, UTC)
        ids = new_command_ids(sel.size, now)
        commands = [
            Command(
                1, cid, t.dispatch_id, store.ids[i], sp, issued_at, t.interval_end, 1, issued_at
            )
            for cid, i, sp in zip(ids, sel.tolist(), setpoints.tolist(), strict=True)
        ]
        entries = self.tracker.issue(commands, t.group, now)
        await self._write(entries)  # the ledger first ...
        await self._publish(commands)  # ... then the bus
        d.allocated_kw = result.allocated_kw + fixed_kw
        d.shortfall_kw = result.shortfall_kw
        d.redispatches += 1
        d.commands += len(commands)
        if not d.dispatched:
            await asyncio.to_thread(dispatch_log.upsert, self.db, d.row("active"))
        d.dispatched = True
        SHORTFALL.labels(t.group).set(result.shortfall_kw)
        log.info(
            "dispatch %s: target %.1f kW, allocated %.1f kW (+%.1f kW uncontrolled), "
            "shortfall %.1f kW, %d commands",
            t.dispatch_id,
            t.target_kw,
            result.allocated_kw,
            fixed_kw,
            result.shortfall_kw,
            len(commands),
            extra=ctx(group_id=t.group, dispatch_id=t.dispatch_id, interval_start=t.interval_start),
        )

    async def _close(self, d: Delivery) -> None:
        del self.deliveries[d.target.dispatch_id]
        store = self.store()
        followed = [
            self.tracker.commands[cid].state in ("acked", "completed")
            for sid in (store.ids[i] for i in self._rows(d.target.group).tolist())
            if (cid := self.tracker.latest.get(sid)) is not None
            and self.tracker.commands[cid].command.dispatch_id == d.target.dispatch_id
        ]
        d.compliance = float(np.mean(followed)) if followed else None
        status = "delivered" if d.shortfall_kw == 0 else "short"
        await asyncio.to_thread(dispatch_log.upsert, self.db, d.row(status))
        self.tracker.forget_before(self.clock() - 3600)

    # -- acks ------------------------------------------------------------------------------

    async def _ack_loop(self) -> None:
        """Fetch, decode and apply acks to the tracker; the ledger write, the twins and the
        commit of each batch follow in :meth:`_settle`, in batch order, while the next
        batch is already being fetched (commits name the batch's own offsets)."""
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
                        entries, outcome = self.tracker.on_acks(acks, self.clock())
                        written = self._ledger.submit(entries)
                    settling = asyncio.create_task(
                        self._settle(settling, written, entries, outcome, marks, len(acks))
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
        outcome: Outcome,
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
        for event, n in Tally(e.event for e in entries).items():
            COMMANDS.labels(event).inc(n)
        async with self._lock:
            self._reflect(entries)
            await self._apply(outcome)
        await consumer.commit(marks)
        self.acks_seen += n_acks

    def _decode(self, records: Sequence[Any]) -> tuple[list[Ack], list[tuple[Any, str, str]]]:
        values = [r.value for r in records]
        if None not in values:
            try:
                acks = ack_batch_decoder.decode(b"[" + b",".join(values) + b"]")
                if len(acks) == len(values):
                    return acks, []
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

    async def _write(self, entries: list[LedgerEntry]) -> None:
        """Append to the ledger, then reflect the changes in the twins (never the reverse)."""
        if not entries:
            return
        await self._ledger.write(entries)
        for event, n in Tally(e.event for e in entries).items():
            COMMANDS.labels(event).inc(n)
        self._reflect(entries)

    def _reflect(self, entries: Sequence[LedgerEntry]) -> None:
        """Command state, followed setpoint and each delivery's live setpoints, per site.

        One pass keeps each site's last entry about its newest command (a resend changes
        no state; an entry about a command the site has since been given a newer one for
        must not undo that), then the columns are updated with vector writes.
        """
        latest = self.tracker.latest
        keep: dict[str, LedgerEntry] = {}
        for e in entries:
            if e.event != "sent" and latest.get(e.site_id) == e.command_id:
                keep[e.site_id] = e
        if not keep:
            return
        store = self.store()
        last = list(keep.values())
        n = len(last)
        rows = store.rows_of(list(keep))
        known = rows >= 0
        code = np.fromiter((_EVENT_STATE.get(e.event, -1) for e in last), np.int8, n)
        setpoint = np.fromiter((e.setpoint_kw for e in last), np.float64, n)
        for state in (CommandState.PENDING, CommandState.ACKED, CommandState.UNRESPONSIVE):
            self._command_state(rows[known & (code == state)], state)
        acked = known & (code == CommandState.ACKED)
        epoch: dict[datetime, float] = {}  # a batch holds few distinct instants
        since = np.fromiter(
            (
                epoch.get(e.valid_from) or epoch.setdefault(e.valid_from, e.valid_from.timestamp())
                for e in compress(last, acked)
            ),
            np.float64,
            int(acked.sum()),
        )
        store.setpoint_kw[rows[known]] = np.nan
        store.setpoint_kw[rows[acked]] = setpoint[acked]
        store.setpoint_from[rows[acked]] = since + self.settings.follow_grace_s
        store.follow_seen[rows[acked]] = -np.inf
        store.strikes[rows[known]] = 0
        live = known & ((code == CommandState.PENDING) | (code == CommandState.ACKED))
        dispatches = [e.dispatch_id for e in last]
        for dispatch in set(dispatches):
            d = self.deliveries.get(dispatch)
            if d is None:
                continue
            mine = known & np.fromiter((x == dispatch for x in dispatches), bool, n)
            d.active_at(rows[mine], store.n)  # grows the array to the store's size
            d.active_sp[rows[mine]] = np.where(live[mine], setpoint[mine], np.nan)

    def _command_state(self, rows: np.ndarray, state: CommandState) -> None:
        """Set the twins' command state; going unresponsive and back are site events."""
        store = self.store()
        changed, old = store.set_command_state(rows, state)
        notable = (old == CommandState.UNRESPONSIVE) | (state == CommandState.UNRESPONSIVE)
        if not notable.any():
            return
        when = datetime.fromtimestamp(self.clock(), UTC)
        names = NAMES["command"]
        events = [
            SiteEvent(store.ids[i], when, "command", names[o], names[state])
            for i, o in zip(changed[notable].tolist(), old[notable].tolist(), strict=True)
        ]
        for e in events:
            log.warning(
                "site %s: command %s -> %s",
                e.site_id,
                e.from_state,
                e.to_state,
                extra=ctx(site_id=e.site_id),
            )
        if self.db is not None:
            task = asyncio.get_running_loop().run_in_executor(
                self._events, record_events, self.db, events
            )
            task.add_done_callback(_log_failure)

    async def _publish(self, commands: Sequence[Command]) -> None:
        if not commands:
            return
        assert self._producer is not None
        await self._producer.send_many(
            self.topics.commands.name,
            [(c.site_id.encode(), command_encoder.encode(c)) for c in commands],
        )

    async def _apply(self, outcome: Outcome) -> None:
        if outcome.resend:
            await self._publish(outcome.resend)
        if outcome.responsive:  # any answer ends unresponsiveness
            store = self.store()
            rows = store.rows_of(outcome.responsive)
            rows = rows[rows >= 0]
            back = rows[store.cmd[rows] == CommandState.UNRESPONSIVE]
            self._command_state(back, CommandState.ACKED)
        self._redispatch |= outcome.redispatch

    def _gauge(self) -> None:
        for state in (
            "pending",
            "acked",
            "completed",
            "rejected",
            "timed_out",
            "superseded",
            "expired",
        ):
            COMMAND_STATES.labels(state).set(self.tracker.counts[state])

    # -- reporting -------------------------------------------------------------------------

    def live(self) -> list[dict[str, Any]]:
        """The open intervals: target vs delivered so far."""
        return [d.row("active") for d in self.deliveries.values()]

    def status(self) -> dict[str, Any]:
        active = [d for d in self.deliveries.values() if d.dispatched]
        counts = {state: n for state, n in self.tracker.counts.items() if n}
        parts = [
            f"{d.target.group} {d.target.target_kw:.0f}→{(d.delivered_kw or 0):.0f} kW"
            for d in active
        ]
        shown = ", ".join(parts[:4]) + (f", +{len(parts) - 4} more" if len(parts) > 4 else "")
        line = (shown or "no target now") + f"; commands {counts}"
        return {"line": line, "commands": counts, "targets": len(self.deliveries)}


def _log_failure(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("writing site events failed: %r", fut.exception())
