"""Peak-shaving schedules as planned: inputs, the plan and its expected bill, per site."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from vpp.store import audit
from vpp.store.keys import Principal
from vpp.store.paging import paged
from vpp.store.tables import peak_schedules


def insert(engine: sa.Engine, row: dict[str, Any], principal: Principal) -> None:
    """Store a schedule and its audit record in one transaction (both land or neither)."""
    with engine.begin() as conn:
        conn.execute(peak_schedules.insert().values(**row))
        summary = {
            k: v.isoformat() if isinstance(v, datetime) else v
            for k, v in row.items()
            if not isinstance(v, list)
        }
        audit.record(
            conn,
            principal,
            "create",
            "peak_schedule",
            row["schedule_id"],
            None,
            summary,
            ts=row["created_at"],
        )


def get(engine: sa.Engine, schedule_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(peak_schedules).where(peak_schedules.c.schedule_id == schedule_id)
        ).first()
    return dict(row._mapping) if row is not None else None


def list_schedules(
    engine: sa.Engine, *, site_id: str | None = None, skip: int = 0, limit: int = 50
) -> tuple[list[dict[str, Any]], int]:
    """Newest interval start first; the per-interval arrays are left out of list rows."""
    conds = [peak_schedules.c.site_id == site_id] if site_id else []
    arrays = {"net_load_kw", "p_kw", "grid_kw", "import_price_per_kwh", "soc"}
    columns = [c for c in peak_schedules.c if c.name not in arrays]
    order = [peak_schedules.c.interval_start.desc(), peak_schedules.c.created_at.desc()]
    return paged(engine, peak_schedules, conds, order, skip=skip, limit=limit, columns=columns)
