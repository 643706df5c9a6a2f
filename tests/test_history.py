"""Interval history: group aggregates recorded per minute and pruned, and every kind exported
through the API (CSV or Parquet, streamed a batch at a time) and `vpp export` (Parquet by
day), on the half-open range [from, to)."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from tests.api_support import NOW, Api, build_api, engine_for, make_fleet
from vpp.store import history
from vpp.store.history import AggregateRecorder
from vpp.store.tables import dispatch_intervals, group_aggregates


@pytest.fixture(params=["sqlite", "postgres"])
def api(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Api]:
    """Both stores: the export reads each driver's own column types (see arrow_batches)."""
    engines = engine_for(request.param, tmp_path, request)
    yield build_api(next(engines))
    next(engines, None)  # drop the test's schema


def _vpp(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, on the test's database only."""
    return subprocess.run(
        [sys.executable, "-m", "vpp", *args], capture_output=True, text=True, env=env, timeout=120
    )


def _dispatch_rows(n: int, start: datetime) -> list[dict[str, object]]:
    return [
        {
            "dispatch_id": f"d{k}",
            "group_id": "north",
            "interval_start": start + timedelta(minutes=5 * k),
            "interval_end": start + timedelta(minutes=5 * (k + 1)),
            "source": "award",
            "target_kw": 100.0 + k,
            "allocated_kw": 100.0 + k,
            "delivered_kw": None if k % 2 else 99.0,
            "status": "done",
            "updated_at": start,
        }
        for k in range(n)
    ]


def test_the_recorder_writes_each_group_once_a_minute_and_prunes_old_history(api: Api) -> None:
    _, hier = make_fleet()
    hier.refresh(NOW.timestamp())
    clock = {"now": NOW}
    rec = AggregateRecorder(api.engine, lambda: hier.latest, lambda: clock["now"], 30.0)
    groups = len(hier.latest.groups) if hier.latest else 0
    assert groups > 0
    assert rec.record() == groups
    assert rec.record() == 0  # the same snapshot minute is not written twice
    with api.engine.begin() as conn:
        conn.execute(dispatch_intervals.insert(), _dispatch_rows(3, NOW - timedelta(days=40)))
        recent = _dispatch_rows(1, NOW + timedelta(days=30))[0] | {"dispatch_id": "new"}
        conn.execute(dispatch_intervals.insert(), recent)
    clock["now"] = NOW + timedelta(days=31)
    removed = rec.prune()
    assert removed == groups + 3
    with api.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(group_aggregates)).scalar() == 0
        left = conn.execute(sa.select(dispatch_intervals.c.dispatch_id)).scalars().all()
    assert left == ["new"]


