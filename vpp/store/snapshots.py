"""Fleet snapshots: the columnar store plus the bus offsets it includes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from vpp.store.tables import fleet_snapshots


@dataclass(frozen=True, slots=True)
class Snapshot:
    snapshot_id: int
    member: str
    ts: datetime
    offsets: dict[str, int]  # "topic:partition" -> next offset to read
    sites: int
    data: bytes


def tp_key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def save_snapshot(
    engine: sa.Engine,
    member: str,
    ts: datetime,
    offsets: dict[str, int],
    sites: int,
    data: bytes,
    keep: int,
) -> int:
    """Insert a snapshot and prune this member's older ones to ``keep`` (one transaction)."""
    with engine.begin() as conn:
        snap_id = conn.execute(
            fleet_snapshots.insert()
            .values(consumer_group=member, ts=ts, offsets=offsets, sites=sites, data=data)
            .returning(fleet_snapshots.c.snapshot_id)
        ).scalar_one()
        old = (
            sa.select(fleet_snapshots.c.snapshot_id)
            .where(fleet_snapshots.c.consumer_group == member)
            .order_by(fleet_snapshots.c.snapshot_id.desc())
            .offset(keep)
        )
        conn.execute(fleet_snapshots.delete().where(fleet_snapshots.c.snapshot_id.in_(old)))
    return int(snap_id)


def latest_covering(engine: sa.Engine, group_prefix: str, tp: str) -> Snapshot | None:
    """The newest snapshot of any member of a consumer group that includes partition ``tp``."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(fleet_snapshots)
            .where(fleet_snapshots.c.consumer_group.startswith(group_prefix, autoescape=True))
            .order_by(fleet_snapshots.c.snapshot_id.desc())
            .limit(50)
        ).all()
    for row in rows:
        if tp in row.offsets:
            return Snapshot(
                row.snapshot_id, row.consumer_group, row.ts, row.offsets, row.sites, row.data
            )
    return None
