"""64-bit keys for the tables that grow; the latest ledger row per command (command_last)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

On PostgreSQL the ``integer`` serial keys become ``bigint`` and so do their sequences (a
sequence created by ``serial`` is ``AS integer`` and stops at 2^31 - 1 even when its column
is wider). SQLite's INTEGER PRIMARY KEY is its 64-bit rowid already. ``command_last`` is
filled from the ledger as it stands.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

GROWING = (
    ("audit_log", "audit_id"),
    ("bid_reviews", "review_id"),
    ("market_txlog", "seq"),
    ("command_ledger", "seq"),
    ("fleet_snapshots", "snapshot_id"),
    ("site_events", "event_id"),
)
COLUMNS = (
    "command_id, seq, dispatch_id, site_id, event, state, attempt, setpoint_kw, "
    "valid_from, valid_until, reason, ts"
)


def _sequences(width: str) -> None:
    bind = op.get_bind()
    for table, column in GROWING:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE {width}")
        name = bind.execute(
            sa.text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table, "c": column}
        ).scalar()
        if name:
            op.execute(f"ALTER SEQUENCE {name} AS {width}")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _sequences("bigint")
    big = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "command_last",
        sa.Column("command_id", sa.String(length=36), nullable=False),
        sa.Column("seq", big, nullable=False),
        sa.Column("dispatch_id", sa.String(length=100), nullable=False),
        sa.Column("site_id", sa.String(length=100), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("setpoint_kw", sa.Float(), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("command_id", name=op.f("pk_command_last")),
    )
    op.create_index(op.f("ix_command_last_seq"), "command_last", ["seq"], unique=False)
    op.create_index(op.f("ix_command_last_state"), "command_last", ["state"], unique=False)
    op.create_index("ix_command_last_site_seq", "command_last", ["site_id", "seq"], unique=False)
    op.execute(
        f"INSERT INTO command_last ({COLUMNS}) SELECT {COLUMNS} FROM command_ledger "
        "WHERE seq IN (SELECT max(seq) FROM command_ledger GROUP BY command_id)"
    )


def downgrade() -> None:
    op.drop_index("ix_command_last_site_seq", table_name="command_last")
    op.drop_index(op.f("ix_command_last_state"), table_name="command_last")
    op.drop_index(op.f("ix_command_last_seq"), table_name="command_last")
    op.drop_table("command_last")
    if op.get_bind().dialect.name == "postgresql":
        _sequences("integer")
