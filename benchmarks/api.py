"""API throughput and latency: uvicorn, one worker, on loopback, with 10,000 bids in the
store (SQLite) and 100,000 sites in the fleet; a load generator in another process (wrk,
if installed, else a Python asyncio client). Reports requests/s and p50/p99 latency.

Four configurations, each on a fresh server process, so every figure says what it is:

- ``caches_on_quiet``: the response caches as shipped (bid lists memoised until the next
  write, the fleet body serialized once per snapshot); nothing else happening. The
  best case: a single URL is mostly a cache hit.
- ``caches_off_quiet``: the same with both caches disabled (every request queries and
  serializes): what the caches buy.
- ``caches_on_live``: caches on while the engine works: a thread folds telemetry for 10 %
  of the sites and refreshes the hierarchy every second (each refresh is a new snapshot,
  so the fleet cache misses once per second), and writes 10 new bids every 0.5 s (each
  write invalidates the bid-list cache).
- ``caches_off_live``: the worst case: no caches, live refreshes and writes.

Endpoints, each at ``--connections`` (16) concurrent connections:

- ``bids_limit_50`` and ``fleet``: one URL each (``GET /api/v1/bids?limit=50``,
  ``GET /api/v1/fleet``): cache-friendly;
- ``bids_distinct_urls``: 2,000 distinct bid-list URLs (page, group and status filters)
  in rotation: a cache can hold them all but each is hit only every 2,000 requests;
- ``group_sites_distinct_urls``: 1,000 distinct site pages (10 groups × 100 pages of 100
  site aggregates): no response cache at all on this route.

    python benchmarks/api.py [--bids 10000] [--sites 100000] [--seconds 10] [--connections 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(db_path: Path, n_bids: int) -> str:
    """A migrated database with ``n_bids`` bids; returns a viewer key."""
    from market.bids import Bid, BidCurve, Segment
    from market.definitions import Product
    from vpp.config import DatabaseSettings
    from vpp.store import db
    from vpp.store.bids import BidStore
    from vpp.store.keys import KeyStore

    engine = db.create_db_engine(DatabaseSettings(url=f"sqlite:///{db_path}"))  # type: ignore[arg-type]
    db.upgrade(engine)
    store = BidStore(engine)
    start = datetime(2026, 11, 22, tzinfo=UTC)
    batch = []
    for k in range(n_bids):
        t = start + timedelta(minutes=5 * (k // 10))
        group = f"g{k % 10}"
        batch.append(
            Bid(
                bid_id=f"{group}-energy_rt-{t:%Y%m%dT%H%MZ}",
                market="caiso",
                group=group,
                product=Product.ENERGY_RT,
                interval_start=t,
                interval_end=t + timedelta(minutes=5),
                curve=BidCurve(
                    discharge=[Segment(price_per_mwh=40 + i, quantity_mw=0.5) for i in range(4)],
                    charge=[Segment(price_per_mwh=20 - i, quantity_mw=0.25) for i in range(3)],
                ),
            )
        )
        if len(batch) == 1000:
            store.create(batch)
            batch = []
    if batch:
        store.create(batch)
    _, key = KeyStore(engine).create("bench", "viewer")
    engine.dispose()
    return key


class _NoCache(dict):  # type: ignore[type-arg]
    """A response cache that never keeps anything (the ``caches_off`` configurations)."""

    def __setitem__(self, key: object, value: object) -> None:
        return None


def serve(db_path: str, port: int, n_sites: int, caches: bool, live: bool) -> None:
    """The API process: a 100,000-site fleet in memory, the store on SQLite, uvicorn."""
    import threading

    import uvicorn

    from vpp.api.app import create_app
    from vpp.config import DatabaseSettings
    from vpp.fleet.hierarchy import FleetHierarchy
    from vpp.services import Services
    from vpp.store import db
    from vpp.store.bids import BidStore
    from vpp.store.keys import KeyStore
    from vpp.telemetry.contract import encode_telemetry
    from vpp.telemetry.decode import decode_batch
    from vpp.twins.registry import SiteConfig
    from vpp.twins.store import FleetStore

    engine = db.create_db_engine(DatabaseSettings(url=f"sqlite:///{db_path}"))  # type: ignore[arg-type]
    store = FleetStore()
    for i in range(n_sites):
        store.register(
            SiteConfig(
                site_id=f"site-{i:07d}",
                group=f"g{i % 10}",
                capacity_kwh=13.5,
                p_charge_max_kw=5,
                p_discharge_max_kw=5,
            )
        )
    now = time.time()
    ts = datetime.fromtimestamp(now - 1, UTC)
    for lo in range(0, n_sites, 20_000):
        cols, _ = decode_batch(
            [
                encode_telemetry(f"site-{i:07d}", ts, 1, 0.5, 1.0)
                for i in range(lo, min(n_sites, lo + 20_000))
            ]
        )
        store.fold(cols, now)
    store.evaluate(now)
    hier = FleetHierarchy(store)
    hier.refresh(now)
    bids = BidStore(engine, cache_ttl_s=1.0 if caches else 0.0)
    services = Services(
        db=engine,
        keys=KeyStore(engine, ttl_s=60),
        bids=bids,
        fleet=lambda: (hier.latest, store),
    )
    if not caches:
        services.cache = _NoCache()
    if live:
        threading.Thread(target=_live, args=(store, hier, bids, n_sites), daemon=True).start()
    uvicorn.run(
        create_app(services),
        host="127.0.0.1",
        port=port,
        workers=1,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


def _live(store: Any, hier: Any, bids: Any, n_sites: int) -> None:
    """The engine at work beside the API: telemetry folded and the hierarchy refreshed every
    second, 10 bids written every 0.5 s."""
    from market.bids import Bid, BidCurve, Segment
    from market.definitions import Product
    from vpp.telemetry.contract import encode_telemetry
    from vpp.telemetry.decode import decode_batch

    tenth = max(1, n_sites // 10)
    start = datetime(2027, 1, 1, tzinfo=UTC)
    k = 0
    while True:
        tick = time.monotonic()
        now = time.time()
        ts = datetime.fromtimestamp(now - 0.5, UTC)
        lo = (k * tenth) % n_sites
        cols, _ = decode_batch(
            [
                encode_telemetry(f"site-{i:07d}", ts, 2 + k, 0.5, 1.0)
                for i in range(lo, min(n_sites, lo + tenth))
            ]
        )
        store.fold(cols, now)
        store.evaluate(now)
        hier.refresh(now)
        for half in range(2):
            t = start + timedelta(minutes=5 * (2 * k + half))
            bids.create(
                [
                    Bid(
                        bid_id=f"live{g}-energy_rt-{t:%Y%m%dT%H%MZ}",
                        market="caiso",
                        group=f"g{g}",
                        product=Product.ENERGY_RT,
                        interval_start=t,
                        interval_end=t + timedelta(minutes=5),
                        curve=BidCurve(
                            discharge=[Segment(price_per_mwh=50, quantity_mw=0.5)], charge=[]
                        ),
                    )
                    for g in range(10)
                ]
            )
            time.sleep(max(0.0, tick + 0.5 * (half + 1) - time.monotonic()))
        k += 1


def wait_ready(port: int, key: str, timeout_s: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            r = httpx.get(
                f"http://127.0.0.1:{port}/api/v1/fleet", headers={"X-API-Key": key}, timeout=2
            )
            if r.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError("the API did not come up")


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def run_wrk(
    base: str, paths: list[str], key: str, seconds: int, connections: int
) -> dict[str, Any]:
    script: list[str] = []
    if len(paths) > 1:  # rotate through the paths (a Lua request hook)
        quoted = ",".join(json.dumps(p) for p in paths)
        lua = Path(tempfile.mkstemp(suffix=".lua")[1])
        lua.write_text(
            f"paths = {{{quoted}}}\ni = 0\n"
            "request = function()\n  i = i + 1\n"
            '  return wrk.format("GET", paths[(i % #paths) + 1])\nend\n'
        )
        script = ["-s", str(lua)]
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            *script,
            "-H",
            f"X-API-Key: {key}",
            base + paths[0],
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    if "99" not in lat:
        raise RuntimeError(f"wrk reported no latencies:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {
        "requests_per_s": round(rps, 1),
        "p50_ms": _ms(lat["50"]),
        "p99_ms": _ms(lat["99"]),
        "errors": int(non2xx.group(1)) if non2xx else 0,
        "load_generator": "wrk",
    }


def run_python(
    base: str, paths: list[str], key: str, seconds: int, connections: int
) -> dict[str, Any]:
    """Fallback load generator (another process, asyncio + httpx)."""
    import httpx

    async def main() -> tuple[list[float], int]:
        latencies: list[float] = []
        errors = 0
        stop = time.monotonic() + seconds
        async with httpx.AsyncClient(
            headers={"X-API-Key": key}, limits=httpx.Limits(max_connections=connections)
        ) as c:
            turn = 0

            async def worker() -> None:
                nonlocal errors, turn
                while time.monotonic() < stop:
                    turn += 1
                    t = time.perf_counter()
                    r = await c.get(base + paths[turn % len(paths)])
                    latencies.append(time.perf_counter() - t)
                    errors += r.status_code != 200

            await asyncio.gather(*(worker() for _ in range(connections)))
        return latencies, errors

    lats, errors = asyncio.run(main())
    lats.sort()
    return {
        "requests_per_s": round(len(lats) / seconds, 1),
        "p50_ms": round(lats[len(lats) // 2] * 1000, 3),
        "p99_ms": round(lats[int(len(lats) * 0.99)] * 1000, 3),
        "errors": errors,
        "load_generator": "python-httpx",
    }


ENDPOINTS: dict[str, list[str]] = {
    "bids_limit_50": ["/api/v1/bids?limit=50"],
    "fleet": ["/api/v1/fleet"],
    "bids_distinct_urls": [
        f"/api/v1/bids?limit=50&skip={50 * (k % 100)}"
        + (f"&group=g{k // 100 % 10}" if k >= 100 else "")
        + ("&status=draft" if k >= 1100 else "")
        for k in range(2000)
    ],
    "group_sites_distinct_urls": [
        f"/api/v1/fleet/groups/g{k % 10}/sites?limit=100&skip={100 * (k // 10)}"
        for k in range(1000)
    ],
}
CONFIGS = {
    "caches_on_quiet": (True, False),
    "caches_off_quiet": (False, False),
    "caches_on_live": (True, True),
    "caches_off_live": (False, True),
}


def measure(
    args: argparse.Namespace, key: str, db_path: Path, caches: bool, live: bool
) -> dict[str, Any]:
    port = _free_port()
    ctx = mp.get_context("spawn")
    server = ctx.Process(
        target=serve, args=(str(db_path), port, args.sites, caches, live), daemon=True
    )
    server.start()
    try:
        wait_ready(port, key)
        load = run_wrk if shutil.which("wrk") else run_python
        base = f"http://127.0.0.1:{port}"
        results: dict[str, Any] = {}
        for name, paths in ENDPOINTS.items():
            load(base, paths, key, 2, args.connections)  # warm-up
            results[name] = load(base, paths, key, args.seconds, args.connections)
        return results
    finally:
        server.terminate()
        server.join(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bids", type=int, default=10_000)
    parser.add_argument("--sites", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks it still runs")
    args = parser.parse_args()
    if args.smoke:
        args.bids, args.sites, args.seconds, args.connections = 200, 1_000, 1, 4
    tmp = Path(tempfile.mkdtemp(prefix="vpp-api-bench-"))
    try:
        results: dict[str, Any] = {}
        for name, (caches, live) in CONFIGS.items():
            db_path = tmp / f"{name}.db"  # a fresh store each: live writes do not carry over
            key = prepare(db_path, args.bids)
            results[name] = measure(args, key, db_path, caches, live)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    on, off = results["caches_on_quiet"], results["caches_off_quiet"]
    print(
        json.dumps(
            {
                "benchmark": "api",
                "bids": args.bids,
                "sites": args.sites,
                "workers": 1,
                "connections": args.connections,
                "seconds": args.seconds,
                "cpus": os.cpu_count(),
                **results,
                "cache_speedup_quiet": {
                    name: round(on[name]["requests_per_s"] / off[name]["requests_per_s"], 2)
                    for name in ENDPOINTS
                },
                "goals": {
                    "requests_per_s": ">= 2000 (caches_on_quiet, single URLs)",
                    "p99_ms": "< 25",
                },
            }
        )
    )


if __name__ == "__main__":
    main()
