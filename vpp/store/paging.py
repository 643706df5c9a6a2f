"""One page of a filtered table and the total count matching the filters, in one connection.

The count runs on the same connection right after the page, so on PostgreSQL's default
isolation both see nearly the same data; a list view never needs more than that.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa


def group_interval_conds(
    table: sa.Table,
    *,
    group: str | None,
    start_from: datetime | None,
    start_to: datetime | None,
) -> list[sa.ColumnElement[bool]]:
    """Filters of a per-group, per-interval table: ``group_id``, and ``interval_start`` in
    ``[start_from, start_to)`` (each only when given)."""
    conds: list[sa.ColumnElement[bool]] = []
    if group:
        conds.append(table.c.group_id == group)
    if start_from:
        conds.append(table.c.interval_start >= start_from)
    if start_to:
        conds.append(table.c.interval_start < start_to)
    return conds


def paged(
    engine: sa.Engine,
    table: sa.Table,
    conds: Sequence[sa.ColumnElement[bool]],
    order_by: Sequence[sa.ColumnElement[Any]],
    *,
    skip: int,
    limit: int,
    columns: Sequence[sa.ColumnElement[Any]] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Rows ``skip .. skip+limit`` in ``order_by`` order (all columns unless given) and the
    number of rows matching ``conds``."""
    query = sa.select(*(columns if columns is not None else [table])).where(*conds)
    with engine.connect() as conn:
        rows = [
            dict(r._mapping)
            for r in conn.execute(query.order_by(*order_by).offset(skip).limit(limit))
        ]
        count = int(
            conn.execute(sa.select(sa.func.count()).select_from(table).where(*conds)).scalar_one()
        )
    return rows, count
