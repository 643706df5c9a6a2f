"""leader terms (one bidder at a time) and the term of every market request

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "leader_terms",
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("role", name=op.f("pk_leader_terms")),
    )
    # Null for requests logged before terms existed (and by the single-instance default).
    with op.batch_alter_table("market_txlog") as batch:
        batch.add_column(sa.Column("generation", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("market_txlog") as batch:
        batch.drop_column("generation")
    op.drop_table("leader_terms")
