"""peak-shaving schedules

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "peak_schedules",
        sa.Column("schedule_id", sa.String(length=64), nullable=False),
        sa.Column("site_id", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("interval_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("interval_s", sa.Integer(), nullable=False),
        sa.Column("intervals", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("demand_charge_per_kw", sa.Float(), nullable=False),
        sa.Column("peak_so_far_kw", sa.Float(), nullable=False),
        sa.Column("peak_without_kw", sa.Float(), nullable=False),
        sa.Column("peak_kw", sa.Float(), nullable=False),
        sa.Column("cost_without", sa.Float(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("solve_s", sa.Float(), nullable=False),
        sa.Column("net_load_kw", sa.JSON(), nullable=False),
        sa.Column("p_kw", sa.JSON(), nullable=False),
        sa.Column("grid_kw", sa.JSON(), nullable=False),
        sa.Column("import_price_per_kwh", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("schedule_id", name=op.f("pk_peak_schedules")),
    )
    op.create_index(
        "ix_peak_schedules_site_start",
        "peak_schedules",
        ["site_id", "interval_start"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_peak_schedules_site_start", table_name="peak_schedules")
    op.drop_table("peak_schedules")
