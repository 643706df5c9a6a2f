"""The operator console and the history export, measured.

Bids page: 500 bids whose gates are ahead (50 five-minute intervals x 10 groups, the
review queue a real-time market makes over four hours), SQLite, the app served by uvicorn
in this process. Two figures:

- ``server_ms``: the time the app spends on ``GET /console/bids`` (an ASGI timer around
  the app: from the request reaching the app to the last body byte leaving it), median of
  ``--repeats`` requests, with the bid-list cache as shipped (``cached``: the first
  request fills it) and with it off (``uncached``: every request queries and renders);
  the first, cold request is reported on its own.
- ``load_event_ms``: headless Debian Chromium (Playwright) signed in, navigating to the
  page: ``loadEventEnd`` of the navigation timing (network, parse, the vendored scripts,
  layout), median of ``--repeats`` navigations.

Export: a month of one-minute aggregates for 100 groups (4.32 M rows) in SQLite (and in
PostgreSQL when it answers on 127.0.0.1), exported by ``vpp export`` as a child process
(Parquet, one file per day). Rows/s counts the export's own time (from the child, after
its imports); ``wall_s`` is the whole process. Peak memory is the child's own peak RSS
(``VmHWM``) for one week and for the month: "memory independent of the range"
means the two are close.

    python benchmarks/console.py [--repeats 15] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
GROUPS = 100
MONTH_START = datetime(2026, 10, 1, tzinfo=UTC)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Timer:
    """ASGI middleware: how long the app took per path (request in -> last byte out)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.times: dict[str, list[float]] = {}

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        await self.app(scope, receive, send)
        self.times.setdefault(scope["path"], []).append(time.perf_counter() - t0)


