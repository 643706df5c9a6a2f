"""Readers against the control loop: does a crowd of viewers delay the engine?

The whole engine (``vpp serve --simulate``'s wiring: embedded bus, the simulated fleet, ingest,
dispatch, the scheduler, the API and console) runs in a child process on a database whose
command ledger already holds ``--ledger-rows`` rows (1.5 M by default: the size at which the
probe saw one ``/console/dispatch`` load take 5-6 s and block ``/livez`` for 6.5 s). Two
phases of ``--seconds`` each, measured in the same run:

- quiet: only a probe that asks ``/livez`` every 50 ms (the engine's liveness as a load
  balancer sees it);
- readers: the same probe while ``--viewers`` console sessions load ``/console/dispatch``
  and ``--api-readers`` API clients page ``/api/v1/commands``, each as fast as it is
  answered.

Reported per phase: ``/livez`` p50/p99/max (the API's own loop, as a load balancer sees
it), the control loop's lag p50/p99/max (how late the engine's loop woke its heartbeat:
what the readers cost ingest, dispatch and bidding themselves), the readers' p50/p99 and
status counts (429 and 503 are the bounds working), the site events the engine recorded (a
site turning stale or offline: its telemetry was not folded in time) and the engine's
ERROR log records. Goals: ``/livez`` p99 < 50 ms and control-loop lag p99 < 50 ms with
readers, no more stale/offline events than quiet, 0 engine errors.

    python -m benchmarks.readers [--ledger-rows 1500000] [--seconds 30] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing as mp
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._broker import _free_port  # noqa: E402


def prefill(url: str, rows: int) -> str:
    """The ledger at ``rows`` rows (five per command, a day old); an operator key."""
    from vpp.config import DatabaseSettings
    from vpp.store import db, ledger
    from vpp.store.keys import KeyStore
    from vpp.store.ledger import LedgerEntry

    engine = db.create_db_engine(DatabaseSettings(url=url))  # type: ignore[arg-type]
    db.upgrade(engine)
    at = datetime.now(UTC) - timedelta(days=1)
    events = (("issued", "pending"), ("sent", "pending"), ("acked", "acked"))
    events += (("sent", "acked"), ("completed", "completed"))
    batch = 50_000
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        entries = [
            LedgerEntry(
                f"{(start + k) // 5:08d}-0000-7000-8000-000000000000",
                f"g{k % 2}-{at:%Y%m%dT%H%MZ}",
                f"site-{(start + k) // 5 % 5000:05d}",
                events[(start + k) % 5][0],
                events[(start + k) % 5][1],
                1,
                1.0,
                at,
                at + timedelta(minutes=5),
                at,
                None,
            )
            for k in range(n)
        ]
        ledger.append(engine, entries)
    _, key = KeyStore(engine).create("bench-viewer", "viewer")
    engine.dispose()
    return key


def engine_process(url: str, port: int, seconds: float, out: Any) -> None:
    """The engine, wired as ``vpp serve --simulate``; its ERROR records counted."""
    from vpp.config import load_settings
    from vpp.logs import configure
    from vpp.wiring import build_engine

    configure("WARNING", True)
    import os

    if os.environ.get("SWITCH"):
        sys.setswitchinterval(float(os.environ["SWITCH"]))
    errors: list[str] = []

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                errors.append(record.getMessage()[:200])

    logging.getLogger().addHandler(Count())
    cfg = load_settings(
        None,
        database={"url": url},
        api={"port": port},
        simulator={"sites": 500, "telemetry_interval_s": 2.0},
        bidding={"enabled": False},
    )
    engine = build_engine(cfg, simulate=True, auto_migrate=True)
    asyncio.run(engine.run(seconds))
    beats = list(engine.heartbeat.samples)  # (wall epoch, lag s) of the control loop
    out.put({"errors": len(errors), "first_errors": errors[:5], "beats": beats})


def loop_lag(beats: list[tuple[float, float]], since: datetime, until: datetime) -> dict[str, Any]:
    """The control loop's lag (vpp.heartbeat) over one phase: what readers cost the engine
    itself, as opposed to what /livez's latency says of the API's own loop."""
    a, b = since.timestamp(), until.timestamp()
    lags = [lag for t, lag in beats if a <= t < b]
    return {
        "p50": _pct(lags, 50),
        "p99": _pct(lags, 99),
        "max": _pct(lags, 100),
        "beats": len(lags),
    }


def _pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)) * 1e3, 1) if xs else None


async def phase(
    base: str, key: str, seconds: float, viewers: int, api_readers: int
) -> dict[str, Any]:
    livez: list[float] = []
    reads: list[float] = []
    statuses: dict[int, int] = {}
    stop = time.monotonic() + seconds

    async def probe(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            r = await client.get("/livez")
            livez.append(time.perf_counter() - t0)
            assert r.status_code == 200
            await asyncio.sleep(0.05)

    async def read(client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> None:
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                r = await client.get(path, headers=headers)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            except httpx.HTTPError:
                statuses[0] = statuses.get(0, 0) + 1
            reads.append(time.perf_counter() - t0)

    async def viewer() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=60) as c:
            form = (await c.get("/console/login")).text
            token = form.split('name="csrf" value="')[1].split('"')[0]
            await c.post("/console/login", data={"api_key": key, "csrf": token})
            await read(c, "/console/dispatch", {})

    async def api_reader() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=60) as c:
            await read(c, "/api/v1/commands?limit=100", {"X-API-Key": key})

    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        await asyncio.gather(
            probe(client),
            *(viewer() for _ in range(viewers)),
            *(api_reader() for _ in range(api_readers)),
        )
    return {
        "livez_ms": {"p50": _pct(livez, 50), "p99": _pct(livez, 99), "max": _pct(livez, 100)},
        "livez_samples": len(livez),
        "reader_ms": {"p50": _pct(reads, 50), "p99": _pct(reads, 99)} if reads else None,
        "reader_requests": len(reads),
        "reader_statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


def site_events(url: str, since: datetime, until: datetime) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        n = conn.execute(
            sa.text(
                "SELECT count(*) FROM site_events WHERE ts >= :a AND ts < :b "
                "AND to_state IN ('stale', 'offline')"
            ),
            {"a": since.replace(tzinfo=None), "b": until.replace(tzinfo=None)},
        ).scalar_one()
    engine.dispose()
    return int(n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ledger-rows", type=int, default=1_500_000)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--viewers", type=int, default=10)
    ap.add_argument("--api-readers", type=int, default=30)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks it still runs")
    args = ap.parse_args()
    if args.smoke:
        args.ledger_rows, args.seconds, args.viewers, args.api_readers = 20_000, 4.0, 2, 4
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/readers.db"
        t0 = time.perf_counter()
        key = prefill(url, args.ledger_rows)
        fill_s = time.perf_counter() - t0
        port = _free_port()
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        warmup = 8.0 if not args.smoke else 4.0
        total = warmup + 2 * args.seconds + 5
        proc = ctx.Process(target=engine_process, args=(url, port, total, out))
        proc.start()
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            if not proc.is_alive():
                raise SystemExit(f"the engine process exited ({proc.exitcode}) before serving")
            try:
                if httpx.get(f"{base}/livez", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("the engine did not serve /livez within 60 s")
            time.sleep(0.2)
        time.sleep(warmup)  # the fleet reports and settles
        marks = [datetime.now(UTC)]
        quiet = asyncio.run(phase(base, key, args.seconds, 0, 0))
        marks.append(datetime.now(UTC))
        loaded = asyncio.run(phase(base, key, args.seconds, args.viewers, args.api_readers))
        marks.append(datetime.now(UTC))
        proc.join(timeout=total + 60)
        if proc.is_alive():
            proc.kill()
            raise SystemExit("the engine did not stop")
        engine_out = out.get(timeout=10)
        quiet["stale_or_offline_events"] = site_events(url, marks[0], marks[1])
        loaded["stale_or_offline_events"] = site_events(url, marks[1], marks[2])
        quiet["control_loop_lag_ms"] = loop_lag(engine_out["beats"], marks[0], marks[1])
        loaded["control_loop_lag_ms"] = loop_lag(engine_out["beats"], marks[1], marks[2])
    p99 = loaded["livez_ms"]["p99"]
    lag99 = loaded["control_loop_lag_ms"]["p99"]
    result = {
        "benchmark": "readers",
        "smoke": args.smoke,
        "ledger_rows": args.ledger_rows,
        "prefill_s": round(fill_s, 1),
        "seconds_per_phase": args.seconds,
        "viewers": args.viewers,
        "api_readers": args.api_readers,
        "quiet": quiet,
        "readers": loaded,
        "engine_errors": engine_out["errors"],
        "first_engine_errors": engine_out["first_errors"],
        "livez_p99_ratio_readers_to_quiet": round(p99 / quiet["livez_ms"]["p99"], 2)
        if p99 and quiet["livez_ms"]["p99"]
        else None,
        "goals": {
            "livez_p99_ms_under_50": bool(p99 is not None and p99 < 50),
            "control_loop_lag_p99_ms_under_50": bool(lag99 is not None and lag99 < 50),
            "no_stale_events_caused_by_readers": loaded["stale_or_offline_events"]
            <= quiet["stale_or_offline_events"],
            "no_engine_errors": engine_out["errors"] == 0,
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