def test_csv_and_parquet_hold_exactly_the_half_open_range(api: Api) -> None:
    rows = _dispatch_rows(12, NOW)
    rows[0]["target_kw"] = -70.00000000000001  # binary noise a sum of shares leaves
    with api.engine.begin() as conn:
        conn.execute(dispatch_intervals.insert(), rows)
    params = {"from": NOW.isoformat(), "to": (NOW + timedelta(minutes=30)).isoformat()}
    r = api.client.get("/api/v1/history/dispatch", params=params, headers=api.h("viewer"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.strip().splitlines()
    assert lines[0].startswith("dispatch_id,group_id,interval_start")
    assert [ln.split(",")[0] for ln in lines[1:]] == [f"d{k}" for k in range(6)]  # [from, to)
    first = dict(zip(lines[0].split(","), lines[1].split(","), strict=False))
    assert first["target_kw"] == "-70.0"  # as the JSON API shows numbers
    assert first["interval_start"].endswith("Z")  # and instants
    r = api.client.get(
        "/api/v1/history/dispatch", params={**params, "format": "parquet"}, headers=api.h("viewer")
    )
    assert r.status_code == 200
    table = pq.read_table(io.BytesIO(r.content))
    assert table.num_rows == 6
    assert table.schema.field("interval_start").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("target_kw").type == pa.float64()
    assert table.column("delivered_kw").to_pylist() == [99.0, None] * 3
    # bids carry their curve; an empty range is a valid file with the columns
    r = api.client.get(
        "/api/v1/history/bids",
        params={"from": "2026-01-01T00:00:00Z", "to": "2027-01-01T00:00:00Z", "format": "parquet"},
        headers=api.h("viewer"),
    )
    bids = pq.read_table(io.BytesIO(r.content))
    assert bids.num_rows > 0 and '"price_per_mwh"' in bids.column("discharge")[0].as_py()
    r = api.client.get(
        "/api/v1/history/awards",
        params={"from": "2030-01-01T00:00:00Z", "to": "2030-01-02T00:00:00Z", "format": "parquet"},
        headers=api.h("viewer"),
    )
    empty = pq.read_table(io.BytesIO(r.content))
    assert empty.num_rows == 0 and "interval_start" in empty.column_names


def test_long_ranges_stream_in_row_groups_of_one_batch(api: Api) -> None:
    rows = [
        {
            "ts": NOW + timedelta(minutes=k),
            "group_id": "north",
            "sites": 3,
            "counts": {"online": 3},
            **{
                c: 1.0
                for c in (
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
                    "free_p_discharge_p90_kw",
                    "free_p_charge_p90_kw",
                )
            },
            "committed_sites": 0,
        }
        for k in range(2 * history.BATCH + 100)
    ]
    with api.engine.begin() as conn:
        conn.execute(group_aggregates.insert(), rows)
    params = {
        "from": NOW.isoformat(),
        "to": (NOW + timedelta(days=30)).isoformat(),
        "format": "parquet",
    }
    r = api.client.get(
        "/api/v1/history/telemetry-aggregates", params=params, headers=api.h("viewer")
    )
    f = pq.ParquetFile(io.BytesIO(r.content))
    assert f.metadata.num_rows == len(rows)
    assert f.num_row_groups == 3  # written (and sent) a batch at a time, never all at once
    assert f.read().column("counts")[0].as_py() == '{"online":3}'


def test_bad_history_requests_say_what_is_wrong(api: Api) -> None:
    h = api.h("viewer")
    ok = {"from": "2026-11-21T00:00:00Z", "to": "2026-11-22T00:00:00Z"}
    assert api.client.get("/api/v1/history/dispatch", params=ok).status_code == 401
    r = api.client.get("/api/v1/history/commands", params=ok, headers=h)
    assert r.status_code == 422
    reversed_range = {"from": ok["to"], "to": ok["from"]}
    r = api.client.get("/api/v1/history/dispatch", params=reversed_range, headers=h)
    assert r.status_code == 422 and "to must not be before from" in r.text
    r = api.client.get("/api/v1/history/dispatch", params={**ok, "to": ok["from"]}, headers=h)
    assert r.status_code == 200 and r.text.strip().startswith("dispatch_id")  # [t, t): empty
    r = api.client.get(
        "/api/v1/history/dispatch", params={**ok, "to": "2028-01-01T00:00:00Z"}, headers=h
    )
    assert r.status_code == 422 and "vpp export" in r.text
    r = api.client.get(
        "/api/v1/history/dispatch", params={**ok, "from": "2026-11-21T00:00:00"}, headers=h
    )
    assert r.status_code == 422  # naive instants are refused
    r = api.client.get("/api/v1/history/dispatch", params={**ok, "format": "xlsx"}, headers=h)
    assert r.status_code == 422


def test_vpp_export_writes_parquet_partitioned_by_day(api: Api, tmp_path: Path) -> None:
    start = datetime(2026, 11, 20, 23, 0, tzinfo=UTC)
    with api.engine.begin() as conn:
        conn.execute(dispatch_intervals.insert(), _dispatch_rows(36, start))  # 3 h over midnight
    out = tmp_path / "export"
    env = {"VPP_DATABASE__URL": str(api.engine.url), "PATH": "/usr/bin:/bin"}
    if api.engine.dialect.name == "postgresql":
        with api.engine.connect() as conn:
            env["VPP_DATABASE__SCHEMA_NAME"] = conn.execute(
                sa.text("select current_schema()")
            ).scalar_one()
    res = _vpp(
        env, "export", "--from", "2026-11-20T00:00:00Z", "--to", "2026-11-22T00:00:00Z",
        "--out", str(out), "--kinds", "dispatch,awards",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    days = sorted(p.parent.name for p in (out / "dispatch").glob("date=*/part-0.parquet"))
    assert days == ["date=2026-11-20", "date=2026-11-21"]
    n = sum(pq.read_table(p).num_rows for p in (out / "dispatch").glob("date=*/*.parquet"))
    assert n == 36
    assert not list(out.rglob("*.tmp"))
    bad = _vpp(
        env, "export", "--from", "2026-11-20T00:00:00Z", "--to", "2026-11-21T00:00:00Z",
        "--out", str(out), "--kinds", "commands",
    )  # fmt: skip
    assert bad.returncode == 2 and "unknown ['commands']" in bad.stderr


def test_an_export_of_centuries_visits_only_the_days_with_rows(api: Api, tmp_path: Path) -> None:
    """1900..2100 around three separate days of rows writes those days and reads only
    them (it used to read each of the 73,000 empty days: hours for four kinds)."""
    with api.engine.begin() as conn:
        for k, day in enumerate(
            (datetime(1999, 1, 1, 23, tzinfo=UTC), NOW, NOW + timedelta(days=9))
        ):
            rows = _dispatch_rows(24, day)
            for r in rows:
                r["dispatch_id"] = f"{k}-{r['dispatch_id']}"
            conn.execute(dispatch_intervals.insert(), rows)
    seen: list[str] = []
    summary = history.export(
        api.engine,
        ["dispatch", "awards"],
        datetime(1900, 1, 1, tzinfo=UTC),
        datetime(2100, 1, 1, tzinfo=UTC),
        tmp_path,
        lambda kind, day: seen.append(f"{kind} {day:%Y-%m-%d}"),
    )
    assert summary == {"dispatch": {"rows": 72, "files": 4}, "awards": {"rows": 0, "files": 0}}
    days = [
        f"dispatch {d:%Y-%m-%d}"
        for d in (datetime(1999, 1, 1, tzinfo=UTC), datetime(1999, 1, 2, tzinfo=UTC))
    ]
    days += [f"dispatch {d:%Y-%m-%d}" for d in (NOW, NOW + timedelta(days=9))]
    assert seen == days  # every visited day had rows (the 1999 rows run past midnight)
    n = sum(pq.read_table(p).num_rows for p in (tmp_path / "dispatch").rglob("*.parquet"))
    assert n == 72 and not (tmp_path / "awards").exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_text("x") and p, "is a file (give a folder)"),
        (lambda p: Path("/proc/vpp-export"), "cannot create the folder"),
    ],
)
def test_vpp_export_refuses_an_unusable_out_folder_before_exporting(
    tmp_path: Path, make: Any, message: str
) -> None:
    url = f"sqlite:///{tmp_path}/h.db"
    env = {"VPP_DATABASE__URL": url, "PATH": "/usr/bin:/bin"}
    assert _vpp(env, "db", "upgrade").returncode == 0
    out = make(tmp_path / "out")
    res = _vpp(env, "export", "--from", "2026-11-20", "--to", "2026-11-21", "--out", str(out))
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr


