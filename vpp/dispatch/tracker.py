"""Command tracking: every command is pending until acked; retries, timeouts, supersession.

States of a command::

    pending ──ack accepted──▶ acked ──ack completed──▶ completed
       │  ╲                     │
       │   ╲──ack rejected──▶ rejected          (the site's share is re-dispatched)
       │
       ├─ no ack by its deadline ─▶ resend, same command_id, attempt + 1, after an
       │                            exponential backoff with jitter — while the interval lasts
       ├─ attempts exhausted ─────▶ timed_out     (site → unresponsive, share re-dispatched)
       ├─ newer command for the site ─▶ superseded
       └─ validity over, unanswered ──▶ expired

Acks are idempotent: a duplicate, or a late ack for a superseded or expired command,
changes no command (but any ack proves the site is answering again). Every change is
returned as ledger entries for the caller to write *before* acting on it.

:meth:`Tracker.due` runs every tick, so it touches only what is due: pending deadlines and
validity ends sit in two heaps (entries made stale by an ack or a resend are skipped when
they surface), making a tick O(due · log n) instead of a pass over every command — a
dispatch of 10^5 sites otherwise spends its ticks re-reading 10^5 settled commands.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from msgspec.structs import replace

from vpp.dispatch.contract import Ack, Command
from vpp.store.ledger import TERMINAL, CommandStatus, LedgerEntry, LedgerEvent


@dataclass(frozen=True, slots=True)
class TrackerSettings:
    ack_timeout_s: float = 3.0
    max_attempts: int = 3
    backoff_s: float = 0.5
    backoff_factor: float = 2.0
    jitter: float = 0.2
    seed: int | None = None


@dataclass(slots=True)
class Tracked:
    command: Command  # content as issued; ``attempt`` is the last one sent
    group: str
    state: CommandStatus
    deadline: float  # epoch s: resend or give up when no ack by then
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the caller must do after a change: resend, mark unresponsive, re-dispatch."""

    resend: list[Command]
    unresponsive: list[str]  # site ids
    responsive: list[str]  # site ids that answered (leave unresponsive)
    redispatch: set[str]  # groups


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _ledger_entry(
    c: Command, event: LedgerEvent, state: CommandStatus, at: datetime, reason: str | None = None
) -> LedgerEntry:
    return LedgerEntry(
        command_id=c.command_id,
        dispatch_id=c.dispatch_id,
        site_id=c.site_id,
        event=event,
        state=state,
        attempt=c.attempt,
        setpoint_kw=c.setpoint_kw,
        valid_from=c.valid_from,
        valid_until=c.valid_until,
        ts=at,
        reason=reason,
    )


