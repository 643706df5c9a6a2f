"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:

    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "role IN ('viewer', 'operator', 'admin')", name=op.f("ck_api_keys_role")
        ),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_table(
        "audit_log",
        sa.Column("audit_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=32), nullable=False),
        sa.Column("resource_id", sa.String(length=200), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("audit_id", name=op.f("pk_audit_log")),
    )
    op.create_index(
        "ix_audit_log_resource", "audit_log", ["resource_type", "resource_id"], unique=False
    )
    op.create_index(op.f("ix_audit_log_ts"), "audit_log", ["ts"], unique=False)
    op.create_table(
        "command_ledger",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("command_id", sa.String(length=36), nullable=False),
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
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_command_ledger")),
    )
    op.create_index(
        op.f("ix_command_ledger_command_id"), "command_ledger", ["command_id"], unique=False
    )
    op.create_index(op.f("ix_command_ledger_site_id"), "command_ledger", ["site_id"], unique=False)
    op.create_table(
        "dispatch_intervals",
        sa.Column("dispatch_id", sa.String(length=100), nullable=False),
        sa.Column("group_id", sa.String(length=100), nullable=False),
        sa.Column("interval_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("interval_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("target_kw", sa.Float(), nullable=False),
        sa.Column("reserve_up_kw", sa.Float(), server_default="0", nullable=False),
        sa.Column("reserve_down_kw", sa.Float(), server_default="0", nullable=False),
        sa.Column("allocated_kw", sa.Float(), server_default="0", nullable=False),
        sa.Column("shortfall_kw", sa.Float(), server_default="0", nullable=False),
        sa.Column("delivered_kw", sa.Float(), nullable=True),
        sa.Column("delivered_kwh", sa.Float(), nullable=True),
        sa.Column("redispatches", sa.Integer(), server_default="0", nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("dispatch_id", name=op.f("pk_dispatch_intervals")),
    )
    op.create_index(
        op.f("ix_dispatch_intervals_interval_start"),
        "dispatch_intervals",
        ["interval_start"],
        unique=False,
    )
    op.create_table(
        "fleet_snapshots",
        sa.Column("snapshot_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("consumer_group", sa.String(length=200), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("offsets", sa.JSON(), nullable=False),
        sa.Column("sites", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("snapshot_id", name=op.f("pk_fleet_snapshots")),
    )
    op.create_index(
        "ix_fleet_snapshots_group_ts", "fleet_snapshots", ["consumer_group", "ts"], unique=False
    )
    op.create_table(
        "market_txlog",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tx_id", sa.String(length=100), nullable=False),
        sa.Column("market", sa.String(length=32), nullable=False),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("request", sa.JSON(), nullable=True),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_market_txlog")),
        sa.UniqueConstraint("tx_id", "phase", name="uq_market_txlog_tx_phase"),
    )
    op.create_index(op.f("ix_market_txlog_tx_id"), "market_txlog", ["tx_id"], unique=False)
    op.create_table(
        "site_events",
        sa.Column("event_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("site_id", sa.String(length=100), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=False),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_site_events")),
    )
    op.create_index("ix_site_events_site_ts", "site_events", ["site_id", "ts"], unique=False)
    op.create_table(
        "solve_reports",
        sa.Column("solve_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("market", sa.String(length=32), nullable=False),
        sa.Column("group_id", sa.String(length=100), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("solve_id", name=op.f("pk_solve_reports")),
    )
    op.create_table(
        "bids",
        sa.Column("bid_id", sa.String(length=100), nullable=False),
        sa.Column("market", sa.String(length=32), nullable=False),
        sa.Column("group_id", sa.String(length=100), nullable=False),
        sa.Column("product", sa.String(length=32), nullable=False),
        sa.Column("interval_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("interval_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("gate_closure", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("solve_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["solve_id"], ["solve_reports.solve_id"], name=op.f("fk_bids_solve_id_solve_reports")
        ),
        sa.PrimaryKeyConstraint("bid_id", name=op.f("pk_bids")),
    )
    op.create_index(
        "ix_bids_listing", "bids", ["market", "group_id", "status", "interval_start"], unique=False
    )
    op.create_index(
        "ix_bids_order", "bids", ["interval_start", "group_id", "product", "bid_id"], unique=False
    )
    op.create_table(
        "awards",
        sa.Column("award_id", sa.String(length=100), nullable=False),
        sa.Column("bid_id", sa.String(length=100), nullable=True),
        sa.Column("market", sa.String(length=32), nullable=False),
        sa.Column("group_id", sa.String(length=100), nullable=False),
        sa.Column("product", sa.String(length=32), nullable=False),
        sa.Column("interval_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("interval_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("p_mw", sa.Float(), nullable=False),
        sa.Column("price_per_mwh", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["bid_id"], ["bids.bid_id"], name=op.f("fk_awards_bid_id_bids")),
        sa.PrimaryKeyConstraint("award_id", name=op.f("pk_awards")),
    )
    op.create_index(op.f("ix_awards_bid_id"), "awards", ["bid_id"], unique=False)
    op.create_index(op.f("ix_awards_interval_start"), "awards", ["interval_start"], unique=False)
    op.create_table(
        "bid_reviews",
        sa.Column("review_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("bid_id", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=False),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["bid_id"], ["bids.bid_id"], name=op.f("fk_bid_reviews_bid_id_bids")
        ),
        sa.PrimaryKeyConstraint("review_id", name=op.f("pk_bid_reviews")),
    )
    op.create_index(op.f("ix_bid_reviews_bid_id"), "bid_reviews", ["bid_id"], unique=False)
    op.create_table(
        "bid_versions",
        sa.Column("bid_id", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("discharge", sa.JSON(), nullable=False),
        sa.Column("charge", sa.JSON(), nullable=False),
        sa.Column("author", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["bid_id"], ["bids.bid_id"], name=op.f("fk_bid_versions_bid_id_bids")
        ),
        sa.PrimaryKeyConstraint("bid_id", "version", name=op.f("pk_bid_versions")),
    )


def downgrade() -> None:

    op.drop_table("bid_versions")
    op.drop_index(op.f("ix_bid_reviews_bid_id"), table_name="bid_reviews")
    op.drop_table("bid_reviews")
    op.drop_index(op.f("ix_awards_interval_start"), table_name="awards")
    op.drop_index(op.f("ix_awards_bid_id"), table_name="awards")
    op.drop_table("awards")
    op.drop_index("ix_bids_order", table_name="bids")
    op.drop_index("ix_bids_listing", table_name="bids")
    op.drop_table("bids")
    op.drop_table("solve_reports")
    op.drop_index("ix_site_events_site_ts", table_name="site_events")
    op.drop_table("site_events")
    op.drop_index(op.f("ix_market_txlog_tx_id"), table_name="market_txlog")
    op.drop_table("market_txlog")
    op.drop_index("ix_fleet_snapshots_group_ts", table_name="fleet_snapshots")
    op.drop_table("fleet_snapshots")
    op.drop_index(op.f("ix_dispatch_intervals_interval_start"), table_name="dispatch_intervals")
    op.drop_table("dispatch_intervals")
    op.drop_index(op.f("ix_command_ledger_site_id"), table_name="command_ledger")
    op.drop_index(op.f("ix_command_ledger_command_id"), table_name="command_ledger")
    op.drop_table("command_ledger")
    op.drop_index(op.f("ix_audit_log_ts"), table_name="audit_log")
    op.drop_index("ix_audit_log_resource", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("api_keys")
