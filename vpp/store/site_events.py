"""Site state transitions (went offline, came back, fault, unresponsive), append-only."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from vpp.store.paging import paged
from vpp.store.tables import site_events
from vpp.twins.states import SiteEvent


def record_events(engine: sa.Engine, events: Sequence[SiteEvent]) -> None:
    if not events:
        return
    with engine.begin() as conn:
        conn.execute(
            site_events.insert(),
            [
                {
                    "site_id": e.site_id,
                    "ts": e.ts,
                    "kind": e.family,
                    "from_state": e.from_state,
                    "to_state": e.to_state,
                }
                for e in events
            ],
        )


def site_history(
    engine: sa.Engine, site_id: str, *, since: datetime | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    query = sa.select(site_events).where(site_events.c.site_id == site_id)
    if since is not None:
        query = query.where(site_events.c.ts >= since)
    query = query.order_by(site_events.c.ts.desc(), site_events.c.event_id.desc()).limit(limit)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def site_history_page(
    engine: sa.Engine, site_id: str, *, skip: int = 0, limit: int = 100
) -> tuple[list[dict[str, Any]], int]:
    """One page of a site's transitions, newest first, and how many there are."""
    return paged(
        engine,
        site_events,
        [site_events.c.site_id == site_id],
        [site_events.c.ts.desc(), site_events.c.event_id.desc()],
        skip=skip,
        limit=limit,
    )
