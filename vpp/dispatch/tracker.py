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
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from msgspec.structs import replace

from vpp.dispatch.contract import Ack, Command
from vpp.store.ledger import TERMINAL, LedgerEntry


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
    state: str
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


class Tracker:
    def __init__(self, settings: TrackerSettings | None = None) -> None:
        self.settings = settings or TrackerSettings()
        self.rng = random.Random(self.settings.seed)
        self.commands: dict[str, Tracked] = {}
        self.latest: dict[str, str] = {}  # site -> newest command id

    # -- helpers ---------------------------------------------------------------------------

    def _entry(self, t: Tracked, event: str, now: float, reason: str | None = None) -> LedgerEntry:
        c = t.command
        return LedgerEntry(
            c.command_id,
            c.dispatch_id,
            c.site_id,
            event,
            t.state,
            c.attempt,
            c.setpoint_kw,
            c.valid_from,
            c.valid_until,
            _utc(now),
            reason,
        )

    def _backoff(self, attempt: int) -> float:
        s = self.settings
        base = s.backoff_s * s.backoff_factor ** max(0, attempt - 1)
        return base * (1 + self.rng.uniform(-s.jitter, s.jitter))

    def active(self, site_id: str) -> Tracked | None:
        """The site's newest command if it is still pending or acked."""
        cid = self.latest.get(site_id)
        t = self.commands.get(cid) if cid else None
        return t if t is not None and t.state in ("pending", "acked") else None

    def open(self) -> Iterable[Tracked]:
        return (t for t in self.commands.values() if t.state not in TERMINAL)

    # -- transitions -----------------------------------------------------------------------

    def issue(self, commands: Iterable[Command], group: str, now: float) -> list[LedgerEntry]:
        """Track new commands (superseding each site's previous one); ledger entries."""
        entries: list[LedgerEntry] = []
        for cmd in commands:
            prev = self.active(cmd.site_id)
            if prev is not None:
                prev.state = "superseded"
                entries.append(self._entry(prev, "superseded", now, cmd.command_id))
            t = Tracked(cmd, group, "pending", now + self.settings.ack_timeout_s)
            self.commands[cmd.command_id] = t
            self.latest[cmd.site_id] = cmd.command_id
            entries.append(self._entry(t, "issued", now))
        return entries

    def on_acks(self, acks: Iterable[Ack], now: float) -> tuple[list[LedgerEntry], Outcome]:
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
            if ack.status == "accepted" and t.state == "pending":
                t.state = "acked"
                entries.append(self._entry(t, "acked", now))
            elif ack.status == "rejected":
                t.state = "rejected"
                t.reason = ack.reason or "rejected without a reason"
                entries.append(self._entry(t, "rejected", now, t.reason))
                redispatch.add(t.group)
            elif ack.status == "completed":
                t.state = "completed"
                entries.append(self._entry(t, "completed", now))
        return entries, Outcome([], [], responsive, redispatch)

    def due(self, now: float) -> tuple[list[LedgerEntry], Outcome]:
        """Retries, timeouts and expiries that are due at ``now``."""
        s = self.settings
        entries: list[LedgerEntry] = []
        resend: list[Command] = []
        unresponsive: list[str] = []
        redispatch: set[str] = set()
        for t in list(self.open()):
            until = t.command.valid_until.timestamp()
            if now >= until:
                if t.state == "pending":
                    t.state = "expired"
                    entries.append(self._entry(t, "expired", now, "validity ended unanswered"))
                elif t.state == "acked":
                    t.state = "completed"
                    entries.append(self._entry(t, "completed", now, "validity ended (no ack)"))
                continue
            if t.state != "pending" or now < t.deadline:
                continue
            attempt = t.command.attempt
            next_deadline = now + s.ack_timeout_s + self._backoff(attempt)
            if attempt < s.max_attempts and now + s.ack_timeout_s < until:
                t.command = replace(t.command, attempt=attempt + 1)
                t.deadline = next_deadline
                entries.append(self._entry(t, "sent", now, f"retry {attempt + 1}"))
                resend.append(t.command)
            else:
                t.state = "timed_out"
                t.reason = f"no ack after {attempt} attempts"
                entries.append(self._entry(t, "timeout", now, t.reason))
                unresponsive.append(t.command.site_id)
                redispatch.add(t.group)
        return entries, Outcome(resend, unresponsive, [], redispatch)

    def restore(
        self, rows: Iterable[tuple[LedgerEntry, LedgerEntry]], groups: dict[str, str], now: float
    ) -> tuple[list[LedgerEntry], list[Command]]:
        """Rebuild from the ledger; pending commands are resent under their own id."""
        entries: list[LedgerEntry] = []
        resend: list[Command] = []
        for issued, last in rows:
            cmd = Command(
                1,
                issued.command_id,
                issued.dispatch_id,
                issued.site_id,
                issued.setpoint_kw,
                issued.valid_from,
                issued.valid_until,
                last.attempt,
                issued.ts,
            )
            t = Tracked(cmd, groups.get(issued.site_id, ""), last.state, now)
            self.commands[cmd.command_id] = t
            current = self.latest.get(cmd.site_id)
            if current is None or self.commands[current].command.issued_at <= cmd.issued_at:
                self.latest[cmd.site_id] = cmd.command_id
            if last.state == "pending":
                t.command = replace(cmd, attempt=last.attempt + 1)
                t.deadline = now + self.settings.ack_timeout_s
                entries.append(self._entry(t, "sent", now, "resent after restart"))
                resend.append(t.command)
        return entries, resend

    def forget_before(self, epoch: float) -> None:
        """Drop finished commands whose validity ended before ``epoch`` (memory bound)."""
        done = [
            cid
            for cid, t in self.commands.items()
            if t.state in TERMINAL and t.command.valid_until.timestamp() < epoch
        ]
        for cid in done:
            t = self.commands.pop(cid)
            if self.latest.get(t.command.site_id) == cid:
                del self.latest[t.command.site_id]
