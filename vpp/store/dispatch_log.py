"""Dispatch intervals: per group and interval, target vs delivered, shortfall, re-dispatches."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from vpp.store.paging import group_interval_conds, paged
from vpp.store.tables import dispatch_intervals


def upsert(engine: sa.Engine, row: dict[str, Any]) -> None:
    upsert_many(engine, [row])


# A closed interval's record is final: nothing rewrites it.
FINAL = ("delivered", "short", "cancelled")


def upsert_many(engine: sa.Engine, rows: list[dict[str, Any]]) -> None:
    """Insert or update each row by ``dispatch_id``, all in one transaction; a row already
    in a final state (delivered, short, cancelled) is never overwritten."""
    if not rows:
        return
    with engine.begin() as conn:
        for row in rows:
            done = conn.execute(
                dispatch_intervals.update()
                .where(
                    dispatch_intervals.c.dispatch_id == row["dispatch_id"],
                    dispatch_intervals.c.status.not_in(FINAL),
                )
                .values(**row)
            ).rowcount
            if done:
                continue
            exists = conn.execute(
                sa.select(dispatch_intervals.c.status).where(
                    dispatch_intervals.c.dispatch_id == row["dispatch_id"]
                )
            ).first()
            if exists is None:
                conn.execute(dispatch_intervals.insert().values(**row))


def list_intervals(
    engine: sa.Engine,
    *,
    group: str | None = None,
    start_from: datetime | None = None,
    start_to: datetime | None = None,
    skip: int = 0,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], int]:
    conds = group_interval_conds(
        dispatch_intervals, group=group, start_from=start_from, start_to=start_to
    )
    order = [dispatch_intervals.c.interval_start.desc(), dispatch_intervals.c.group_id]
    return paged(engine, dispatch_intervals, conds, order, skip=skip, limit=limit)