def bids_page(n_bids: int, repeats: int, tmp: Path) -> dict[str, Any]:
    import httpx
    import uvicorn

    from benchmarks._fleet import make_fleet
    from market.bids import Bid, BidCurve, Segment
    from market.definitions import Product
    from vpp.api.app import create_app
    from vpp.config import DatabaseSettings
    from vpp.services import Services
    from vpp.store import db
    from vpp.store.bids import BidStore
    from vpp.store.keys import KeyStore

    engine = db.create_db_engine(DatabaseSettings(url=f"sqlite:///{tmp}/console.db"))  # type: ignore[arg-type]
    db.upgrade(engine)
    now = datetime.now(UTC)
    first = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)  # gates ahead
    bids = [
        Bid(
            bid_id=f"g{k % 10}-energy_rt-{first + timedelta(minutes=5 * (k // 10)):%Y%m%dT%H%MZ}",
            market="caiso",
            group=f"g{k % 10}",
            product=Product.ENERGY_RT,
            interval_start=first + timedelta(minutes=5 * (k // 10)),
            interval_end=first + timedelta(minutes=5 * (k // 10 + 1)),
            curve=BidCurve(
                discharge=[Segment(price_per_mwh=40 + i, quantity_mw=0.5) for i in range(4)],
                charge=[Segment(price_per_mwh=20 - i, quantity_mw=0.25) for i in range(3)],
            ),
        )
        for k in range(n_bids)
    ]
    out: dict[str, Any] = {"bids": n_bids}
    for label, ttl in (("cached", 60.0), ("uncached", 0.0)):
        store = BidStore(engine, cache_ttl_s=ttl)
        if label == "cached":
            store.create(bids)
            _, key = KeyStore(engine).create("bench", "operator")
        fleet_store, hier = make_fleet(now)
        services = Services(
            db=engine,
            keys=KeyStore(engine, ttl_s=60),
            bids=store,
            fleet=lambda fs=fleet_store, h=hier: (h.latest, fs),
        )
        timer = Timer(create_app(services))
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(timer, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        base = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=base) as client:
                form = client.get("/console/login").text  # the sign-in form's CSRF token
                token = form.split('name="csrf" value="')[1].split('"')[0]
                client.post("/console/login", data={"api_key": key, "csrf": token})
                r = client.get("/console/bids")
                assert r.status_code == 200 and r.text.count('href="/console/bids/') == n_bids
                for _ in range(repeats):
                    client.get("/console/bids")
            times = timer.times["/console/bids"]
            out[label] = {
                "server_ms_first": round(times[0] * 1e3, 1),
                "server_ms_median": round(statistics.median(times[1:]) * 1e3, 1),
                "server_ms_p90": round(sorted(times[1:])[int(0.9 * (len(times) - 1))] * 1e3, 1),
                "html_kb": round(len(r.content) / 1024, 1),
            }
            if label == "uncached":
                out[label]["load_event_ms_median"] = _browser_load(base, key, repeats)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    engine.dispose()
    return out


def _browser_load(base: str, key: str, repeats: int) -> float | None:
    if not Path(CHROMIUM).exists():
        return None
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(f"{base}/console/bids")  # to sign in, and back here after it
        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{base}/console/bids")
        loads = []
        for _ in range(repeats):
            page.goto(f"{base}/console/bids", wait_until="load")
            loads.append(
                page.evaluate(
                    "(() => { const n = performance.getEntriesByType('navigation')[0];"
                    " return n.loadEventEnd - n.startTime; })()"
                )
            )
        browser.close()
    return round(statistics.median(loads), 1)


# -- export -----------------------------------------------------------------------------------


def _aggregate_rows(day: int) -> list[tuple[Any, ...]]:
    """One day of one-minute rows for every group, as the recorder writes them."""
    rows = []
    counts = json.dumps({"online": 90, "stale": 6, "offline": 4}, separators=(",", ":"))
    for minute in range(1440):
        ts = MONTH_START + timedelta(days=day, minutes=minute)
        for g in range(GROUPS):
            x = float(minute + g)
            rows.append((ts, f"group-{g:03d}", 100, counts, *(x + i for i in range(11)), 3, x, x))
    return rows


def fill(url: str, schema: str | None, days: int = 31) -> int:
    """``days`` of aggregates for 100 groups into the database at ``url``; returns rows."""
    from vpp.config import DatabaseSettings
    from vpp.store import db
    from vpp.store.tables import group_aggregates

    engine = db.create_db_engine(DatabaseSettings(url=url, schema_name=schema))  # type: ignore[arg-type]
    db.upgrade(engine)
    names = [c.name for c in group_aggregates.c]
    n = 0
    for day in range(days):
        rows = _aggregate_rows(day)
        n += len(rows)
        if engine.dialect.name == "postgresql":
            raw = engine.raw_connection()
            try:
                cur = raw.cursor()
                with cur.copy(f"COPY group_aggregates ({', '.join(names)}) FROM STDIN") as cp:  # type: ignore[attr-defined]
                    for row in rows:
                        cp.write_row(row)
                raw.commit()
            finally:
                raw.close()
        else:
            # the text SQLAlchemy stores for an instant on SQLite
            plain = [(r[0].strftime("%Y-%m-%d %H:%M:%S.%f"), *r[1:]) for r in rows]
            raw = engine.raw_connection()
            try:
                marks = ", ".join("?" * len(names))
                raw.cursor().executemany(
                    f"INSERT INTO group_aggregates ({', '.join(names)}) VALUES ({marks})", plain
                )
                raw.commit()
            finally:
                raw.close()
    engine.dispose()
    return n


def export_child(url: str, schema: str | None, days: int, out: Path) -> dict[str, Any]:
    """Run ``vpp export`` for ``days`` days in a child process; its time and peak RSS."""
    env = {**os.environ, "VPP_DATABASE__URL": url}
    if schema:
        env["VPP_DATABASE__SCHEMA_NAME"] = schema
    code = (
        "import json, resource, sys, time\n"
        "t0 = time.perf_counter()\n"
        "from vpp.cli.main import app\n"
        "t1 = time.perf_counter()\n"
        "try:\n"
        "    app(sys.argv[1:], standalone_mode=False)\n"
        "finally:\n"
        "    t2 = time.perf_counter()\n"
        # VmHWM: this process's own peak (ru_maxrss would carry the parent's over exec)
        "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "    print(json.dumps({'import_s': t1 - t0, 'export_s': t2 - t1,"
        " 'rss_kb': int(hwm.split()[1])}), file=sys.stderr)\n"
    )
    start = MONTH_START
    end = start + timedelta(days=days)
    t0 = time.perf_counter()
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "export",
            "--from",
            start.isoformat(),
            "--to",
            end.isoformat(),
            "--out",
            str(out),
            "--kinds",
            "telemetry-aggregates",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(res.stderr)
    child = json.loads(res.stderr.strip().splitlines()[-1])
    rows = days * 1440 * GROUPS
    return {
        "days": days,
        "rows": rows,
        "export_s": round(child["export_s"], 2),
        "rows_per_s": round(rows / child["export_s"]),
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(child["rss_kb"] / 1024, 1),
        "parquet_mb": round(sum(p.stat().st_size for p in out.rglob("*.parquet")) / 2**20, 1),
    }


def export_bench(url: str, schema: str | None, tmp: Path, smoke: bool = False) -> dict[str, Any]:
    """A week and a month exported (a day and two in smoke mode)."""
    short, long = (1, 2) if smoke else (7, 31)
    t0 = time.perf_counter()
    rows = fill(url, schema, long)
    fill_s = time.perf_counter() - t0
    week = export_child(url, schema, short, tmp / "week")
    month = export_child(url, schema, long, tmp / "month")
    return {
        "rows_in_store": rows,
        "fill_s": round(fill_s, 1),
        "week": week,
        "month": month,
        "peak_rss_month_over_week": round(month["peak_rss_mb"] / week["peak_rss_mb"], 3),
    }


def _postgres_schema() -> tuple[str, str] | None:
    import sqlalchemy as sa

    url = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    schema = f"bench_console_{os.getpid()}"
    try:
        admin = sa.create_engine(url)
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        admin.dispose()
    except sa.exc.OperationalError:
        return None
    return url, schema


def _drop_schema(url: str, schema: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bids", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--skip-postgres", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks it still runs")
    args = ap.parse_args()
    if args.smoke:
        args.bids, args.repeats = 20, 1
    out: dict[str, Any] = {
        "goals": {"server_ms": 300, "load_event_ms": 1000, "export_rows_per_s": 1_000_000}
    }
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        out["bids_page"] = bids_page(args.bids, args.repeats, tmp)
        out["export_sqlite"] = export_bench(
            f"sqlite:///{tmp}/history.db", None, tmp / "sq", args.smoke
        )
        pg = None if args.skip_postgres else _postgres_schema()
        if pg is not None:
            try:
                out["export_postgres"] = export_bench(pg[0], pg[1], tmp / "pg", args.smoke)
            finally:
                with contextlib.suppress(Exception):
                    _drop_schema(*pg)
    out["benchmark_peak_rss_mb"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
