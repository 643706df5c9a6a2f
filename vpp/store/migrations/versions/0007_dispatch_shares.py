"""each engine instance's share of a dispatch interval

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "dispatch_shares",
        sa.Column("dispatch_id", sa.String(length=100), nullable=False),
        sa.Column("instance", sa.String(length=200), nullable=False),
        sa.Column("share_kw", sa.Float(), nullable=False),
        sa.Column("allocated_kw", sa.Float(), nullable=False),
        sa.Column("shortfall_kw", sa.Float(), nullable=False),
        sa.Column("delivered_kw", sa.Float(), nullable=True),
        sa.Column("delivered_kwh", sa.Float(), nullable=True),
        sa.Column("redispatches", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("dispatch_id", "instance", name=op.f("pk_dispatch_shares")),
    )


def downgrade() -> None:
    op.drop_table("dispatch_shares")
