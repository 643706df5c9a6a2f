"""Retention for the tables that grow with time: old rows deleted in batches, oldest first.

Each batch is its own short transaction, so a reader or the ledger writer waits at most one
batch, never the whole prune; the recorder runs it hourly in a worker thread, off the
engine's event loop (:func:`vpp.wiring._history`). Log-like tables whose key grows with
time (the ledger, site events, snapshots, the audit and market logs) are walked by key: the
oldest ``batch`` keys are read by the primary-key index and those stamped before the cut-off
deleted; the walk stops at the first batch that is not wholly old (keys follow time, give or
take the few seconds instances interleave).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa


def prune_by_key(
    engine: sa.Engine, key: sa.Column[int], ts: sa.Column[datetime], before: datetime, batch: int
) -> int:
    """Delete rows of ``key``'s table with ``ts`` before ``before``; returns how many."""
    table = key.table
    removed = 0
    while True:
        with engine.begin() as conn:
            oldest = conn.execute(sa.select(key, ts).order_by(key).limit(batch)).all()
            old = [r[0] for r in oldest if r[1] < before]
            if old:
                conn.execute(sa.delete(table).where(key.in_(old)))
        removed += len(old)
        if len(old) < batch:
            return removed


def prune_by_time(
    engine: sa.Engine, key: sa.Column[str], ts: sa.Column[datetime], before: datetime, batch: int
) -> int:
    """Delete rows with ``ts`` before ``before`` from a table keyed by something that does
    not follow time (a summary row per command, a share per interval)."""
    table = key.table
    removed = 0
    while True:
        with engine.begin() as conn:
            keys = conn.execute(sa.select(key).where(ts < before).limit(batch)).scalars().all()
            if keys:
                conn.execute(sa.delete(table).where(key.in_(keys)))
        removed += len(keys)
        if len(keys) < batch:
            return removed
