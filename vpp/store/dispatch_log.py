"""Dispatch intervals: per group and interval, target vs delivered, shortfall, re-dispatches."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from market.clearing import Award
from market.definitions import Product
from vpp.store.paging import group_interval_conds, paged
from vpp.store.tables import awards, dispatch_intervals, dispatch_shares


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
            _upsert_interval(conn, {k: v for k, v in row.items() if k in _COLUMNS})


_COLUMNS = frozenset(dispatch_intervals.c.keys())
_OUTCOME = ("allocated_kw", "shortfall_kw", "delivered_kw", "delivered_kwh", "redispatches")


def _upsert_interval(conn: sa.Connection, row: dict[str, Any]) -> None:
    done = conn.execute(
        dispatch_intervals.update()
        .where(
            dispatch_intervals.c.dispatch_id == row["dispatch_id"],
            dispatch_intervals.c.status.not_in(FINAL),
        )
        .values(**row)
    ).rowcount
    if done:
        return
    exists = conn.execute(
        sa.select(dispatch_intervals.c.status).where(
            dispatch_intervals.c.dispatch_id == row["dispatch_id"]
        )
    ).first()
    if exists is None:
        conn.execute(dispatch_intervals.insert().values(**row))


def upsert_shared(engine: sa.Engine, instance: str, rows: list[dict[str, Any]]) -> None:
    """Instances sharing the fleet: each row is this instance's part of an interval.

    In one transaction per call: the instance's share row is upserted (final ones stay
    final), the interval's row is created if missing and its status advanced, then its
    outcome columns are set to the sums over every instance's share row — so the interval
    reads as one group target against what all instances' sites did. An interval becomes
    ``short`` if any instance's final part was short. A row of a site target this instance
    does not own (``foreign``) only makes sure the interval exists.
    """
    if not rows:
        return
    with engine.begin() as conn:
        for row in rows:
            main = {k: v for k, v in row.items() if k in _COLUMNS}
            did = row["dispatch_id"]
            if not row.get("foreign"):
                part = {
                    "share_kw": row.get("share_kw", row["target_kw"]),
                    **{k: main[k] for k in _OUTCOME},
                    "status": main["status"],
                    "updated_at": main["updated_at"],
                }
                key = (dispatch_shares.c.dispatch_id == did) & (
                    dispatch_shares.c.instance == instance
                )
                done = conn.execute(
                    dispatch_shares.update()
                    .where(key, dispatch_shares.c.status.not_in(FINAL))
                    .values(**part)
                ).rowcount
                if (
                    not done
                    and conn.execute(sa.select(dispatch_shares.c.status).where(key)).first() is None
                ):
                    conn.execute(
                        dispatch_shares.insert().values(dispatch_id=did, instance=instance, **part)
                    )
            exists = conn.execute(
                sa.select(dispatch_intervals.c.status).where(
                    dispatch_intervals.c.dispatch_id == did
                )
            ).first()
            if exists is None:
                fresh = {**main, **dict.fromkeys(_OUTCOME, 0.0)}
                fresh.update(delivered_kw=None, delivered_kwh=None, redispatches=0)
                if row.get("foreign") and main["status"] in FINAL:
                    fresh["status"] = "scheduled"
                conn.execute(dispatch_intervals.insert().values(**fresh))
            elif not row.get("foreign") and exists.status not in FINAL:
                conn.execute(
                    dispatch_intervals.update()
                    .where(dispatch_intervals.c.dispatch_id == did)
                    .values(status=main["status"], updated_at=main["updated_at"])
                )
            _sum_shares(conn, did, main["updated_at"])


def _sum_shares(conn: sa.Connection, dispatch_id: str, now: Any) -> None:
    s = dispatch_shares.c
    agg = conn.execute(
        sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(s.allocated_kw), 0.0),
            sa.func.coalesce(sa.func.sum(s.shortfall_kw), 0.0),
            sa.func.sum(s.delivered_kw),
            sa.func.sum(s.delivered_kwh),
            sa.func.coalesce(sa.func.sum(s.redispatches), 0),
            sa.func.sum(sa.case((s.status == "short", 1), else_=0)),
            sa.func.sum(sa.case((s.status.in_(FINAL), 1), else_=0)),
        ).where(s.dispatch_id == dispatch_id)
    ).one()
    parts, allocated, shortfall, delivered, delivered_kwh, redispatches, short, final = agg
    if not parts:
        return
    values: dict[str, Any] = {
        "allocated_kw": allocated,
        "shortfall_kw": shortfall,
        "delivered_kw": delivered,
        "delivered_kwh": delivered_kwh,
        "redispatches": redispatches,
        "updated_at": now,
    }
    current = conn.execute(
        sa.select(dispatch_intervals.c.status).where(
            dispatch_intervals.c.dispatch_id == dispatch_id
        )
    ).scalar()
    if current == "cancelled":
        values["status"] = "cancelled"
    elif final:
        values["status"] = "short" if short else "delivered"
    conn.execute(
        dispatch_intervals.update()
        .where(dispatch_intervals.c.dispatch_id == dispatch_id)
        .values(**values)
    )


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


def awards_not_over(engine: sa.Engine, moment: datetime) -> list[Award]:
    """Stored awards whose interval has not ended at ``moment`` (a restarted engine turns
    them into targets at once instead of at the next interval boundary, when the bidder
    reads the market's awards again and the interval may be over)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(awards).where(awards.c.interval_end > moment).order_by(awards.c.award_id)
        ).all()
    return [
        Award(
            award_id=r.award_id,
            bid_id=r.bid_id,
            bid_version=0,
            market=r.market,
            group=r.group_id,
            product=Product(r.product),
            interval_start=r.interval_start,
            interval_end=r.interval_end,
            discharge_mw=max(r.p_mw, 0.0),
            charge_mw=max(-r.p_mw, 0.0),
            price_per_mwh=r.price_per_mwh,
        )
        for r in rows
    ]