class Tracker:
    def __init__(self, settings: TrackerSettings | None = None) -> None:
        self.settings = settings or TrackerSettings()
        self.rng = random.Random(self.settings.seed)
        self.commands: dict[str, Tracked] = {}
        self.latest: dict[str, str] = {}  # site -> newest command id
        self.counts: Counter[CommandStatus] = Counter()  # commands by state (for the gauges)
        # Heaps of (when, tiebreak, command ids): ack deadlines of pending commands and
        # validity ends; one entry per batch that shares the instant.
        self._deadlines: list[tuple[float, int, list[str]]] = []
        self._expiries: list[tuple[float, int, list[str]]] = []
        self._tiebreak = itertools.count()

    # -- helpers ---------------------------------------------------------------------------

    def _entry(
        self, t: Tracked, event: LedgerEvent, at: datetime, reason: str | None = None
    ) -> LedgerEntry:
        return _ledger_entry(t.command, event, t.state, at, reason)

    def _move(self, t: Tracked, state: CommandStatus) -> None:
        self.counts[t.state] -= 1
        self.counts[state] += 1
        t.state = state

    def _track(self, tracked: list[Tracked]) -> None:
        """Add commands (replacing any with the same id) and schedule their deadlines."""
        commands, counts = self.commands, self.counts
        deadlines: dict[float, list[str]] = {}
        expiries: dict[datetime, list[str]] = {}
        for t in tracked:
            cid = t.command.command_id
            old = commands.get(cid)
            if old is not None:
                counts[old.state] -= 1
            commands[cid] = t
            counts[t.state] += 1
            expiries.setdefault(t.command.valid_until, []).append(cid)
            if t.state == CommandStatus.PENDING:
                deadlines.setdefault(t.deadline, []).append(cid)
        for until, ids in expiries.items():
            heapq.heappush(self._expiries, (until.timestamp(), next(self._tiebreak), ids))
        for deadline, ids in deadlines.items():
            heapq.heappush(self._deadlines, (deadline, next(self._tiebreak), ids))

    def _backoff(self, attempt: int) -> float:
        s = self.settings
        base = s.backoff_s * s.backoff_factor ** max(0, attempt - 1)
        return base * (1 + self.rng.uniform(-s.jitter, s.jitter))

    def active(self, site_id: str) -> Tracked | None:
        """The site's newest command if it is still pending or acked."""
        cid = self.latest.get(site_id)
        t = self.commands.get(cid) if cid else None
        return (
            t if t is not None and t.state in (CommandStatus.PENDING, CommandStatus.ACKED) else None
        )

    def next_due(self) -> float | None:
        """The earliest pending deadline or validity end (a heap head may be stale: an early
        wake-up finds nothing to do, never a late one)."""
        heads = [h[0][0] for h in (self._deadlines, self._expiries) if h]
        return min(heads) if heads else None

    def live_entries(self, now: float) -> list[LedgerEntry]:
        """Every pending or acked command as its ``issued``/``acked`` entry (no change is
        made): for rebuilding state derived from the ledger after a restore."""
        at = _utc(now)
        return [
            self._entry(
                t, LedgerEvent.ACKED if t.state == CommandStatus.ACKED else LedgerEvent.ISSUED, at
            )
            for t in self.commands.values()
            if t.state in (CommandStatus.PENDING, CommandStatus.ACKED)
        ]

    # -- transitions -----------------------------------------------------------------------

    def issue(self, commands: Iterable[Command], group: str, now: float) -> list[LedgerEntry]:
        """Track new commands (superseding each site's previous one); ledger entries."""
        at = _utc(now)
        deadline = now + self.settings.ack_timeout_s
        entries: list[LedgerEntry] = []
        tracked: list[Tracked] = []
        latest = self.latest
        for cmd in commands:
            prev = self.active(cmd.site_id)
            if prev is not None:
                self._move(prev, CommandStatus.SUPERSEDED)
                entries.append(self._entry(prev, LedgerEvent.SUPERSEDED, at, cmd.command_id))
            t = Tracked(cmd, group, CommandStatus.PENDING, deadline)
            tracked.append(t)
            latest[cmd.site_id] = cmd.command_id
            entries.append(_ledger_entry(cmd, LedgerEvent.ISSUED, CommandStatus.PENDING, at))
        self._track(tracked)
        return entries

    def on_acks(self, acks: Iterable[Ack], now: float) -> tuple[list[LedgerEntry], Outcome]:
        at = _utc(now)
        entries: list[LedgerEntry] = []
        responsive: list[str] = []
        redispatch: set[str] = set()
        for ack in acks:
            t = self.commands.get(ack.command_id)
            if t is None or t.command.site_id != ack.site_id:
                continue  # not ours (or a forged site id): nothing to change
            responsive.append(ack.site_id)
            if t.state in TERMINAL:
                continue  # late or duplicate: idempotent
            if ack.status == "accepted" and t.state == CommandStatus.PENDING:
                self._move(t, CommandStatus.ACKED)
                entries.append(self._entry(t, LedgerEvent.ACKED, at))
            elif ack.status == "rejected":
                self._move(t, CommandStatus.REJECTED)
                t.reason = ack.reason or "rejected without a reason"
                entries.append(self._entry(t, LedgerEvent.REJECTED, at, t.reason))
                redispatch.add(t.group)
            elif ack.status == "completed":
                self._move(t, CommandStatus.COMPLETED)
                entries.append(self._entry(t, LedgerEvent.COMPLETED, at))
        return entries, Outcome([], [], responsive, redispatch)

    def due(self, now: float) -> tuple[list[LedgerEntry], Outcome]:
        """Expiries, then retries and timeouts, that are due at ``now``."""
        s = self.settings
        at = _utc(now)
        entries: list[LedgerEntry] = []
        resend: list[Command] = []
        unresponsive: list[str] = []
        redispatch: set[str] = set()
        while self._expiries and self._expiries[0][0] <= now:
            for cid in heapq.heappop(self._expiries)[2]:
                t = self.commands.get(cid)
                if t is None:
                    continue
                if t.state == CommandStatus.PENDING:
                    self._move(t, CommandStatus.EXPIRED)
                    entries.append(
                        self._entry(t, LedgerEvent.EXPIRED, at, "validity ended unanswered")
                    )
                elif t.state == CommandStatus.ACKED:
                    self._move(t, CommandStatus.COMPLETED)
                    entries.append(
                        self._entry(t, LedgerEvent.COMPLETED, at, "validity ended (no ack)")
                    )
        retried: list[str] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, _, ids = heapq.heappop(self._deadlines)
            for cid in ids:
                t = self.commands.get(cid)
                if t is None or t.state != CommandStatus.PENDING or t.deadline != deadline:
                    continue  # answered, or rescheduled by a resend since
                attempt = t.command.attempt
                until = t.command.valid_until.timestamp()
                if attempt < s.max_attempts and now + s.ack_timeout_s < until:
                    t.command = replace(t.command, attempt=attempt + 1)
                    t.deadline = now + s.ack_timeout_s + self._backoff(attempt)
                    retried.append(cid)
                    entries.append(self._entry(t, LedgerEvent.SENT, at, f"retry {attempt + 1}"))
                    resend.append(t.command)
                else:
                    self._move(t, CommandStatus.TIMED_OUT)
                    t.reason = f"no ack after {attempt} attempts"
                    entries.append(self._entry(t, LedgerEvent.TIMEOUT, at, t.reason))
                    unresponsive.append(t.command.site_id)
                    redispatch.add(t.group)
        for cid in retried:  # jittered deadlines: one heap entry each
            heapq.heappush(
                self._deadlines, (self.commands[cid].deadline, next(self._tiebreak), [cid])
            )
        return entries, Outcome(resend, unresponsive, [], redispatch)

    def restore(
        self, rows: Iterable[tuple[LedgerEntry, LedgerEntry]], groups: dict[str, str], now: float
    ) -> tuple[list[LedgerEntry], list[Command]]:
        """Rebuild from the ledger; pending commands are resent under their own id."""
        at = _utc(now)
        entries: list[LedgerEntry] = []
        resend: list[Command] = []
        tracked: list[Tracked] = []
        latest_at = {
            site: self.commands[cid].command.issued_at for site, cid in self.latest.items()
        }
        for issued, last in rows:
            cmd = Command(
                v=1,
                command_id=issued.command_id,
                dispatch_id=issued.dispatch_id,
                site_id=issued.site_id,
                setpoint_kw=issued.setpoint_kw,
                valid_from=issued.valid_from,
                valid_until=issued.valid_until,
                attempt=last.attempt,
                issued_at=issued.ts,
            )
            t = Tracked(cmd, groups.get(issued.site_id, ""), last.state, now)
            if last.state == CommandStatus.PENDING:
                t.command = replace(cmd, attempt=last.attempt + 1)
                t.deadline = now + self.settings.ack_timeout_s
                entries.append(self._entry(t, LedgerEvent.SENT, at, "resent after restart"))
                resend.append(t.command)
            tracked.append(t)
            current = self.latest.get(cmd.site_id)
            if current is None or latest_at[cmd.site_id] <= cmd.issued_at:
                self.latest[cmd.site_id] = cmd.command_id
                latest_at[cmd.site_id] = cmd.issued_at
        self._track(tracked)
        return entries, resend

    def hand_over(self, sites: set[str]) -> int:
        """Stop tracking every command of these sites, writing nothing: another instance
        now owns them and takes their open commands over from the ledger. Returns how many
        commands were dropped (their heap entries are skipped when they come due)."""
        gone = [cid for cid, t in self.commands.items() if t.command.site_id in sites]
        for cid in gone:
            t = self.commands.pop(cid)
            self.counts[t.state] -= 1
        for site in sites:
            self.latest.pop(site, None)
        return len(gone)

    def forget_before(self, epoch: float) -> None:
        """Drop finished commands whose validity ended before ``epoch`` (memory bound)."""
        done = [
            cid
            for cid, t in self.commands.items()
            if t.state in TERMINAL and t.command.valid_until.timestamp() < epoch
        ]
        for cid in done:
            t = self.commands.pop(cid)
            self.counts[t.state] -= 1
            if self.latest.get(t.command.site_id) == cid:
                del self.latest[t.command.site_id]
