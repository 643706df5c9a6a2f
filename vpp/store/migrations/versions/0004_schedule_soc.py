"""peak-shaving schedules keep the planned state of charge

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Null for plans stored before this revision (their energy was not kept).
    with op.batch_alter_table("peak_schedules") as batch:
        batch.add_column(sa.Column("soc", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("peak_schedules") as batch:
        batch.drop_column("soc")
