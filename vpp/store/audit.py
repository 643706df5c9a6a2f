"""The audit log: who changed what, when, with the state before and after."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from vpp.store.keys import Principal
from vpp.store.paging import paged
from vpp.store.tables import audit_log


def record(
    conn: sa.Connection,
    principal: Principal,
    action: str,
    resource_type: str,
    resource_id: str,
    before: Any,
    after: Any,
    ts: datetime | None = None,
) -> None:
    """Append an audit record inside the caller's transaction (so both land or neither)."""
    conn.execute(
        audit_log.insert().values(
            ts=ts or datetime.now(UTC),
            actor=principal.actor,
            role=principal.role,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            before=before,
            after=after,
        )
    )


def record_many(
    conn: sa.Connection,
    principal: Principal,
    action: str,
    resource_type: str,
    entries: list[tuple[str, Any, Any]],
    ts: datetime | None = None,
) -> None:
    """One audit record per ``(resource_id, before, after)`` in one statement (a bid cycle
    creates a day's bids at once; each is found by its own id afterwards)."""
    if not entries:
        return
    at = ts or datetime.now(UTC)
    conn.execute(
        audit_log.insert(),
        [
            {
                "ts": at,
                "actor": principal.actor,
                "role": principal.role,
                "action": action,
                "resource_type": resource_type,
                "resource_id": rid,
                "before": before,
                "after": after,
            }
            for rid, before, after in entries
        ],
    )


def history(
    engine: sa.Engine,
    resource_type: str | None = None,
    resource_id: str | None = None,
    limit: int = 100,
    skip: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """One page of the audit log, newest first, and how many records match."""
    conds = []
    if resource_type is not None:
        conds.append(audit_log.c.resource_type == resource_type)
    if resource_id is not None:
        conds.append(audit_log.c.resource_id == resource_id)
    return paged(engine, audit_log, conds, [audit_log.c.audit_id.desc()], skip=skip, limit=limit)