@pytest.fixture
def pg_api(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Api]:
    engines = engine_for("postgres", tmp_path, request)
    yield build_api(next(engines))
    next(engines, None)


def test_postgres_export_is_the_same_through_adbc_and_through_psycopg(
    pg_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ADBC reader (PostgreSQL's fast path) and the driver-rows fallback agree."""
    api = pg_api
    start = datetime(2026, 11, 20, 22, tzinfo=UTC)
    with api.engine.begin() as conn:
        conn.execute(dispatch_intervals.insert(), _dispatch_rows(30, start))
    end = start + timedelta(days=1)

    def read() -> pa.Table:
        body = b"".join(history.stream(api.engine, "dispatch", "parquet", start, end))
        return pq.read_table(io.BytesIO(body))

    fast = read()
    monkeypatch.setattr(history, "_adbc_available", lambda: False)
    slow = read()
    assert fast.num_rows == 30 and fast.equals(slow)


def test_the_hourly_prune_covers_every_log_like_table(tmp_path: Path) -> None:
    """Ledger, summary, site events, snapshots after the retention; audit and market logs
    after theirs; nothing newer."""
    from vpp.config import DatabaseSettings
    from vpp.store import db, ledger
    from vpp.store.ledger import LedgerEntry
    from vpp.store.tables import (
        audit_log,
        command_last,
        command_ledger,
        fleet_snapshots,
        market_txlog,
        site_events,
    )

    engine = db.create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp_path}/r.db"))
    db.upgrade(engine)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    # in the order they happened: keys follow time (vpp.store.retention walks by key)
    ages = {"ancient": now - timedelta(days=3000), "old": now - timedelta(days=100), "new": now}
    for label, at in ages.items():
        ledger.append(
            engine,
            [LedgerEntry(f"{label}-cmd", "d", "s1", "issued", "pending", 1, 1.0, at, at, at, None)],
        )
        with engine.begin() as conn:
            conn.execute(
                site_events.insert().values(
                    site_id="s1", ts=at, kind="state", from_state="online", to_state="stale"
                )
            )
            conn.execute(
                fleet_snapshots.insert().values(
                    consumer_group=label, ts=at, offsets={}, sites=0, data=b""
                )
            )
            conn.execute(
                audit_log.insert().values(
                    ts=at, actor="a", role="admin", action="x", resource_type="t", resource_id=label
                )
            )
            conn.execute(
                market_txlog.insert().values(
                    tx_id=label, market="caiso", operation="submit", phase="request", ts=at
                )
            )
    rec = AggregateRecorder(engine, lambda: None, lambda: now, 90.0, 2557.0)
    rec.prune(batch=1)
    with engine.connect() as conn:

        def left(col: Any) -> list[Any]:
            return sorted(conn.execute(sa.select(col)).scalars().all())

        assert left(command_ledger.c.command_id) == ["new-cmd"]
        assert left(command_last.c.command_id) == ["new-cmd"]
        assert len(left(site_events.c.event_id)) == 1
        assert left(fleet_snapshots.c.consumer_group) == ["new"]
        assert left(audit_log.c.resource_id) == ["new", "old"]  # 7 years for the audit trail
        assert left(market_txlog.c.tx_id) == ["new", "old"]
