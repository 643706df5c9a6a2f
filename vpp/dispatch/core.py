"""The dispatch core: targets → split → commands; acks → tracker; follow checks; delivery.

Synchronous and free of I/O. Every call takes the instant ``now`` (from the one injected
clock) and returns :class:`Effects` — ledger entries to append, commands to publish,
dispatch-log rows to upsert and site events to record. Two drivers run it: the engine's
:class:`vpp.dispatch.service.DispatchService` (bus, ledger writer, database) and the
backtest (:mod:`vpp.backtest.executor`: a simulated fleet on a simulated clock). A driver
appends ``entries`` before it publishes ``commands``, so no command leaves without its
ledger row and a restarted engine rebuilds the tracker from the ledger.

Each :meth:`DispatchCore.tick`:

1. asks the tracker what is due: resends (same ``command_id``, next attempt) and timeouts
   (the site's twin becomes unresponsive; its share goes to the others);
2. dispatches every target that covers now and has not been dispatched, or must be
   re-dispatched (a command timed out or was rejected, a site went stale or offline, or
   a site's telemetry shows it not following its acked setpoint);
3. samples delivery: the node's measured net power (its online sites' newest readings),
   from the moment every site could have reported after the interval began;
4. closes ended intervals (target, delivered kW and kWh, shortfall, re-dispatches,
   compliance). The closing shortfall is what a meter would count: the deviation of the
   interval's measured mean power from the target, ``|P_target − P̄_measured|``, either
   side (over-delivery and a moved fleet under a 0 kW award are deviations too), reported
   when it exceeds ``max(delivery_tolerance_kw, delivery_tolerance_share·|P_target|)`` and
   0 otherwise; an interval with nothing measured delivered nothing. While an interval
   runs, ``shortfall_kw`` is the split's unallocated part (what it expects to miss).

Targets name a group (an award, a manual target) or one site (a peak-shaving plan, an
operator's site target). A site with a target of its own is *committed* to it for that
interval: it leaves its group's split and its group's measured delivery (the group's bid
was sized without it), and it is commanded to its own setpoint. A group's sites that are
online but cannot be steered (unresponsive, not following, unavailable) still deliver what
their telemetry shows; the split covers the target minus that. A site that stops following
its own target is commanded again (there is no one else to take its share); a group's
site that stops following is dropped from the split for the rest of the interval.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import compress
from typing import Any

import numpy as np
import numpy.typing as npt

from market.clearing import Award
from vpp.config import DispatchSettings
from vpp.dispatch.contract import Ack, Command, new_command_ids
from vpp.dispatch.delivery import Delivery
from vpp.dispatch.follow import FollowState
from vpp.dispatch.split import SplitInput, split
from vpp.dispatch.targets import GroupTarget, from_awards
from vpp.dispatch.tracker import Outcome, Tracker, TrackerSettings
from vpp.store.ledger import CommandStatus, LedgerEntry, LedgerEvent
from vpp.twins.states import NAMES, CommandState, Connectivity, Operation, SiteEvent
from vpp.twins.store import FleetStore

I64 = npt.NDArray[np.int64]
_LIVE = (CommandStatus.PENDING, CommandStatus.ACKED)  # a command that still holds its site

# The twin command state each ledger event leaves a site in (others: unchanged).
_EVENT_STATE = {
    LedgerEvent.ISSUED: int(CommandState.PENDING),
    LedgerEvent.ACKED: int(CommandState.ACKED),
    LedgerEvent.TIMEOUT: int(CommandState.UNRESPONSIVE),
}


# Which source's target holds a node's interval when two ask for it (higher wins).
PRECEDENCE = {"award": 2, "manual": 1, "peak_shaving": 0}


def _outranks(new: GroupTarget, standing: GroupTarget) -> bool:
    return new.source != standing.source and PRECEDENCE.get(new.source, 0) > PRECEDENCE.get(
        standing.source, 0
    )


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


@dataclass
class Effects:
    """What a core call asks its driver to do, in this order."""

    entries: list[LedgerEntry] = field(default_factory=list)  # append to the ledger first
    commands: list[Command] = field(default_factory=list)  # then publish
    rows: list[dict[str, Any]] = field(default_factory=list)  # dispatch-log upserts
    events: list[SiteEvent] = field(default_factory=list)  # site events to record

    def __bool__(self) -> bool:
        return bool(self.entries or self.commands or self.rows or self.events)


class DispatchCore:
    def __init__(
        self,
        settings: DispatchSettings,
        store: Callable[[], FleetStore],
        *,
        seed: int | None = None,
        share: Callable[[GroupTarget], tuple[float, float] | None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        # With other instances sharing the fleet: this instance's (base share, share) of a
        # group target (vpp.dispatch.shares); None, or a None answer: the whole target.
        self.share = share
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
        self.follow = FollowState()
        self.ledger_events: Counter[str] = Counter()  # every ledger event so far, by kind
        self._redispatch: set[str] = set()
        # sites out of every group's split now -> their own target's kW (None: committed
        # elsewhere with no target of their own this interval)
        self._pinned: dict[str, float | None] = {}
        # Sites committed elsewhere (peak shaving: set by the wiring and the backtest): never
        # in a group's split, also between their own targets — a market award must not
        # move a battery its site counts on.
        self.committed_sites: Callable[[], Iterable[str]] = tuple
        # when each site (by store row) last became unresponsive (NaN: it is not)
        self._unresponsive_since = np.full(0, np.nan)

    # -- targets ---------------------------------------------------------------------------

    def add_targets(
        self, targets: Sequence[GroupTarget], now: float
    ) -> tuple[list[GroupTarget], list[dict[str, Any]]]:
        """Schedule targets not known yet; the added ones and their rows to persist.

        A node's interval has one target, and one id (:func:`dispatch_id`). Where one is
        already there from a source the new one outranks (:data:`PRECEDENCE`: an award is
        owed to the market, an operator's target outranks a site's own plan), the new one
        takes its place, as :meth:`override` does; an award arriving for an interval an
        operator had set by hand used to be dropped as "known already". What a new target
        replaces is in :meth:`outranked` (call it first to report it)."""
        added, rows = [], []
        moment = _utc(now)
        for t in targets:
            d = self.deliveries.get(t.dispatch_id)
            if d is None:
                d = self.deliveries[t.dispatch_id] = Delivery(t)
            elif _outranks(t, d.target):
                d.target = t
                if d.dispatched:
                    self._redispatch.add(t.group)
            else:
                continue
            rows.append(d.row(d.status(moment), now))
            added.append(t)
        return added, rows

    def outranked(self, targets: Sequence[GroupTarget]) -> list[tuple[GroupTarget, GroupTarget]]:
        """``(standing, new)`` for each standing target :meth:`add_targets` would replace."""
        out = []
        for t in targets:
            d = self.deliveries.get(t.dispatch_id)
            if d is not None and _outranks(t, d.target):
                out.append((d.target, t))
        return out

    def conflicts(self, targets: Sequence[GroupTarget]) -> list[GroupTarget]:
        """Existing targets that ``targets`` would change but may not replace: a different
        target of another source (an award or a manual override outranks a re-plan)."""
        out = []
        for t in targets:
            d = self.deliveries.get(t.dispatch_id)
            if d is not None and d.target != t and d.target.source != t.source:
                out.append(d.target)
        return out

    def replace_targets(
        self, targets: Sequence[GroupTarget], now: float
    ) -> tuple[list[GroupTarget], list[dict[str, Any]]]:
        """Add targets, replacing same-source ones of the same node and interval (a re-plan).

        A replaced target that is under way is re-split at the next tick; its delivery
        samples and command count carry over, so the interval's record stays whole.
        Call :meth:`conflicts` first: a target of another source is never replaced.
        """
        moment = _utc(now)
        new = [t for t in targets if t.dispatch_id not in self.deliveries]
        changed, rows = [], []
        for t in targets:
            d = self.deliveries.get(t.dispatch_id)
            if d is not None and d.target != t and d.target.source == t.source:
                d.target = t
                if d.dispatched:
                    self._redispatch.add(t.group)
                rows.append(d.row(d.status(moment), now))
                changed.append(t)
        added, added_rows = self.add_targets(new, now)
        return added + changed, rows + added_rows

    def override(self, targets: Sequence[GroupTarget], now: float) -> list[dict[str, Any]]:
        """Replace targets whatever their source (an operator's site target over the site's
        peak-shaving plan); a replaced target under way is re-split at the next tick."""
        rows = []
        moment = _utc(now)
        for t in targets:
            d = self.deliveries.get(t.dispatch_id)
            if d is None:
                rows += self.add_targets([t], now)[1]
                continue
            d.target = t
            if d.dispatched:
                self._redispatch.add(t.group)
            rows.append(d.row(d.status(moment), now))
        return rows

    def cancel(self, dispatch_id: str, now: float) -> Effects:
        """Drop a target. If it is under way, the sites still holding its commands get a
        release (0 kW, for as long as an ack takes) that supersedes them; its record closes
        as ``cancelled`` with what was delivered so far."""
        d = self.deliveries.pop(dispatch_id)
        eff = Effects()
        t = d.target
        if d.dispatched and t.covers(_utc(now)):
            store = self.store()
            s = self.settings
            until = _utc(now + s.ack_timeout_s * s.max_attempts + 1.0)
            issued_at = _utc(now)
            holders = [
                site
                for site in (store.ids[i] for i in self._rows(t.group).tolist())
                if (live := self.tracker.active(site)) is not None
                and live.command.dispatch_id == dispatch_id
            ]
            release = [
                Command(
                    v=1,
                    command_id=cid,
                    dispatch_id=f"{dispatch_id}:cancelled",
                    site_id=site,
                    setpoint_kw=0.0,
                    valid_from=issued_at,
                    valid_until=until,
                    attempt=1,
                    issued_at=issued_at,
                )
                for cid, site in zip(new_command_ids(len(holders), now), holders, strict=True)
            ]
            self._record(eff, self.tracker.issue(release, t.group, now), now)
            eff.commands.extend(release)
        eff.rows.append(d.row("cancelled", now))
        self._redispatch.add(t.group)
        return eff

    def restore_target(self, t: GroupTarget, redispatches: int) -> None:
        """A target read back from the dispatch log after a restart."""
        d = self.deliveries.setdefault(t.dispatch_id, Delivery(t))
        d.redispatches = max(d.redispatches, redispatches - 1)

    def on_awards(self, awards: Sequence[Award], now: float) -> list[dict[str, Any]]:
        return self.add_targets(from_awards(awards), now)[1]

    def on_site_events(self, events: Sequence[SiteEvent]) -> None:
        """A site lost (stale, offline, fault) re-dispatches its group (or its own target);
        an unresponsive site that reconnects may be commanded again at once."""
        if not events:
            return
        store = self.store()
        for e in events:
            lost = (e.family == "connectivity" and e.to_state in ("stale", "offline")) or (
                e.family == "operation" and e.to_state in ("fault", "unavailable")
            )
            i = store.index.get(e.site_id)
            if i is None:
                continue
            if lost:
                self._redispatch.add(store.groups[int(store.group[i])])
                self._redispatch.add(e.site_id)
            elif (
                e.family == "connectivity"
                and e.to_state == "online"
                and e.from_state in ("stale", "offline")
                and i < self._unresponsive_since.size
                and not np.isnan(self._unresponsive_since[i])
            ):
                self._unresponsive_since[i] = -np.inf  # eligible again: probe it

    def _responsive(self, rows: I64, now: float) -> npt.NDArray[np.bool_]:
        """Sites dispatch may command: not unresponsive, or unresponsive for longer than
        ``unresponsive_retry_s`` or since before they reconnected (a probe: an answer brings
        them back, silence times out again)."""
        store = self.store()
        unresponsive = store.column("cmd")[rows] == CommandState.UNRESPONSIVE
        if not unresponsive.any():
            return ~unresponsive
        since = np.full(rows.size, np.nan)
        known = rows < self._unresponsive_since.size
        since[known] = self._unresponsive_since[rows[known]]
        due = ~(now - since < self.settings.unresponsive_retry_s)  # NaN (unknown) counts as due
        return ~unresponsive | due

    # -- the tick --------------------------------------------------------------------------

    def tick(self, now: float) -> Effects:
        eff = Effects()
        moment = _utc(now)
        # Timeouts first, so a site that just timed out is re-dispatched in this tick.
        entries, outcome = self.tracker.due(now)
        self._record(eff, entries, now)
        self._apply(eff, outcome, now)
        self._update_pinned(moment)
        for d in list(self.deliveries.values()):
            t = d.target
            if t.interval_end <= moment:
                self._close(eff, d, now)
            elif t.covers(moment):
                self._check_following(d)
                if not d.dispatched or t.group in self._redispatch or self._reshared(d):
                    self._dispatch(eff, d, now)
        self._redispatch.clear()
        for d in self.deliveries.values():
            if d.target.covers(moment) and now >= self._measured_from(d):
                d.samples.append((now, self._measure(d.target.group)))
        return eff

    def _wanted(self, t: GroupTarget) -> tuple[float, float | None]:
        """The kW this instance is to cover of a target, and its base share (None: the
        whole target is this instance's)."""
        got = self.share(t) if self.share is not None else None
        if got is None:
            return t.target_kw, None
        base, share = got
        return share, base

    def _reshared(self, d: Delivery) -> bool:
        """Whether this instance's share of a delivery under way moved (another instance
        reported a shortfall, joined or went stale) by more than the deadband."""
        if self.share is None or not d.dispatched:
            return False
        want, _ = self._wanted(d.target)
        return abs(want - d.share_kw) > self.settings.deadband_kw

    def shortfalls(self) -> dict[str, dict[str, float]]:
        """Per group, what this instance cannot allocate of its base share of each target
        under way (signed like the target): reported with its partials, for the other
        instances to take over."""
        out: dict[str, dict[str, float]] = {}
        for d in self.deliveries.values():
            if d.base_kw is None or not d.dispatched:
                continue
            sign = -1.0 if d.base_kw < 0 else 1.0
            missing = abs(d.base_kw) - sign * d.allocated_kw
            if missing > self.settings.deadband_kw:
                out.setdefault(d.target.group, {})[d.target.dispatch_id] = sign * missing
        return out

    def _measured_from(self, d: Delivery) -> float:
        """When an interval's delivery starts being measured: once every site of the node
        could have reported after the interval began (its reporting interval, at most half
        the interval) — earlier readings describe the power before the commands."""
        store = self.store()
        rows = self._rows(d.target.group)
        t = d.target
        length = t.interval_end.timestamp() - t.interval_start.timestamp()
        lag = float(store.interval_s[rows].max()) if rows.size else 0.0
        return t.interval_start.timestamp() + min(lag, 0.5 * length)

    def on_acks(self, acks: Iterable[Ack], now: float) -> Effects:
        eff = Effects()
        entries, outcome = self.tracker.on_acks(acks, now)
        self._record(eff, entries, now)
        self._apply(eff, outcome, now)
        return eff

    def restore(self, rows: Iterable[tuple[LedgerEntry, LedgerEntry]], now: float) -> Effects:
        """Rebuild the tracker from the ledger's open commands; pending ones are resent."""
        eff = Effects()
        store = self.store()
        groups = {sid: store.groups[int(store.group[i])] for sid, i in store.index.items()}
        entries, resend = self.tracker.restore(rows, groups, now)
        # The deliveries know their live setpoints again: a re-split that keeps a site's
        # setpoint sends nothing new (the restored command stands, under its own id).
        for cid in {issued.command_id for issued, _ in rows}:
            t = self.tracker.commands.get(cid)
            d = self.deliveries.get(t.command.dispatch_id) if t is not None else None
            i = store.index.get(t.command.site_id) if t is not None else None
            if t is not None and d is not None and i is not None and t.state in _LIVE:
                d.active_at(np.array([i]), store.n)
                d.active_sp[i] = t.command.setpoint_kw
        self._record(eff, entries, now)
        self._reflect(self.tracker.live_entries(now), now, eff)  # twins know them again
        eff.commands.extend(resend)
        return eff

    def ownership_changed(self, sites: set[str]) -> None:
        """Sites moved between instances: their groups re-split at the next tick, and a
        site's own target is dispatched again by whichever instance owns the site now."""
        store = self.store()
        for d in self.deliveries.values():
            node = d.target.group
            if node in sites:
                d.dispatched = d.foreign = False
        for site in sites:
            i = store.index.get(site)
            if i is not None:
                self._redispatch.add(store.groups[int(store.group[i])])

    def pinned_sites(self) -> list[str]:
        """Sites on a target of their own in the current interval (committed to it)."""
        return list(self._pinned)

    def next_due(self) -> float | None:
        """The next instant the tracker has something to do (a deadline or an expiry)."""
        return self.tracker.next_due()

    # -- nodes -----------------------------------------------------------------------------

    def _update_pinned(self, moment: datetime) -> None:
        """Sites with a target of their own now, and sites committed elsewhere, leave their
        group's split; a group re-splits when one of its sites gains, changes or loses its
        own target or its commitment."""
        store = self.store()
        pinned: dict[str, float | None] = {
            s: None
            for s in self.committed_sites()
            if s in store.index and s not in store.group_index
        }
        pinned.update(
            {
                d.target.group: d.target.target_kw
                for d in self.deliveries.values()
                if d.target.covers(moment)
                and d.target.group not in store.group_index
                and d.target.group in store.index
            }
        )
        for site_id in pinned.keys() | self._pinned.keys():
            if pinned.get(site_id) != self._pinned.get(site_id):
                self._redispatch.add(store.groups[int(store.group[store.index[site_id]])])
        self._pinned = pinned

    def _rows(self, node: str) -> I64:
        """The store rows a target's node names: a group's sites not committed to a target
        of their own, or one site. A group wins if a site has its name."""
        store = self.store()
        gid = store.group_index.get(node)
        if gid is None:
            i = store.index.get(node)
            if i is None or not (store.active[i] and store.owned[i]):
                return np.empty(0, dtype=np.int64)
            return np.array([i], dtype=np.int64)
        mask = (store.column("group") == gid) & store.column("active") & store.column("owned")
        rows = np.flatnonzero(mask)
        if self._pinned:
            rows = rows[~np.isin(rows, store.rows_of(list(self._pinned)))]
        return rows

    def _owns(self, site: str) -> bool:
        store = self.store()
        i = store.index.get(site)
        return i is not None and bool(store.owned[i])

    def _is_site(self, node: str) -> bool:
        store = self.store()
        return node not in store.group_index and node in store.index

    def _metered_shortfall(self, d: Delivery) -> float:
        """``|want − measured mean|`` beyond the tolerance (module docstring), else 0."""
        want = d.share_kw if d.dispatched else d.target.target_kw
        measured = d.delivered_kw
        deviation = abs(want - (measured if measured is not None else 0.0))
        s = self.settings
        tolerance = max(s.delivery_tolerance_kw, s.delivery_tolerance_share * abs(want))
        return float(deviation) if deviation > tolerance else 0.0

    def _measure(self, node: str) -> float:
        store = self.store()
        rows = self._rows(node)
        online = store.column("conn")[rows] == Connectivity.ONLINE
        return float(store.column("p_kw")[rows][online].sum())

    def _check_following(self, d: Delivery) -> None:
        """Readings that twice in a row disagree with an acked setpoint of this delivery:
        a group drops the site from its split; a site's own target commands it again."""
        store = self.store()
        rows = self._rows(d.target.group)
        for i in self.follow.check(store, rows, self.settings.follow_tolerance).tolist():
            site_id = store.ids[i]
            t = self.tracker.active(site_id)
            if (
                t is None
                or t.state != CommandStatus.ACKED
                or t.command.dispatch_id != d.target.dispatch_id
            ):
                continue
            if self._is_site(d.target.group):
                d.active_at(np.array([i]), store.n)
                d.active_sp[i] = np.nan  # the deadband must not hold the command back
                self._redispatch.add(d.target.group)
            elif site_id not in d.excluded:
                d.excluded.add(site_id)
                self._redispatch.add(d.target.group)

    def _dispatch(self, eff: Effects, d: Delivery, now: float) -> None:
        t = d.target
        store = self.store()
        rows = self._rows(t.group)
        want_kw, d.base_kw = self._wanted(t)
        d.share_kw = want_kw
        if not rows.size:
            d.dispatched = True
            d.allocated_kw = 0.0
            # Sharing the fleet, a site target for a site this instance does not own is
            # the owner's to deliver: nothing of it is this instance's, not even a shortfall.
            d.foreign = (
                self.share is not None and self._is_site(t.group) and not self._owns(t.group)
            )
            d.shortfall_kw = 0.0 if d.foreign else want_kw
            return
        col = store.column
        excluded = (
            np.isin(rows, store.rows_of(list(d.excluded)))
            if d.excluded
            else np.zeros(rows.size, dtype=bool)
        )
        op = col("op")[rows]
        online = col("conn")[rows] == Connectivity.ONLINE
        eligible = (
            online
            & col("available")[rows]
            & (op != Operation.FAULT)
            & (op != Operation.UNAVAILABLE)
            & self._responsive(rows, now)
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
        # Online sites dispatch cannot steer still deliver what their telemetry shows: the
        # controllable sites make up the rest.
        fixed_kw = float(col("p_kw")[rows][online & ~eligible].sum())
        hours_left = max((t.interval_end.timestamp() - now) / 3600.0, 1e-6)
        # A share carries the same fraction of the reserves as of the power. A reserve-only
        # target (0 kW) needs no fraction: the split holds every site it covers at 0 kW
        # whatever the reserve (a reserve only limits the power a non-zero target may take),
        # so each instance holds its own sites of the group and together they hold the
        # group's whole headroom.
        frac = want_kw / t.target_kw if t.target_kw else 1.0
        result = split(
            inp,
            want_kw - fixed_kw,
            hours_left,
            reserve_up_kw=t.reserve_up_kw * frac,
            reserve_down_kw=t.reserve_down_kw * frac,
            resolution_kw=self.settings.resolution_kw,
        )
        sel = rows[eligible]
        setpoints = result.setpoint_kw[eligible]
        prev = d.active_at(sel, store.n)
        unchanged = np.abs(prev - setpoints) <= self.settings.deadband_kw  # False for NaN
        sel, setpoints = sel[~unchanged], setpoints[~unchanged]
        issued_at = _utc(now)
        ids = new_command_ids(sel.size, now)
        commands = [
            Command(
                v=1,
                command_id=cid,
                dispatch_id=t.dispatch_id,
                site_id=store.ids[i],
                setpoint_kw=sp,
                valid_from=issued_at,
                valid_until=t.interval_end,
                attempt=1,
                issued_at=issued_at,
            )
            for cid, i, sp in zip(ids, sel.tolist(), setpoints.tolist(), strict=True)
        ]
        self._record(eff, self.tracker.issue(commands, t.group, now), now)
        eff.commands.extend(commands)
        d.allocated_kw = result.allocated_kw + fixed_kw
        d.shortfall_kw = result.shortfall_kw
        d.redispatches += 1
        d.commands += len(commands)
        if not d.dispatched:
            d.dispatched = True
            eff.rows.append(d.row("active", now))

    def _close(self, eff: Effects, d: Delivery, now: float) -> None:
        del self.deliveries[d.target.dispatch_id]
        store = self.store()
        followed = [
            self.tracker.commands[cid].state in (CommandStatus.ACKED, CommandStatus.COMPLETED)
            for sid in (store.ids[i] for i in self._rows(d.target.group).tolist())
            if (cid := self.tracker.latest.get(sid)) is not None
            and self.tracker.commands[cid].command.dispatch_id == d.target.dispatch_id
        ]
        d.compliance = float(np.mean(followed)) if followed else None
        d.shortfall_kw = 0.0 if d.foreign else self._metered_shortfall(d)
        eff.rows.append(d.row("delivered" if d.shortfall_kw == 0 else "short", now))
        self.tracker.forget_before(now - 3600)

    # -- effects ---------------------------------------------------------------------------

    def _record(self, eff: Effects, entries: list[LedgerEntry], now: float) -> None:
        """Entries for the ledger; their effect on the twins and follow state right away
        (the driver writes the ledger before anything leaves the engine)."""
        if not entries:
            return
        eff.entries.extend(entries)
        for e in entries:
            self.ledger_events[e.event] += 1
        self._reflect(entries, now, eff)

    def _reflect(self, entries: Sequence[LedgerEntry], now: float, eff: Effects) -> None:
        """Command state, followed setpoint and each delivery's live setpoints, per site.

        One pass keeps each site's last entry about its newest command (a resend changes
        no state; an entry about a command the site has since been given a newer one for
        must not undo that), then the columns are updated with vector writes.
        """
        latest = self.tracker.latest
        keep: dict[str, LedgerEntry] = {}
        for e in entries:
            if e.event != LedgerEvent.SENT and latest.get(e.site_id) == e.command_id:
                keep[e.site_id] = e
        if not keep:
            return
        store = self.store()
        self.follow.grow(store.n)
        last = list(keep.values())
        n = len(last)
        rows = store.rows_of(list(keep))
        known = rows >= 0
        code = np.fromiter((_EVENT_STATE.get(e.event, -1) for e in last), np.int8, n)
        setpoint = np.fromiter((e.setpoint_kw for e in last), np.float64, n)
        for state in (CommandState.PENDING, CommandState.ACKED, CommandState.UNRESPONSIVE):
            self._command_state(rows[known & (code == state)], state, now, eff)
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
        self.follow.forget(rows[known])
        self.follow.expect(rows[acked], setpoint[acked], since + self.settings.follow_grace_s)
        live = known & ((code == CommandState.PENDING) | (code == CommandState.ACKED))
        dispatches = [e.dispatch_id for e in last]
        for dispatch in set(dispatches):
            d = self.deliveries.get(dispatch)
            if d is None:
                continue
            mine = known & np.fromiter((x == dispatch for x in dispatches), bool, n)
            d.active_at(rows[mine], store.n)  # grows the array to the store's size
            d.active_sp[rows[mine]] = np.where(live[mine], setpoint[mine], np.nan)

    def _command_state(self, rows: I64, state: CommandState, now: float, eff: Effects) -> None:
        """Set the twins' command state; going unresponsive and back are site events."""
        store = self.store()
        changed, old = store.set_command_state(rows, state)
        if self._unresponsive_since.size < store.n:
            grown = np.full(max(store.n, 2 * self._unresponsive_since.size), np.nan)
            grown[: self._unresponsive_since.size] = self._unresponsive_since
            self._unresponsive_since = grown
        if state == CommandState.UNRESPONSIVE:  # a failed probe restarts the wait too
            valid = rows[(rows >= 0) & (rows < store.n)]
            self._unresponsive_since[valid] = now
        else:
            self._unresponsive_since[changed] = np.nan
        notable = (old == CommandState.UNRESPONSIVE) | (state == CommandState.UNRESPONSIVE)
        if not notable.any():
            return
        when = _utc(now)
        names = NAMES["command"]
        eff.events.extend(
            SiteEvent(store.ids[i], when, "command", names[o], names[state])
            for i, o in zip(changed[notable].tolist(), old[notable].tolist(), strict=True)
        )

    def _apply(self, eff: Effects, outcome: Outcome, now: float) -> None:
        eff.commands.extend(outcome.resend)
        if outcome.responsive:  # any answer ends unresponsiveness
            store = self.store()
            rows = store.rows_of(outcome.responsive)
            rows = rows[rows >= 0]
            back = rows[store.cmd[rows] == CommandState.UNRESPONSIVE]
            self._command_state(back, CommandState.ACKED, now, eff)
        self._redispatch |= outcome.redispatch

    # -- reporting -------------------------------------------------------------------------

    def live(self, now: float) -> list[dict[str, Any]]:
        """The open intervals: target vs delivered so far (``scheduled`` or ``active``)."""
        moment = _utc(now)
        # a copy first: the API reads this from its own thread while the control loop
        # adds and closes deliveries (a dict changing size under a loop over it raises)
        return [d.row(d.status(moment), now) for d in list(self.deliveries.values())]
