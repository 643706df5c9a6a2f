"""API throughput and latency: uvicorn, one worker, on loopback, with 10,000 bids in the
store (SQLite) and 100,000 sites in the fleet; a load generator in another process (wrk,
if installed, else a Python asyncio client) against ``GET /api/v1/bids?limit=50`` and
``GET /api/v1/fleet`` in turn. Reports requests/s and p50/p99 latency for each.

Each endpoint is measured at ``--connections`` (16) concurrent connections — the goals
apply there — and at twice that, to show how latency grows with queueing.

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


def serve(db_path: str, port: int, n_sites: int) -> None:
    """The API process: a 100,000-site fleet in memory, the store on SQLite, uvicorn."""
    import uvicorn

    from tests.api_support import make_fleet  # noqa: F401 - same helpers as the tests
    from vpp.api.app import create_app
    from vpp.api.services import Services
    from vpp.config import DatabaseSettings
    from vpp.fleet.hierarchy import FleetHierarchy
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
    services = Services(
        db=engine,
        keys=KeyStore(engine, ttl_s=60),
        bids=BidStore(engine),
        fleet=lambda: (hier.latest, store),
    )
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


def run_wrk(url: str, key: str, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-H",
            f"X-API-Key: {key}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {
        "requests_per_s": round(rps, 1),
        "p50_ms": _ms(lat["50"]),
        "p99_ms": _ms(lat["99"]),
        "errors": int(non2xx.group(1)) if non2xx else 0,
        "load_generator": "wrk",
    }


def run_python(url: str, key: str, seconds: int, connections: int) -> dict[str, float]:
    """Fallback load generator (another process, asyncio + httpx)."""
    import httpx

    async def main() -> tuple[list[float], int]:
        latencies: list[float] = []
        errors = 0
        stop = time.monotonic() + seconds
        async with httpx.AsyncClient(
            headers={"X-API-Key": key}, limits=httpx.Limits(max_connections=connections)
        ) as c:

            async def worker() -> None:
                nonlocal errors
                while time.monotonic() < stop:
                    t = time.perf_counter()
                    r = await c.get(url)
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bids", type=int, default=10_000)
    parser.add_argument("--sites", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vpp-api-bench-"))
    db_path = tmp / "bench.db"
    key = prepare(db_path, args.bids)
    port = _free_port()
    ctx = mp.get_context("spawn")
    server = ctx.Process(target=serve, args=(str(db_path), port, args.sites), daemon=True)
    server.start()
    try:
        wait_ready(port, key)
        load = run_wrk if shutil.which("wrk") else run_python
        results: dict[str, Any] = {}
        for name, path in (("bids_limit_50", "/api/v1/bids?limit=50"), ("fleet", "/api/v1/fleet")):
            url = f"http://127.0.0.1:{port}{path}"
            load(url, key, 2, args.connections)  # warm-up
            results[name] = load(url, key, args.seconds, args.connections)
            results[f"{name}_at_{2 * args.connections}_connections"] = load(
                url, key, args.seconds, 2 * args.connections
            )
    finally:
        server.terminate()
        server.join(10)
        shutil.rmtree(tmp, ignore_errors=True)
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
                "goals": {"requests_per_s": ">= 2000", "p99_ms": "< 25"},
            }
        )
    )


if __name__ == "__main__":
    main()
