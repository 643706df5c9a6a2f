"""Slow clients cannot hold the API's connections: a request must arrive whole (line,
headers, body) within ``api.request_timeout_s``, kept-alive connections included, and the
server holds at most ``api.max_connections`` at once (503 beyond)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn

from vpp.api.app import create_app
from vpp.api.server import server_options
from vpp.config import load_settings
from vpp.runtime import Engine
from vpp.store import db


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[int]:
    engine = Engine(load_settings(None, database={"url": f"sqlite:///{tmp_path}/s.db"}))
    db.upgrade(engine.db)
    config = uvicorn.Config(
        create_app(engine.services),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        **server_options(request_timeout_s=0.5, max_connections=4),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task
        engine.db.dispose()
        engine.api_db.dispose()


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    """Seconds until the server closes the connection (EOF), at most ``seconds``."""
    t0 = time.monotonic()
    await asyncio.wait_for(reader.read(), seconds)
    return time.monotonic() - t0


async def test_slow_headers_and_slow_bodies_are_cut_off(served: int) -> None:
    # headers trickling in, never finished
    r1, w1 = await asyncio.open_connection("127.0.0.1", served)
    w1.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
    await w1.drain()
    # a body announced at 100 bytes, 10 sent
    r2, w2 = await asyncio.open_connection("127.0.0.1", served)
    w2.write(b"POST /api/v1/bids HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
    await w2.drain()
    # a connection that sends nothing at all
    r3, w3 = await asyncio.open_connection("127.0.0.1", served)
    waited = await asyncio.gather(*(_closed_within(r, 5.0) for r in (r1, r2, r3)))
    assert all(w < 2.0 for w in waited), waited
    for w in (w1, w2, w3):
        w.close()


async def test_a_prompt_client_keeps_its_connection_for_several_requests(served: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    for _ in range(3):
        writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert head.startswith(b"HTTP/1.1 200")
        length = int(
            next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
            .split(b":")[1]
            .strip()
        )
        await reader.readexactly(length)
        await asyncio.sleep(0.3)  # idle between requests, under the deadline
    writer.close()


async def test_beyond_the_connection_cap_requests_get_503(served: int) -> None:
    held = [await asyncio.open_connection("127.0.0.1", served) for _ in range(4)]
    for _, w in held:
        w.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n")  # each holds a slot (unfinished)
        await w.drain()
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert head.startswith(b"HTTP/1.1 503")
    for _, w in [*held, (reader, writer)]:
        w.close()
