"""group aggregates history (one row per group per minute)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_FLOATS = (
    "e_discharge_kwh",
    "e_discharge_kwh_lower",
    "e_discharge_kwh_upper",
    "e_charge_kwh",
    "e_charge_kwh_lower",
    "e_charge_kwh_upper",
    "p_discharge_p50_kw",
    "p_discharge_p90_kw",
    "p_charge_p50_kw",
    "p_charge_p90_kw",
    "p_net_kw",
)


def upgrade() -> None:
    op.create_table(
        "group_aggregates",
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("group_id", sa.String(length=100), nullable=False),
        sa.Column("sites", sa.Integer(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        *(sa.Column(name, sa.Float(), nullable=False) for name in _FLOATS),
        sa.Column("committed_sites", sa.Integer(), nullable=False),
        sa.Column("free_p_discharge_p90_kw", sa.Float(), nullable=False),
        sa.Column("free_p_charge_p90_kw", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("ts", "group_id"),
    )


def downgrade() -> None:
    op.drop_table("group_aggregates")
