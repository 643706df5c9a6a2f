"""Readers cannot take what the control loop needs: no page or route blocks the engine's
event loop, the API's connections are a pool apart from the engine's (exhausted, a reader
gets 503 at once and the engine still writes), and one key's requests in flight are
bounded (429)."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from tests.conftest import PG_BASE_URL
from vpp.api.app import create_app
from vpp.config import load_settings
from vpp.runtime import Engine
from vpp.store import db, ledger
from vpp.store.keys import KeyStore
from vpp.store.ledger import LedgerEntry

# In-memory work only (a snapshot already built, the process's metrics): may stay async.
ASYNC_READS = {"/livez", "/readyz", "/metrics", "/docs", "/api/v1/fleet", "/api/v1/fleet/groups"}


def test_no_read_route_or_page_runs_on_the_event_loop(tmp_path: Path) -> None:
    """A GET handler that is a coroutine runs on the engine's loop: any query in it stalls
    ingest, dispatch and leadership (the probe's 6.5 s ``/livez``). GET handlers are plain
    functions, which FastAPI runs in its worker threads."""
    engine = Engine(
        load_settings(None, database={"url": f"sqlite:///{tmp_path}/r.db"}), auto_migrate=True
    )
    app = create_app(engine.services)
    offending = [
        r.path
        for r in app.routes
        if isinstance(r, APIRoute)
        and "GET" in r.methods
        and inspect.iscoroutinefunction(r.endpoint)
        and r.path not in ASYNC_READS
    ]
    assert offending == []
    engine.db.dispose()
    engine.api_db.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        database = {"url": f"sqlite:///{tmp_path}/r.db"}
        schema = None
    else:
        schema = f"vpp_readers_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(PG_BASE_URL)
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        admin.dispose()
        database = {"url": PG_BASE_URL, "schema_name": schema}
    settings = load_settings(
        None, database=database, api={"db_pool_size": 2, "db_pool_timeout_s": 0.5}
    )
    eng = Engine(settings, auto_migrate=True)
    db.upgrade(eng.db)
    try:
        yield eng
    finally:
        eng.db.dispose()
        eng.api_db.dispose()
        if schema is not None:
            admin = sa.create_engine(PG_BASE_URL)
            with admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


def test_an_exhausted_reader_pool_answers_503_and_spares_the_engine(engine: Engine) -> None:
    _, key = KeyStore(engine.db).create("viewer", "viewer")
    client = TestClient(create_app(engine.services))
    assert client.get("/api/v1/commands", headers={"X-API-Key": key}).status_code == 200
    # every connection the API may hold (pool + overflow), taken by slow readers
    held = [engine.api_db.connect() for _ in range(4)]
    try:
        t0 = time.monotonic()
        r = client.get("/api/v1/commands", headers={"X-API-Key": key})
        waited = time.monotonic() - t0
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert waited < 5  # the pool timeout (0.5 s), not the engine's 30 s
        # the control loop's pool is untouched: the ledger still takes a dispatch's rows
        now = engine.clock.now()
        rows = [
            LedgerEntry(f"c{k}", "d", f"s{k}", "issued", "pending", 1, 1.0, now, now, now, None)
            for k in range(50)
        ]
        ledger.append(engine.db, rows)
    finally:
        for conn in held:
            conn.close()
    assert client.get("/api/v1/commands", headers={"X-API-Key": key}).json()["count"] == 50


def test_one_key_cannot_hold_more_than_its_share_in_flight(tmp_path: Path) -> None:
    """``api.max_inflight_per_key`` concurrent requests; the next one is 429 at once, and
    another key is served meanwhile."""
    import uvicorn

    settings = load_settings(
        None, database={"url": f"sqlite:///{tmp_path}/r.db"}, api={"max_inflight_per_key": 2}
    )
    engine = Engine(settings, auto_migrate=True)
    db.upgrade(engine.db)
    keys = KeyStore(engine.db)
    _, busy = keys.create("busy", "viewer")
    _, other = keys.create("other", "viewer")
    gate = threading.Event()
    entered = threading.Semaphore(0)
    original = engine.services.bids.list_bids

    def slow_list(*args: object, **kwargs: object) -> object:
        entered.release()
        gate.wait(10)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    engine.services.bids.list_bids = slow_list  # type: ignore[method-assign]
    engine.services.bids.cache_ttl_s = 0.0
    app = create_app(engine.services, max_inflight_per_key=2)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)

    async def scenario() -> tuple[list[int], int, int]:
        task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=20) as client:
            slow = [
                asyncio.create_task(client.get("/api/v1/bids", headers={"X-API-Key": busy}))
                for _ in range(2)
            ]
            for _ in range(2):  # both slow requests are inside the route (a worker thread)
                await asyncio.to_thread(entered.acquire, True, 10)
            third = await client.get("/api/v1/bids", headers={"X-API-Key": busy})
            other_ok = await client.get("/api/v1/commands", headers={"X-API-Key": other})
            gate.set()
            done = [r.status_code for r in await asyncio.gather(*slow)]
        server.should_exit = True
        await task
        return done, third.status_code, other_ok.status_code

    try:
        done, third, other_status = asyncio.run(scenario())
    finally:
        gate.set()
        engine.db.dispose()
        engine.api_db.dispose()
    assert done == [200, 200]
    assert third == 429
    assert other_status == 200
