"""The engine's tables (SQLAlchemy Core). The schema itself is created by the migrations.

Every timestamp column is :class:`UTCDateTime`: it refuses naive datetimes on the way in and
returns timezone-aware UTC on the way out, on SQLite (which has no time zones) as on
PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

# Keys of tables that grow with time: 64-bit on PostgreSQL (an ``integer`` serial runs out
# in weeks at 10^5 sites), SQLite's INTEGER PRIMARY KEY (its 64-bit rowid) elsewhere.
BigKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC instant; naive datetimes are refused (they are a bug)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; use an aware UTC time")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime()),
    sa.CheckConstraint("role IN ('viewer', 'operator', 'admin')", name="role"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("audit_id", BigKey, primary_key=True, autoincrement=True),
    sa.Column("ts", UTCDateTime(), nullable=False, index=True),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("resource_type", sa.String(32), nullable=False),
    sa.Column("resource_id", sa.String(200), nullable=False),
    sa.Column("before", sa.JSON),
    sa.Column("after", sa.JSON),
    sa.Index("ix_audit_log_resource", "resource_type", "resource_id"),
)

solve_reports = sa.Table(
    "solve_reports",
    metadata,
    sa.Column("solve_id", sa.String(64), primary_key=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("market", sa.String(32), nullable=False),
    sa.Column("group_id", sa.String(100), nullable=False),
    sa.Column("report", sa.JSON, nullable=False),
)

bids = sa.Table(
    "bids",
    metadata,
    sa.Column("bid_id", sa.String(100), primary_key=True),
    sa.Column("market", sa.String(32), nullable=False),
    sa.Column("group_id", sa.String(100), nullable=False),
    sa.Column("product", sa.String(32), nullable=False),
    sa.Column("interval_start", UTCDateTime(), nullable=False),
    sa.Column("interval_end", UTCDateTime(), nullable=False),
    sa.Column("gate_closure", UTCDateTime(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("solve_id", sa.String(64), sa.ForeignKey("solve_reports.solve_id")),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index("ix_bids_listing", "market", "group_id", "status", "interval_start"),
    sa.Index("ix_bids_order", "interval_start", "group_id", "product", "bid_id"),
)

bid_versions = sa.Table(
    "bid_versions",
    metadata,
    sa.Column("bid_id", sa.String(100), sa.ForeignKey("bids.bid_id"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("discharge", sa.JSON, nullable=False),
    sa.Column("charge", sa.JSON, nullable=False),
    sa.Column("author", sa.String(200), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("comment", sa.Text),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

bid_reviews = sa.Table(
    "bid_reviews",
    metadata,
    sa.Column("review_id", BigKey, primary_key=True, autoincrement=True),
    sa.Column("bid_id", sa.String(100), sa.ForeignKey("bids.bid_id"), nullable=False, index=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("from_status", sa.String(16), nullable=False),
    sa.Column("to_status", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("comment", sa.Text),
    sa.Column("ts", UTCDateTime(), nullable=False),
)

awards = sa.Table(
    "awards",
    metadata,
    sa.Column("award_id", sa.String(100), primary_key=True),
    sa.Column("bid_id", sa.String(100), sa.ForeignKey("bids.bid_id"), index=True),
    sa.Column("market", sa.String(32), nullable=False),
    sa.Column("group_id", sa.String(100), nullable=False),
    sa.Column("product", sa.String(32), nullable=False),
    sa.Column("interval_start", UTCDateTime(), nullable=False, index=True),
    sa.Column("interval_end", UTCDateTime(), nullable=False),
    sa.Column("p_mw", sa.Float, nullable=False),
    sa.Column("price_per_mwh", sa.Float, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

market_txlog = sa.Table(
    "market_txlog",
    metadata,
    sa.Column("seq", BigKey, primary_key=True, autoincrement=True),
    sa.Column("tx_id", sa.String(100), nullable=False, index=True),
    sa.Column("market", sa.String(32), nullable=False),
    sa.Column("operation", sa.String(32), nullable=False),
    sa.Column("phase", sa.String(16), nullable=False),
    sa.Column("request", sa.JSON),
    sa.Column("response", sa.JSON),
    sa.Column("ts", UTCDateTime(), nullable=False),
    sa.Column("generation", sa.Integer, nullable=True),  # the leader's term (vpp.leader)
    sa.UniqueConstraint("tx_id", "phase", name="uq_market_txlog_tx_phase"),
)

# One row per role that instances elect a leader for: its current term (vpp.leader).
leader_terms = sa.Table(
    "leader_terms",
    metadata,
    sa.Column("role", sa.String(32), primary_key=True),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("acquired_at", UTCDateTime(), nullable=False),
)

dispatch_intervals = sa.Table(
    "dispatch_intervals",
    metadata,
    sa.Column("dispatch_id", sa.String(100), primary_key=True),
    sa.Column("group_id", sa.String(100), nullable=False),
    sa.Column("interval_start", UTCDateTime(), nullable=False, index=True),
    sa.Column("interval_end", UTCDateTime(), nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("target_kw", sa.Float, nullable=False),
    sa.Column("reserve_up_kw", sa.Float, nullable=False, server_default="0"),
    sa.Column("reserve_down_kw", sa.Float, nullable=False, server_default="0"),
    sa.Column("allocated_kw", sa.Float, nullable=False, server_default="0"),
    sa.Column("shortfall_kw", sa.Float, nullable=False, server_default="0"),
    sa.Column("delivered_kw", sa.Float),
    sa.Column("delivered_kwh", sa.Float),
    sa.Column("redispatches", sa.Integer, nullable=False, server_default="0"),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)


def _command_content() -> list[sa.Column[Any]]:
    """What a ledger row says about its command (fresh columns each call: a column belongs
    to one table)."""
    return [
        sa.Column("dispatch_id", sa.String(100), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("setpoint_kw", sa.Float, nullable=False),
        sa.Column("valid_from", UTCDateTime(), nullable=False),
        sa.Column("valid_until", UTCDateTime(), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("ts", UTCDateTime(), nullable=False),
    ]


command_ledger = sa.Table(
    "command_ledger",
    metadata,
    sa.Column("seq", BigKey, primary_key=True, autoincrement=True),
    sa.Column("command_id", sa.String(36), nullable=False, index=True),
    sa.Column("site_id", sa.String(100), nullable=False, index=True),
    sa.Column("state", sa.String(16), nullable=False),
    *_command_content(),
)

# The latest ledger row of every command, kept by vpp.store.ledger.append in the same
# transaction: what the readers list (last state per command) and the engine restores (open
# commands) without grouping the whole ledger.
command_last = sa.Table(
    "command_last",
    metadata,
    sa.Column("command_id", sa.String(36), primary_key=True),
    sa.Column("seq", BigKey, nullable=False, index=True),
    sa.Column("site_id", sa.String(100), nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    *_command_content(),
    sa.Index("ix_command_last_site_seq", "site_id", "seq"),
)

fleet_snapshots = sa.Table(
    "fleet_snapshots",
    metadata,
    sa.Column("snapshot_id", BigKey, primary_key=True, autoincrement=True),
    sa.Column("consumer_group", sa.String(200), nullable=False),
    sa.Column("ts", UTCDateTime(), nullable=False),
    sa.Column("offsets", sa.JSON, nullable=False),
    sa.Column("sites", sa.Integer, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Index("ix_fleet_snapshots_group_ts", "consumer_group", "ts"),
)

site_events = sa.Table(
    "site_events",
    metadata,
    sa.Column("event_id", BigKey, primary_key=True, autoincrement=True),
    sa.Column("site_id", sa.String(100), nullable=False),
    sa.Column("ts", UTCDateTime(), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("from_state", sa.String(16), nullable=False),
    sa.Column("to_state", sa.String(16), nullable=False),
    sa.Index("ix_site_events_site_ts", "site_id", "ts"),
)

peak_schedules = sa.Table(
    "peak_schedules",
    metadata,
    sa.Column("schedule_id", sa.String(64), primary_key=True),
    sa.Column("site_id", sa.String(100), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("interval_start", UTCDateTime(), nullable=False),
    sa.Column("interval_s", sa.Integer, nullable=False),
    sa.Column("intervals", sa.Integer, nullable=False),
    sa.Column("currency", sa.String(8), nullable=False),
    sa.Column("demand_charge_per_kw", sa.Float, nullable=False),
    sa.Column("peak_so_far_kw", sa.Float, nullable=False),
    sa.Column("peak_without_kw", sa.Float, nullable=False),
    sa.Column("peak_kw", sa.Float, nullable=False),
    sa.Column("cost_without", sa.Float, nullable=False),
    sa.Column("cost", sa.Float, nullable=False),
    sa.Column("solve_s", sa.Float, nullable=False),
    sa.Column("net_load_kw", sa.JSON, nullable=False),
    sa.Column("p_kw", sa.JSON, nullable=False),
    sa.Column("grid_kw", sa.JSON, nullable=False),
    sa.Column("import_price_per_kwh", sa.JSON, nullable=False),
    sa.Column("soc", sa.JSON, nullable=True),  # at each interval's end; null before 0004
    sa.Index("ix_peak_schedules_site_start", "site_id", "interval_start"),
)

group_aggregates = sa.Table(
    "group_aggregates",
    metadata,
    sa.Column("ts", UTCDateTime(), primary_key=True),
    sa.Column("group_id", sa.String(100), primary_key=True),
    sa.Column("sites", sa.Integer, nullable=False),
    sa.Column("counts", sa.JSON, nullable=False),
    sa.Column("e_discharge_kwh", sa.Float, nullable=False),
    sa.Column("e_discharge_kwh_lower", sa.Float, nullable=False),
    sa.Column("e_discharge_kwh_upper", sa.Float, nullable=False),
    sa.Column("e_charge_kwh", sa.Float, nullable=False),
    sa.Column("e_charge_kwh_lower", sa.Float, nullable=False),
    sa.Column("e_charge_kwh_upper", sa.Float, nullable=False),
    sa.Column("p_discharge_p50_kw", sa.Float, nullable=False),
    sa.Column("p_discharge_p90_kw", sa.Float, nullable=False),
    sa.Column("p_charge_p50_kw", sa.Float, nullable=False),
    sa.Column("p_charge_p90_kw", sa.Float, nullable=False),
    sa.Column("p_net_kw", sa.Float, nullable=False),
    sa.Column("committed_sites", sa.Integer, nullable=False),
    sa.Column("free_p_discharge_p90_kw", sa.Float, nullable=False),
    sa.Column("free_p_charge_p90_kw", sa.Float, nullable=False),
)

# Fixed-band markets (AEMO-like): a trading day's band prices per group and product, chosen
# by the bidder at the day's first bids and used by every bid and rebid of that day.
market_day_bands = sa.Table(
    "market_day_bands",
    metadata,
    sa.Column("market", sa.String(50), primary_key=True),
    sa.Column("group_id", sa.String(100), primary_key=True),
    sa.Column("product", sa.String(20), primary_key=True),
    sa.Column("trading_day", sa.Date, primary_key=True),
    sa.Column("discharge", sa.JSON, nullable=False),
    sa.Column("charge", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

# With engine instances sharing the fleet: each instance's part of one dispatch interval
# (its share of the group target and what its sites did). The interval's row in
# dispatch_intervals then holds the sums (vpp.store.dispatch_log.upsert_shared).
dispatch_shares = sa.Table(
    "dispatch_shares",
    metadata,
    sa.Column("dispatch_id", sa.String(100), primary_key=True),
    sa.Column("instance", sa.String(200), primary_key=True),
    sa.Column("share_kw", sa.Float, nullable=False),
    sa.Column("allocated_kw", sa.Float, nullable=False),
    sa.Column("shortfall_kw", sa.Float, nullable=False),
    sa.Column("delivered_kw", sa.Float),
    sa.Column("delivered_kwh", sa.Float),
    sa.Column("redispatches", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)
