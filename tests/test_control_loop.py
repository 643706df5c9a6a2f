"""The API on a loop of its own: a reader cannot hold the control loop, a wedged control
loop is not reported alive, and an operator's change still reaches dispatch.

The whole engine (embedded bus, SQLite, simulated fleet, dispatch, the API on a real port)
runs in this process; the stalls are made on purpose with a blocking call on one loop
while the other is watched."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port
from vpp.config import load_settings
from vpp.runtime import Engine
from vpp.store.keys import KeyStore
from vpp.wiring import build_engine


@asynccontextmanager
async def running(tmp_path: Path, **api: Any) -> AsyncIterator[tuple[Engine, str]]:
    cfg = load_settings(
        None,
        database={"url": f"sqlite:///{tmp_path}/e.db"},
        api={"port": free_port(), **api},
        simulator={"sites": 20, "telemetry_interval_s": 1.0},
        bidding={"enabled": False},
    )
    engine = build_engine(cfg, simulate=True, auto_migrate=True)
    await engine.start()
    try:
        assert engine.api_url is not None
        yield engine, engine.api_url
    finally:
        await engine.stop()


def test_a_blocked_api_loop_does_not_delay_the_control_loop(tmp_path: Path) -> None:
    """A handler that blocks the API's loop for 1.5 s (a slow page, a flood of parsing)
    held every command and heartbeat of the engine when both were one loop."""

    async def main() -> float:
        async with running(tmp_path) as (engine, _):
            assert engine.api_loop is not None
            assert engine.api_loop is not asyncio.get_running_loop()
            before = len(engine.heartbeat.samples)

            async def hog() -> None:
                time.sleep(1.5)  # noqa: ASYNC251  (blocks the API loop, on purpose)

            blocked = asyncio.run_coroutine_threadsafe(hog(), engine.api_loop)
            await asyncio.wrap_future(blocked)
            lags = [lag for _, lag in list(engine.heartbeat.samples)[before:]]
            assert len(lags) >= 5  # the control loop kept beating all along
            return max(lags)

    assert asyncio.run(main()) < 1.0  # one loop: >= 1.5 s


def test_livez_answers_while_the_control_loop_is_wedged_and_says_so(tmp_path: Path) -> None:
    async def main() -> tuple[int, dict[str, Any], float, int]:
        async with running(tmp_path, livez_max_lag_s=0.5) as (_, url):
            async with httpx.AsyncClient(base_url=url, timeout=5) as client:
                assert (await client.get("/livez")).json() == {"status": "ok"}

            def probe() -> tuple[int, dict[str, Any], float]:
                time.sleep(1.0)  # the control loop is blocked by then
                r = httpx.get(f"{url}/livez", timeout=5)
                return r.status_code, r.json(), time.monotonic()

            loop = asyncio.get_running_loop()
            answer = loop.run_in_executor(None, probe)
            await asyncio.sleep(0.05)
            time.sleep(3.0)  # noqa: ASYNC251  (wedges the control loop, on purpose)
            unblocked = time.monotonic()
            status, body, answered_at = await answer
            await asyncio.sleep(0.3)  # beating again
            async with httpx.AsyncClient(base_url=url, timeout=5) as client:
                after = (await client.get("/livez")).status_code
            assert answered_at < unblocked  # the API answered during the wedge
            return status, body, unblocked - answered_at, after

    status, body, _, after = asyncio.run(main())
    assert status == 503 and body["status"] == "stalled"
    assert body["control_loop_silent_s"] >= 0.5
    assert after == 200


def test_an_operators_target_reaches_dispatch_on_the_control_loop(tmp_path: Path) -> None:
    """Scheduling and cancelling a manual target over HTTP: the check and the change run
    on the control loop (the dispatch service's lock and producer live there)."""

    async def main() -> None:
        async with running(tmp_path) as (engine, url):
            _, key = await asyncio.to_thread(KeyStore(engine.db).create, "alice", "operator")
            dispatch = engine.services.dispatch
            assert dispatch is not None
            start = (engine.clock.now() + timedelta(minutes=10)).replace(second=0, microsecond=0)
            body = {
                "group": "north",
                "interval_start": start.isoformat(),
                "duration_s": 300,
                "target_kw": -5.0,
            }
            headers = {"X-API-Key": key}
            async with httpx.AsyncClient(base_url=url, timeout=10, headers=headers) as c:
                r = await c.post("/api/v1/dispatch/targets", json=body)
                assert r.status_code == 201, r.text
                made = r.json()["dispatch_id"]
                assert dispatch.deliveries[made].target.source == "manual"
                clash = await c.post("/api/v1/dispatch/targets", json={**body, "target_kw": -3.0})
                assert clash.status_code == 409, clash.text
                gone = await c.delete(f"/api/v1/dispatch/targets/{made}")
                assert gone.status_code == 204, gone.text
                assert made not in dispatch.deliveries
                ready = await c.get("/readyz")  # the bus is asked on its own loop
                assert ready.status_code == 200 and ready.json()["checks"]["bus"] is True

    asyncio.run(main())
