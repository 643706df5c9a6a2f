"""One page of a filtered table and the total count matching the filters, in one connection.

The count runs on the same connection right after the page, so on PostgreSQL's default
isolation both see nearly the same data; a list view never needs more than that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa


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
