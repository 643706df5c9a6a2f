"""One bidder at a time: leader election on the database, with fencing.

Many engine instances may run against one PostgreSQL database; exactly one of them may
prepare bids, submit them and collect awards. The election uses the part every deployment
already has, the database, rather than a second coordination service:

- **The lock.** The leader holds a PostgreSQL session-level advisory lock
  (``pg_try_advisory_lock``) on a connection kept open for the purpose. The lock lives as
  long as that session: if the process dies, or the network between it and the database
  fails long enough for the server to drop the session (TCP keepalives), the server
  releases the lock and another instance acquires it at its next attempt
  (``leader.check_every_s``). A single-partition consumer group would also elect one
  member, but a rebalance is slower (session timeouts of tens of seconds) and the group
  knows nothing of the database writes the leader makes; the lock and the writes share
  one system.
- **The term.** Acquiring the lock starts a new term: ``leader_terms.generation`` for
  the role is incremented in the same step, and the leader keeps its number.
- **Fencing.** A deposed leader may not know it yet (a paused process, a partition that
  has not been noticed). Every exchange with the market is logged before it happens
  (:class:`vpp.store.txlog.DbTxLog`), and the log refuses a request whose term is not the
  current one — checked in the transaction that would record it, after a shared lock on
  the term's row, so it cannot interleave with a new leader's increment. A deposed
  leader's submission therefore fails before anything reaches the market
  (:class:`FencedError`), and the bids it had marked for submission go back to
  ``approved`` for the new leader to send. The leader also checks, every
  ``check_every_s``, that its lock session answers and that its term is still the
  current one, and steps down at once when either fails.
- **A new leader** reconciles before it acts: bids left ``submitted`` by its predecessor
  are closed against the transaction log (:meth:`BidStore.reconcile_submitted`), as at a
  restart.

On SQLite (the embedded single-machine default) there is no advisory lock: an instance
takes a new term when it starts, so the last one started on a database file leads and any
earlier one is fenced at its next submission and steps down at its next check.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import Gauge

from vpp.store.fencing import FencedError
from vpp.store.tables import leader_terms

log = logging.getLogger(__name__)

LEADER = Gauge("vpp_leader", "1 while this instance leads the role", ["role"])
TERM = Gauge("vpp_leader_generation", "The term this instance leads (0: none)", ["role"])


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Leadership:
    """Who leads ``role`` among the instances sharing a database (see module docstring).

    Synchronous; :meth:`tick` is called on a cadence from a worker thread. ``listeners``
    are called (in that thread) when this instance becomes the leader.
    """

    name = "leadership"

    def __init__(
        self,
        db: sa.Engine,
        *,
        role: str = "bidder",
        holder: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.role = role
        self.holder = holder or default_holder()
        self.clock = clock
        self.generation: int | None = None
        self.listeners: list[Callable[[int], None]] = []
        self._lock_conn: sa.Connection | None = None
        self._postgres = db.dialect.name == "postgresql"
        self.elected = 0
        self.deposed = 0
        # tick runs in a worker thread; a fenced exchange (fenced) may step down from another
        self._lock = threading.RLock()
        LEADER.labels(role).set(0)  # a standby says so on /metrics from the start
        TERM.labels(role).set(0)

    # -- state ---------------------------------------------------------------------------

    def is_leader(self) -> bool:
        return self.generation is not None

    def _key(self, conn: sa.Connection) -> int:
        """The advisory lock key: the role within this database schema (two engines on
        different schemas of one database do not contend)."""
        schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
        return zlib.crc32(f"vpp:{schema}:{self.role}".encode()) - 2**31

    # -- election ------------------------------------------------------------------------

    def tick(self) -> bool:
        """Check the term if leading, else try to take it; returns whether this leads."""
        with self._lock:
            if self.is_leader():
                self.check()
            if not self.is_leader():
                self.try_acquire()
            return self.is_leader()

    def try_acquire(self) -> bool:
        with self._lock:
            return self._try_acquire()

    def _try_acquire(self) -> bool:
        if self.is_leader():
            return True
        if self._postgres:
            conn = self.db.connect()
            try:
                got = conn.execute(
                    sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key(conn)}
                ).scalar_one()
                conn.commit()
            except Exception:
                conn.close()
                raise
            if not got:
                conn.close()
                return False
            self._lock_conn = conn
        try:
            generation = self._new_term()
        except Exception:
            self._drop_lock()
            raise
        self.generation = generation
        self.elected += 1
        LEADER.labels(self.role).set(1)
        TERM.labels(self.role).set(generation)
        log.warning("%s leads %s (term %d)", self.holder, self.role, generation)
        for listener in self.listeners:
            listener(generation)
        return True

    def _new_term(self) -> int:
        t = leader_terms
        now = self.clock()
        with self.db.begin() as conn:
            updated = conn.execute(
                t.update()
                .where(t.c.role == self.role)
                .values(generation=t.c.generation + 1, holder=self.holder, acquired_at=now)
                .returning(t.c.generation)
            ).scalar_one_or_none()
            if updated is not None:
                return int(updated)
            conn.execute(
                t.insert().values(role=self.role, generation=1, holder=self.holder, acquired_at=now)
            )
            return 1

    def check(self) -> bool:
        """Still the leader? The lock session must answer and the term be current."""
        if not self.is_leader():
            return False
        reason = None
        if self._lock_conn is not None:
            try:
                self._lock_conn.execute(sa.text("SELECT 1")).scalar_one()
                self._lock_conn.commit()
            except sa.exc.SQLAlchemyError as exc:
                orig = getattr(exc, "orig", None) or exc
                reason = f"the lock session is gone ({type(orig).__name__})"
        if reason is None:
            try:
                current = self.current_generation()
            except sa.exc.DBAPIError as exc:
                reason = f"the database does not answer ({type(exc.orig).__name__})"
            else:
                if current != self.generation:
                    reason = f"term {current} has started elsewhere"
        if reason is not None:
            self.step_down(reason)
            return False
        return True

    def current_generation(self, conn: sa.Connection | None = None) -> int | None:
        q = sa.select(leader_terms.c.generation).where(leader_terms.c.role == self.role)
        if conn is not None:
            return conn.execute(q).scalar_one_or_none()
        with self.db.connect() as c:
            return c.execute(q).scalar_one_or_none()

    def fenced(self, exc: FencedError) -> None:
        """An exchange of this instance was refused at the transaction log (called outside
        the refused transaction): step down now rather than at the next check, unless a
        newer term has been taken since the one refused."""
        with self._lock:
            if exc.term is not None and exc.term == self.generation:
                self.step_down(f"fenced at the transaction log: {exc}")

    def step_down(self, reason: str) -> None:
        with self._lock:
            self._step_down(reason)

    def _step_down(self, reason: str, *, orderly: bool = False) -> None:
        """Stop leading. ``orderly``: this instance is stopping (an operator's stop, not a
        fault: logged at INFO and not counted as a deposition); else it lost the lead."""
        if self.generation is None:
            return
        if orderly:
            log.info(
                "%s stops leading %s (term %d): %s", self.holder, self.role, self.generation, reason
            )
        else:
            log.error(
                "%s no longer leads %s (term %d): %s",
                self.holder,
                self.role,
                self.generation,
                reason,
            )
            self.deposed += 1
        self.generation = None
        LEADER.labels(self.role).set(0)
        TERM.labels(self.role).set(0)
        self._drop_lock()

    def _drop_lock(self) -> None:
        conn, self._lock_conn = self._lock_conn, None
        if conn is None:
            return
        try:
            conn.execute(sa.text("SELECT pg_advisory_unlock_all()"))
            conn.commit()
        except sa.exc.SQLAlchemyError:
            conn.invalidate()  # a dead session: its locks went with it
        finally:
            conn.close()

    # -- fencing -------------------------------------------------------------------------

    def fence(self, conn: sa.Connection) -> int:
        """Within the caller's transaction: this instance's term, if it is the current one
        (the term's row is share-locked, so a new leader's increment waits for the caller's
        commit); else :class:`FencedError`."""
        mine = self.generation
        if mine is None:
            raise FencedError(f"{self.holder} does not lead {self.role}")
        q = sa.select(leader_terms.c.generation).where(leader_terms.c.role == self.role)
        if self._postgres:
            q = q.with_for_update(read=True)
        current = conn.execute(q).scalar_one_or_none()
        if current != mine:
            raise FencedError(
                f"{self.holder} led {self.role} in term {mine}; term {current} is current",
                term=mine,
            )
        return mine

    # -- component -------------------------------------------------------------------------

    async def start(self) -> None:
        import asyncio

        await asyncio.to_thread(self.try_acquire)

    async def stop(self) -> None:
        import asyncio

        def resign() -> None:
            with self._lock:
                self._step_down("the instance is stopping", orderly=True)

        await asyncio.to_thread(resign)

    def status(self) -> dict[str, Any]:
        line = (
            f"leads {self.role} (term {self.generation})"
            if self.is_leader()
            else f"standby: {self.role} is led by another instance"
        )
        return {
            "line": line,
            "role": self.role,
            "holder": self.holder,
            "leader": self.is_leader(),
            "generation": self.generation,
            "elected": self.elected,
            "deposed": self.deposed,
        }
