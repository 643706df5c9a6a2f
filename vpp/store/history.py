"""Interval history for analysis: export to long-term stores, streamed, never built in memory.

Four kinds of rows, each selected by a half-open time range ``[from, to)`` on its own time
column and read from the database in batches (``yield_per``):

- ``dispatch``: per interval and group, target vs allocated vs delivered, shortfall and
  re-dispatches (``dispatch_intervals``, by ``interval_start``);
- ``awards``: what the market awarded (by ``interval_start``);
- ``bids``: each bid's current version with its curve as JSON text (by ``interval_start``);
- ``telemetry-aggregates``: each group's aggregate every minute (``group_aggregates``, by
  ``ts``), recorded by :class:`AggregateRecorder` from the fleet snapshot.

Each batch becomes a CSV chunk or a Parquet row group as it is read: memory stays one batch
however long the range (a year of minute aggregates of 100 groups is 52 M rows). Both the
recorded aggregates and the dispatch outcomes are pruned after ``retention_days``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from vpp.records import tidy_float, utc_iso
from vpp.store import ledger
from vpp.store.retention import prune_by_key, prune_by_time
from vpp.store.tables import (
    UTCDateTime,
    audit_log,
    awards,
    bid_versions,
    bids,
    dispatch_intervals,
    dispatch_shares,
    fleet_snapshots,
    group_aggregates,
    market_txlog,
    site_events,
)

log = logging.getLogger(__name__)

Kind = Literal["dispatch", "awards", "bids", "telemetry-aggregates"]
Format = Literal["csv", "parquet"]
KINDS: tuple[Kind, ...] = ("dispatch", "awards", "bids", "telemetry-aggregates")
BATCH = 5_000  # rows per streamed piece of an API response
EXPORT_BATCH = 50_000  # rows per row group of an exported day file


@dataclass(frozen=True)
class _Source:
    select: sa.Select[Any]
    time_column: sa.ColumnElement[datetime]
    order: tuple[sa.ColumnElement[Any], ...]


def _source(kind: Kind) -> _Source:
    if kind == "dispatch":
        t = dispatch_intervals
        return _Source(sa.select(t), t.c.interval_start, (t.c.interval_start, t.c.dispatch_id))
    if kind == "awards":
        return _Source(
            sa.select(awards), awards.c.interval_start, (awards.c.interval_start, awards.c.award_id)
        )
    if kind == "bids":
        q = sa.select(
            bids,
            bid_versions.c.author,
            bid_versions.c.discharge,
            bid_versions.c.charge,
        ).join(
            bid_versions,
            sa.and_(
                bid_versions.c.bid_id == bids.c.bid_id, bid_versions.c.version == bids.c.version
            ),
        )
        return _Source(q, bids.c.interval_start, (bids.c.interval_start, bids.c.bid_id))
    g = group_aggregates
    return _Source(sa.select(g), g.c.ts, (g.c.ts, g.c.group_id))


def _plain(value: Any) -> Any:
    """A CSV cell: numbers at the API's resolution, instants as ISO text in UTC (``Z``), JSON
    (curves, counts) as compact text."""
    if isinstance(value, float):
        return tidy_float(value)
    if isinstance(value, datetime):
        return utc_iso(value)
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return value


def _arrow_type(column: sa.ColumnElement[Any]) -> pa.DataType:
    t = column.type
    if isinstance(t, UTCDateTime | sa.DateTime):
        return pa.timestamp("us", tz="UTC")
    if isinstance(t, sa.Float):
        return pa.float64()
    if isinstance(t, sa.Integer):
        return pa.int64()
    return pa.string()  # strings, text, and JSON as its text


def arrow_schema(kind: Kind) -> pa.Schema:
    """The Parquet columns of ``kind``, typed from the database's (UTC instants as
    timestamps, JSON as text)."""
    cols = _source(kind).select.selected_columns
    return pa.schema([(c.name, _arrow_type(c)) for c in cols])


def batches(
    engine: sa.Engine, kind: Kind, start: datetime, end: datetime, batch: int = BATCH
) -> Iterator[tuple[list[str], list[tuple[Any, ...]]]]:
    """``(columns, rows)`` batches of ``kind`` in ``[start, end)``, in time order."""
    src = _source(kind)
    q = src.select.where(src.time_column >= start, src.time_column < end).order_by(*src.order)
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=batch).execute(q)
        columns = list(result.keys())
        for part in result.partitions():
            yield columns, [tuple(row) for row in part]


def stream_csv(
    chunks: Iterator[tuple[list[str], list[tuple[Any, ...]]]], kind: Kind
) -> Iterator[bytes]:
    """A header, then one CSV chunk per batch (the header alone when there are no rows)."""
    header_sent = False
    for columns, rows in chunks:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        if not header_sent:
            w.writerow(columns)
            header_sent = True
        w.writerows(tuple(_plain(v) for v in row) for row in rows)
        yield buf.getvalue().encode()
    if not header_sent:
        names = [c.name for c in _source(kind).select.selected_columns]
        yield (",".join(names) + "\n").encode()


class _Sink(io.RawIOBase):
    """A write-only file that hands each written piece to whoever drains it."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.pos = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.parts.append(data)
        self.pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self.pos

    def drain(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def arrow_batches(
    engine: sa.Engine, kind: Kind, start: datetime, end: datetime, batch: int = BATCH
) -> Iterator[pa.RecordBatch]:
    """``kind`` in ``[start, end)`` as Arrow record batches in time order (the reader behind
    every Parquet export). Memory is one batch, whatever the range.

    No value passes through SQLAlchemy's per-row processing, and JSON is never decoded and
    re-encoded (it is carried as its stored text):

    - PostgreSQL: the query runs through ADBC (Apache Arrow's database connectivity: the
      COPY binary protocol decoded into Arrow columns in C++), about five times faster
      than rows through psycopg on this machine (benchmarks/console.py);
    - SQLite: the driver's cursor, ``fetchmany`` of ``batch`` rows, then one Arrow array
      per column, instants cast from their stored text by Arrow a column at a time. (ADBC's
      SQLite driver infers a column's type from its first rows and fails on a nullable
      column whose first values are null, so it is not used here.)
    """
    src = _source(kind)
    schema = arrow_schema(kind)
    sqlite = engine.dialect.name == "sqlite"
    q = (
        src.select.with_only_columns(*(_raw_column(c, sqlite) for c in src.select.selected_columns))
        .where(src.time_column >= start, src.time_column < end)
        .order_by(*src.order)
    )
    if not sqlite and _adbc_available():
        for rb in _postgres_batches(engine, q, schema):  # ADBC's batches are ~16 MB
            for offset in range(0, rb.num_rows, batch):
                yield rb.slice(offset, batch)
    else:
        yield from _dbapi_batches(engine, q, schema, batch)


def _adbc_available() -> bool:
    try:
        import adbc_driver_postgresql.dbapi  # noqa: F401
    except ImportError:
        log.warning(
            "adbc-driver-postgresql is not installed (pip install 'vpp[postgres]'): history "
            "exports read rows through psycopg, several times slower"
        )
        return False
    return True


def _bounds(compiled: sa.engine.Compiled, fmt: Callable[[datetime], str]) -> list[str]:
    """The query's two instants, in the order of its positional parameters."""
    params = compiled.params
    order: list[str] = getattr(compiled, "positiontup", None) or list(params)
    return [fmt(params[name]) for name in order]


def _dbapi_batches(
    engine: sa.Engine, q: sa.Select[Any], schema: pa.Schema, batch: int
) -> Iterator[pa.RecordBatch]:
    """Rows from the driver's own cursor, ``batch`` at a time, one Arrow array per column
    (SQLite instants arrive as their stored text and are cast by Arrow)."""
    compiled = q.compile(dialect=engine.dialect)
    if engine.dialect.name == "sqlite":
        args: list[Any] = _bounds(
            compiled, lambda t: t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        )
    else:
        args = [compiled.params[k] for k in getattr(compiled, "positiontup", None) or ()]
    naive = pa.timestamp("us")
    text_instants = engine.dialect.name == "sqlite"
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(str(compiled), args if args else compiled.params)
        while rows := cur.fetchmany(batch):
            arrays = []
            for col, f in zip(zip(*rows, strict=True), schema, strict=True):
                if text_instants and pa.types.is_timestamp(f.type):
                    arrays.append(pa.array(col, pa.string()).cast(naive).cast(f.type))
                else:
                    arrays.append(pa.array(col, type=f.type))
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)
        cur.close()
    finally:
        raw.close()


