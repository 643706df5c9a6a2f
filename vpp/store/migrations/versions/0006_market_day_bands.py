"""a trading day's band prices per group and product (fixed-band markets)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "market_day_bands",
        sa.Column("market", sa.String(length=50), nullable=False),
        sa.Column("group_id", sa.String(length=100), nullable=False),
        sa.Column("product", sa.String(length=20), nullable=False),
        sa.Column("trading_day", sa.Date(), nullable=False),
        sa.Column("discharge", sa.JSON(), nullable=False),
        sa.Column("charge", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "market", "group_id", "product", "trading_day", name=op.f("pk_market_day_bands")
        ),
    )


def downgrade() -> None:
    op.drop_table("market_day_bands")
