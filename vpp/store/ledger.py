"""The command ledger: every command and every change of its state, append-only.

Rows are written *before* the engine acts on them (publishing a command, re-dispatching
after a timeout), so after a crash the ledger knows at least everything that happened.
:func:`open_commands` rebuilds the tracker: for each command its content (from the
``issued`` row) and its latest state.

Every append also keeps ``command_last`` — the latest row of each command — in the same
transaction, so the questions readers and restarts ask ("the last state of each command",
"the commands still open") cost what the answer holds, not what the ledger has grown to.
:func:`prune` drops ledger and summary rows older than the retention, in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Collection, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

import msgspec
import sqlalchemy as sa

from vpp.store.paging import paged
from vpp.store.retention import prune_by_key, prune_by_time
from vpp.store.tables import command_last, command_ledger


class CommandStatus(StrEnum):
    """Where a command is in its life (the tracker's state machine; see its docstring).

    A ``StrEnum``: a status compares equal to, and is stored as, its lower-case name.
    """

    PENDING = "pending"
    ACKED = "acked"
    COMPLETED = "completed"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"
    SUPERSEDED = "superseded"
    EXPIRED = "expired"
    FAILED = "failed"


class LedgerEvent(StrEnum):
    """What one ledger row records happened to a command."""

    ISSUED = "issued"
    SENT = "sent"  # resent: a retry, or after a restart
    ACKED = "acked"
    REJECTED = "rejected"
    COMPLETED = "completed"
    TIMEOUT = "timeout"
    SUPERSEDED = "superseded"
    EXPIRED = "expired"


TERMINAL = frozenset(
    {
        CommandStatus.COMPLETED,
        CommandStatus.REJECTED,
        CommandStatus.TIMED_OUT,
        CommandStatus.SUPERSEDED,
        CommandStatus.EXPIRED,
        CommandStatus.FAILED,
    }
)


class LedgerEntry(msgspec.Struct, frozen=True, gc=False):
    """One ledger row (a msgspec struct: a dispatch creates 10^5 of them at once)."""

    command_id: str
    dispatch_id: str
    site_id: str
    event: LedgerEvent
    state: CommandStatus
    attempt: int
    setpoint_kw: float
    valid_from: datetime
    valid_until: datetime
    ts: datetime
    reason: str | None = None

    def row(self) -> dict[str, Any]:
        return {
            "command_id": self.command_id,
            "dispatch_id": self.dispatch_id,
            "site_id": self.site_id,
            "event": self.event,
            "state": self.state,
            "attempt": self.attempt,
            "setpoint_kw": self.setpoint_kw,
            "valid_from": self.valid_from,
            "valid_until": self.valid_until,
            "reason": self.reason,
            "ts": self.ts,
        }


_COLUMNS = (
    "command_id",
    "dispatch_id",
    "site_id",
    "event",
    "state",
    "attempt",
    "setpoint_kw",
    "valid_from",
    "valid_until",
    "reason",
    "ts",
)


def _by_command(e: LedgerEntry) -> str:
    return e.command_id


@functools.cache
def _bulk_insert(dialect: sa.Dialect) -> tuple[str, tuple[str, ...], bool, Any]:
    """The dialect's INSERT, its parameter order, and the time columns' bind processor.

    A dispatch of 10^5 sites appends 10^5 rows before it publishes anything, and as many
    again as the acks arrive. SQLAlchemy's per-value bind processing (three timestamps per
    row) is most of an ``executemany``'s cost there, and the timestamps of one batch are
    nearly all the same few instants: they are converted once per distinct value with the
    column type's own processor (so the stored form is exactly what the Core insert would
    write) and the rows go to the driver's ``executemany`` directly.
    """
    stmt = command_ledger.insert().values({c: sa.bindparam(c) for c in _COLUMNS})
    compiled = stmt.compile(dialect=dialect)
    positional = bool(compiled.positional)
    order = tuple(compiled.positiontup or ()) if positional else _COLUMNS
    time_type = command_ledger.c.ts.type.dialect_impl(dialect)
    return str(compiled), order, positional, time_type.bind_processor(dialect)


def append(engine: sa.Engine, entries: Sequence[LedgerEntry]) -> None:
    """Append entries in one transaction (all or none).

    The entries of one append are one instant's changes, so they are written in
    ``command_id`` order (a stable sort: one command's entries keep their order, which is
    all ``seq`` has to mean). Command ids are time-ordered, so the index inserts become
    near-sequential: a batch of acks, which arrive in no particular order, writes in half
    the time.
    """
    if not entries:
        return
    entries = sorted(entries, key=_by_command)
    with engine.begin() as conn:
        sql, order, positional, to_db = _bulk_insert(conn.dialect)
        instants = {v for e in entries for v in (e.valid_from, e.valid_until, e.ts)}
        at = {v: to_db(v) if to_db is not None else v for v in instants}
        rows = [
            (
                e.command_id,
                e.dispatch_id,
                e.site_id,
                e.event,
                e.state,
                e.attempt,
                e.setpoint_kw,
                at[e.valid_from],
                at[e.valid_until],
                e.reason,
                at[e.ts],
            )
            for e in entries
        ]
        if positional:
            pos = [_COLUMNS.index(name) for name in order]
            params: list[Any] = (
                rows
                if pos == list(range(len(_COLUMNS)))
                else [tuple(r[i] for i in pos) for r in rows]
            )
        else:
            params = [dict(zip(_COLUMNS, r, strict=True)) for r in rows]
        before = conn.execute(sa.select(sa.func.max(command_ledger.c.seq))).scalar()
        conn.exec_driver_sql(sql, params)
        conn.execute(_upsert_last(conn.dialect.name), {"above": before or 0})


@functools.cache
def _upsert_last(dialect_name: str) -> Any:
    """INSERT the latest ledger row of each command above a seq into ``command_last``,
    replacing an older one (``ON CONFLICT``: PostgreSQL and SQLite >= 3.24 alike)."""
    from sqlalchemy.dialects import postgresql, sqlite

    insert: Any = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
    cols = [c.name for c in command_last.c]
    newest = (
        sa.select(sa.func.max(command_ledger.c.seq))
        .where(command_ledger.c.seq > sa.bindparam("above"))
        .group_by(command_ledger.c.command_id)
    )
    rows = sa.select(*(command_ledger.c[c] for c in cols)).where(command_ledger.c.seq.in_(newest))
    stmt = insert(command_last).from_select(cols, rows)
    return stmt.on_conflict_do_update(
        index_elements=[command_last.c.command_id],
        set_={c: stmt.excluded[c] for c in cols if c != "command_id"},
        where=command_last.c.seq < stmt.excluded.seq,
    )


OPEN_STATES = (CommandStatus.PENDING, CommandStatus.ACKED)


def prune(engine: sa.Engine, before: datetime, *, batch: int = 10_000) -> int:
    """Delete ledger rows stamped before ``before`` and the summary rows of commands last
    touched before it, in batches (:mod:`vpp.store.retention`). A command cannot stay valid
    for the retention (days), so nothing still open is lost. Returns the rows deleted."""
    return prune_by_key(
        engine, command_ledger.c.seq, command_ledger.c.ts, before, batch
    ) + prune_by_time(engine, command_last.c.command_id, command_last.c.ts, before, batch)


def open_commands(
    engine: sa.Engine, now: datetime, sites: Collection[str] | None = None
) -> list[tuple[LedgerEntry, LedgerEntry]]:
    """(issued entry, latest entry) of every command not in a final state and still valid
    (of ``sites`` only, when given: an instance taking over some sites' commands)."""
    with engine.connect() as conn:
        last_rows = conn.execute(
            sa.select(command_last).where(
                command_last.c.state.in_(OPEN_STATES), command_last.c.valid_until > now
            )
        ).all()
        if sites is not None:  # open commands are few (in flight): filter here, not in SQL
            last_rows = [r for r in last_rows if r.site_id in sites]
        ids = [r.command_id for r in last_rows]
        issued = (
            {
                r.command_id: r
                for r in conn.execute(
                    sa.select(command_ledger).where(
                        command_ledger.c.command_id.in_(ids),
                        command_ledger.c.event == LedgerEvent.ISSUED,
                    )
                )
            }
            if ids
            else {}
        )
    out = []
    for last in last_rows:
        first = issued.get(last.command_id)
        if first is None:
            continue
        out.append((_entry(first), _entry(last)))
    return out


def close_expired_while_down(
    engine: sa.Engine, now: datetime, sites: Collection[str] | None = None
) -> list[LedgerEntry]:
    """Commands still open in the ledger whose validity ended while the engine was down
    (or, with ``sites``, while no instance owned those sites): each gets a final entry
    (``expired``, reason ``expired_while_down``), appended here, so no command stays open
    forever. Returns the entries written."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(command_last).where(
                command_last.c.state.in_(OPEN_STATES), command_last.c.valid_until <= now
            )
        ).all()
    if sites is not None:
        rows = [r for r in rows if r.site_id in sites]
    entries = [
        LedgerEntry(
            command_id=r.command_id,
            dispatch_id=r.dispatch_id,
            site_id=r.site_id,
            event=LedgerEvent.EXPIRED,
            state=CommandStatus.EXPIRED,
            attempt=r.attempt,
            setpoint_kw=r.setpoint_kw,
            valid_from=r.valid_from,
            valid_until=r.valid_until,
            ts=now,
            reason="expired_while_down",
        )
        for r in rows
    ]
    if entries:
        append(engine, entries)
    return entries


def _entry(r: Any) -> LedgerEntry:
    return LedgerEntry(
        command_id=r.command_id,
        dispatch_id=r.dispatch_id,
        site_id=r.site_id,
        event=LedgerEvent(r.event),
        state=CommandStatus(r.state),
        attempt=r.attempt,
        setpoint_kw=r.setpoint_kw,
        valid_from=r.valid_from,
        valid_until=r.valid_until,
        ts=r.ts,
        reason=r.reason,
    )


def history(
    engine: sa.Engine,
    *,
    site_id: str | None = None,
    state: str | None = None,
    command_id: str | None = None,
    skip: int = 0,
    limit: int = 100,
) -> tuple[list[dict[str, Any]], int]:
    """Ledger rows, newest first, filtered (for the API)."""
    conds = []
    if site_id:
        conds.append(command_ledger.c.site_id == site_id)
    if state:
        conds.append(command_ledger.c.state == state)
    if command_id:
        conds.append(command_ledger.c.command_id == command_id)
    order = [command_ledger.c.seq.desc()]
    return paged(engine, command_ledger, conds, order, skip=skip, limit=limit)


def last_states(
    engine: sa.Engine,
    *,
    site_id: str | None = None,
    state: str | None = None,
    skip: int = 0,
    limit: int = 100,
) -> tuple[list[dict[str, Any]], int]:
    """One row per command — its latest state — newest first, filtered: read from the
    maintained summary (``command_last``), by index."""
    conds = []
    if site_id:
        conds.append(command_last.c.site_id == site_id)
    if state:
        conds.append(command_last.c.state == state)
    order = [command_last.c.seq.desc()]
    return paged(engine, command_last, conds, order, skip=skip, limit=limit)


class LedgerWriter:
    """Appends entries in submission order, one transaction per drain (group commit).

    Callers submit a change's entries at the moment they make it (in the event loop, so
    the submission order is the order of the changes) and wait for the returned future
    before acting on it. Everything queued while a transaction is being written goes into
    the next one, so the ack loop can fetch and decode its next batch while the last one
    is being written, and a burst of small writes costs one commit.
    """

    def __init__(self, engine: sa.Engine, *, inline_below: int = 200) -> None:
        self.engine = engine
        self.inline_below = inline_below  # small writes skip the thread hop
        self._queue: list[tuple[Sequence[LedgerEntry], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writing: list[asyncio.Future[None]] = []

    def submit(self, entries: Sequence[LedgerEntry]) -> asyncio.Future[None]:
        """Queue entries; the future resolves once they are committed (or fails with why)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not entries:
            fut.set_result(None)
            return fut
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ledger writer")
        self._queue.append((entries, fut))
        self._wake.set()
        return fut

    async def write(self, entries: Sequence[LedgerEntry]) -> None:
        await self.submit(entries)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._queue = self._queue, []
            if not batch:
                continue
            self._writing = [fut for _, fut in batch]
            rows = [e for entries, _ in batch for e in entries]
            try:
                if len(rows) < self.inline_below:
                    append(self.engine, rows)
                else:
                    await asyncio.to_thread(append, self.engine, rows)
            except Exception as exc:  # every waiter learns the write failed
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
            else:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        waiting = [fut for _, fut in self._queue] + self._writing
        if waiting and self._task is not None and not self._task.done():
            await asyncio.wait(waiting, timeout=30)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