def _postgres_batches(
    engine: sa.Engine, q: sa.Select[Any], schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    import adbc_driver_postgresql.dbapi as adbc
    from sqlalchemy.dialects.postgresql import psycopg

    compiled = q.compile(dialect=psycopg.dialect(paramstyle="numeric_dollar"))
    # The two instants are written into the SQL as literals: with bound parameters ADBC
    # prepares the statement and reads it without COPY, 40 % slower here. They are our own
    # datetimes formatted by isoformat (no text from a caller reaches the SQL).
    bounds = _bounds(compiled, lambda t: t.astimezone(UTC).isoformat())
    sql = re.sub(r"\$(\d+)\b", lambda m: f"'{bounds[int(m[1]) - 1]}'", str(compiled))
    with engine.connect() as conn:  # the engine's own search_path, whatever set it
        search_path = conn.execute(sa.text("SHOW search_path")).scalar_one()
    url = engine.url.set(drivername="postgresql").update_query_dict(
        {"options": f"-csearch_path={search_path.replace(' ', '')}"}
    )
    with adbc.connect(url.render_as_string(hide_password=False)) as conn, conn.cursor() as cur:
        cur.execute(sql)
        for rb in cur.fetch_record_batch():
            yield pa.RecordBatch.from_arrays(
                [c.cast(f.type) for c, f in zip(rb.columns, schema, strict=True)], schema=schema
            )


def _raw_column(c: sa.ColumnElement[Any], sqlite: bool) -> sa.ColumnElement[Any]:
    """The column as the driver returns it, skipping SQLAlchemy's per-row processing."""
    if isinstance(c.type, sa.JSON):
        return (sa.type_coerce(c, sa.String) if sqlite else sa.cast(c, sa.Text)).label(c.name)
    if isinstance(c.type, UTCDateTime):
        raw = sa.String() if sqlite else sa.DateTime(timezone=True)
        return sa.type_coerce(c, raw).label(c.name)
    return c


def stream_parquet(record_batches: Iterator[pa.RecordBatch], kind: Kind) -> Iterator[bytes]:
    """One Parquet row group per batch, each yielded as soon as it is written; the file's
    footer last. An empty range is a valid file with the kind's columns and no rows."""
    sink = _Sink()
    writer = pq.ParquetWriter(sink, arrow_schema(kind))
    for rb in record_batches:
        writer.write_batch(rb)
        yield sink.drain()
    writer.close()
    yield sink.drain()


def stream(
    engine: sa.Engine, kind: Kind, fmt: Format, start: datetime, end: datetime
) -> Iterator[bytes]:
    if fmt == "csv":
        return stream_csv(batches(engine, kind, start, end), kind)
    return stream_parquet(arrow_batches(engine, kind, start, end), kind)


def _first_at_or_after(
    engine: sa.Engine, kind: Kind, start: datetime, end: datetime
) -> datetime | None:
    """The first instant of ``kind`` in ``[start, end)``, or None (one indexed query)."""
    col = _source(kind).time_column
    q = sa.select(sa.func.min(col)).where(col >= start, col < end)
    with engine.connect() as conn:
        first: datetime | None = conn.execute(q).scalar_one_or_none()
    return first


def export(
    engine: sa.Engine,
    kinds: list[Kind],
    start: datetime,
    end: datetime,
    out: Path,
    progress: Callable[[str, datetime], None] | None = None,
) -> dict[str, dict[str, int]]:
    """Parquet partitioned by UTC day (Hive style): ``out/<kind>/date=YYYY-MM-DD/
    part-0.parquet``, one file per day that has rows; returns rows and files per kind.
    A day's file is written to a temporary name and renamed, so a failed export leaves no
    partial file behind.

    Only days that hold rows are visited: after each day the next row's day is looked up
    (one indexed ``min``), so a range of centuries around a month of history costs what
    the month costs (it used to read every empty day, 75 ms each per kind).
    ``progress(kind, day)`` is told each day as it is written."""
    summary: dict[str, dict[str, int]] = {}
    for kind in kinds:
        rows = files = 0
        cursor = start
        while (first := _first_at_or_after(engine, kind, cursor, end)) is not None:
            day = first.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            lo, hi = max(day, start), min(day + timedelta(days=1), end)
            counted = 0

            def counting(chunks: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
                nonlocal counted
                for rb in chunks:
                    counted += rb.num_rows
                    yield rb

            target = out / kind / f"date={day:%Y-%m-%d}" / "part-0.parquet"
            tmp = target.with_suffix(".parquet.tmp")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                for piece in stream_parquet(
                    counting(arrow_batches(engine, kind, lo, hi, EXPORT_BATCH)), kind
                ):
                    fh.write(piece)
            if counted:
                tmp.replace(target)
                files += 1
            else:  # pragma: no cover - a row pruned between the lookup and the read
                tmp.unlink()
                with contextlib.suppress(OSError):
                    tmp.parent.rmdir()
            rows += counted
            if progress is not None:
                progress(kind, day)
            cursor = hi
        summary[kind] = {"rows": rows, "files": files}
    return summary


# -- recording and retention ------------------------------------------------------------------


class AggregateRecorder:
    """Writes every group's aggregate from the latest fleet snapshot once per minute (the
    minute it was taken), and prunes history older than ``retention_days``."""

    def __init__(
        self,
        engine: sa.Engine,
        snapshot: Callable[[], Any],
        clock: Callable[[], datetime],
        retention_days: float,
        audit_retention_days: float | None = None,
    ) -> None:
        self.engine = engine
        self.snapshot = snapshot
        self.clock = clock
        self.retention = timedelta(days=retention_days)
        self.audit_retention = (
            timedelta(days=audit_retention_days) if audit_retention_days is not None else None
        )
        self.recorded = 0
        self.pruned = 0

    def record(self) -> int:
        snap = self.snapshot()
        if snap is None or not snap.groups:
            return 0
        ts = snap.as_of.replace(second=0, microsecond=0)
        rows = [_aggregate_row(ts, group, node) for group, node in sorted(snap.groups.items())]
        with self.engine.begin() as conn:
            seen = {
                r.group_id
                for r in conn.execute(
                    sa.select(group_aggregates.c.group_id).where(group_aggregates.c.ts == ts)
                )
            }
            fresh = [r for r in rows if r["group_id"] not in seen]
            if fresh:
                conn.execute(group_aggregates.insert(), fresh)
        self.recorded += len(fresh)
        return len(fresh)

    def prune(self, batch: int = 10_000) -> int:
        """Everything log-like older than the retention, in batches
        (:mod:`vpp.store.retention`): aggregates, dispatch outcomes and shares, the command
        ledger and its summary, site events and snapshots after ``retention_days``; the
        audit and market transaction logs after ``audit_retention_days`` (kept forever
        when None)."""
        now = self.clock()
        before = now - self.retention
        with self.engine.begin() as conn:
            n = conn.execute(group_aggregates.delete().where(group_aggregates.c.ts < before))
            m = conn.execute(
                dispatch_intervals.delete().where(dispatch_intervals.c.interval_end < before)
            )
        removed = int(n.rowcount or 0) + int(m.rowcount or 0)
        removed += prune_by_time(
            self.engine, dispatch_shares.c.dispatch_id, dispatch_shares.c.updated_at, before, batch
        )
        removed += ledger.prune(self.engine, before, batch=batch)
        removed += prune_by_key(
            self.engine, site_events.c.event_id, site_events.c.ts, before, batch
        )
        removed += prune_by_key(
            self.engine, fleet_snapshots.c.snapshot_id, fleet_snapshots.c.ts, before, batch
        )
        if self.audit_retention is not None:
            cut = now - self.audit_retention
            removed += prune_by_key(self.engine, audit_log.c.audit_id, audit_log.c.ts, cut, batch)
            removed += prune_by_key(self.engine, market_txlog.c.seq, market_txlog.c.ts, cut, batch)
        self.pruned += removed
        if removed:
            log.info("history: pruned %d rows older than %s", removed, before.isoformat())
        return removed


def _aggregate_row(ts: datetime, group: str, node: Any) -> dict[str, Any]:
    return {
        "ts": ts,
        "group_id": group,
        "sites": node.sites,
        "counts": node.counts,
        "e_discharge_kwh": node.e_discharge_kwh.expected,
        "e_discharge_kwh_lower": node.e_discharge_kwh.lower,
        "e_discharge_kwh_upper": node.e_discharge_kwh.upper,
        "e_charge_kwh": node.e_charge_kwh.expected,
        "e_charge_kwh_lower": node.e_charge_kwh.lower,
        "e_charge_kwh_upper": node.e_charge_kwh.upper,
        "p_discharge_p50_kw": node.p_discharge_p50_kw,
        "p_discharge_p90_kw": node.p_discharge_p90_kw,
        "p_charge_p50_kw": node.p_charge_p50_kw,
        "p_charge_p90_kw": node.p_charge_p90_kw,
        "p_net_kw": node.p_net_kw.expected,
        "committed_sites": node.committed.sites,
        "free_p_discharge_p90_kw": node.free.p_discharge_p90_kw,
        "free_p_charge_p90_kw": node.free.p_charge_p90_kw,
    }
