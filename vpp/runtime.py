"""The engine process: wires bus, database, components and the API, and runs them.

Start order is upstream to downstream (bus and database, then the components in the order
they were added, then the API); stop is the reverse, each step in ``finally`` so a failing
component never leaves the bus or the database open.

Two event loops. The *control loop* (the one :meth:`Engine.run` runs on) carries ingest,
dispatch, bidding, leadership and the bus. The API and the console are served by uvicorn
on a loop of their own in the ``api`` thread, with their own database pool: a reader's
request parsing, its awaits and a handler that blocks cannot hold a command, a heartbeat
or a submission. The API reaches the control loop only to change live state (an
operator's target or plan, the bus's readiness), through :meth:`Services.on_control`.
What is left shared is the interpreter lock; the heartbeat (:mod:`vpp.heartbeat`)
measures what it still costs the control loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import sqlalchemy as sa
import uvicorn

from vpp.bus import Bus, make_bus
from vpp.clock import Clock, WallClock
from vpp.config import Settings
from vpp.heartbeat import Heartbeat
from vpp.services import Services
from vpp.store import db
from vpp.store.bids import BidStore
from vpp.store.keys import KeyStore

log = logging.getLogger(__name__)


class Component(Protocol):
    """A long-running part of the engine (ingest, simulator, scheduler, dispatch...)."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


class _ApiServer(uvicorn.Server):
    """uvicorn on the API's own loop; the engine, not uvicorn, owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Engine:
    def __init__(
        self, settings: Settings, *, auto_migrate: bool = False, clock: Clock | None = None
    ) -> None:
        self.settings = settings
        self.auto_migrate = auto_migrate
        self.clock: Clock = clock or WallClock()
        self.bus: Bus = make_bus(settings.bus)
        self.db: sa.Engine = db.create_db_engine(settings.database)
        # The API and the console read and write through a pool of their own: a crowd of
        # viewers waits for (or is refused) its connections, never the control loop's.
        self.api_db: sa.Engine = db.create_db_engine(
            settings.database,
            pool_size=settings.api.db_pool_size,
            pool_timeout_s=settings.api.db_pool_timeout_s,
        )
        self.components: list[Component] = []
        # the bidder's store (control loop) and the API's, on their own pools; an operator's
        # change through the API refreshes the bidder's view at once (the other way round,
        # the API's cache lags by at most its TTL, as between instances)
        self.bids = BidStore(self.db, four_eyes=settings.api.four_eyes, clock=self.clock.now)
        api_bids = BidStore(self.api_db, four_eyes=settings.api.four_eyes, clock=self.clock.now)
        api_bids.listeners.append(self.bids.changed)
        self.services = Services(
            db=self.api_db,
            keys=KeyStore(self.api_db),
            bids=api_bids,
            readiness=self.readiness,
            clock=self.clock.now,
        )
        self.heartbeat = Heartbeat()
        self.services.heartbeat = self.heartbeat
        self.services.livez_max_lag_s = settings.api.livez_max_lag_s
        self.started_at = time.monotonic()
        self._api: _ApiServer | None = None
        self._api_thread: threading.Thread | None = None
        self._api_error: BaseException | None = None
        self.api_loop: asyncio.AbstractEventLoop | None = None  # the API thread's loop
        self._api_url: str | None = None
        self._started: list[Component] = []
        self._stop = asyncio.Event()

    def add(self, component: Component) -> None:
        self.components.append(component)

    def component(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)

    @property
    def api_url(self) -> str | None:
        return self._api_url

    async def start(self, *, api: bool = True) -> None:
        self.services.control_loop = asyncio.get_running_loop()
        await self.heartbeat.start()
        if self.auto_migrate:
            await asyncio.to_thread(db.upgrade, self.db)
        else:
            await asyncio.to_thread(db.check_schema, self.db)
        await self.bus.start()
        await self.bus.ensure_topics(self.settings.bus.topics.all())
        for component in self.components:
            await component.start()
            self._started.append(component)
            log.info("started %s", component.name)
        if api:
            await self._start_api()

    async def _start_api(self) -> None:
        from vpp.api.app import create_app
        from vpp.api.server import server_options

        config = uvicorn.Config(
            create_app(
                self.services,
                max_body_bytes=self.settings.api.max_body_bytes,
                max_inflight_per_key=self.settings.api.max_inflight_per_key,
                secure_cookies=self.settings.api.secure_cookies,
            ),
            host=self.settings.api.host,
            port=self.settings.api.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            **server_options(
                self.settings.api.request_timeout_s, self.settings.api.max_connections
            ),
        )
        server = self._api = _ApiServer(config)

        async def on_api_loop() -> None:
            import anyio.to_thread

            self.api_loop = asyncio.get_running_loop()
            # the threads sync handlers and pages run in (anyio's default is 40): each one
            # contends with the control loop for the interpreter lock
            limiter = anyio.to_thread.current_default_thread_limiter()
            limiter.total_tokens = self.settings.api.worker_threads
            await server.serve()

        def serve() -> None:
            try:
                asyncio.run(on_api_loop())  # the API's own loop, for the thread's life
            except BaseException as exc:  # uvicorn exits on a failed bind: keep why
                self._api_error = exc

        self._api_thread = threading.Thread(target=serve, name="api", daemon=True)
        self._api_thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._api_thread.is_alive():
                raise RuntimeError(
                    f"API did not start on {self.settings.api.host}:{self.settings.api.port}"
                    + (f": {self._api_error!r}" if self._api_error is not None else "")
                )
            if time.monotonic() > deadline:
                raise RuntimeError("API did not start within 10 s")
            await asyncio.sleep(0.02)
        host, port = self._api.servers[0].sockets[0].getsockname()[:2]
        self._api_url = f"http://{host}:{port}"
        log.info("API listening on %s", self.api_url)

    async def stop(self) -> None:
        try:
            if self._api is not None and self._api_thread is not None:
                self._api.should_exit = True
                await asyncio.to_thread(self._api_thread.join, 10)
                self._api_url = None
        finally:
            try:
                while self._started:
                    component = self._started.pop()
                    try:
                        await component.stop()
                    except Exception:
                        log.exception("stopping %s failed", component.name)
            finally:
                try:
                    await self.bus.stop()
                finally:
                    await self.heartbeat.stop()
                    self.db.dispose()
                    self.api_db.dispose()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(
        self,
        duration_s: float | None = None,
        on_tick: Callable[[Engine], None] | None = None,
        tick_s: float = 1.0,
    ) -> None:
        """Start, run until Ctrl-C / SIGTERM / ``duration_s``, stop cleanly."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        deadline = None if duration_s is None else time.monotonic() + duration_s
        try:
            await self.start()
            while not self._stop.is_set():
                timeout = tick_s
                if deadline is not None:
                    timeout = min(timeout, max(0.0, deadline - time.monotonic()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout)
                if on_tick is not None:
                    on_tick(self)
                if deadline is not None and time.monotonic() >= deadline:
                    break
        finally:
            await self.stop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)

    async def readiness(self) -> dict[str, bool]:
        bus_ok = await self.bus.healthy()
        db_ok = await asyncio.to_thread(db.ping, self.db)
        return {"bus": bus_ok, "database": db_ok}

    def status(self) -> dict[str, Any]:
        speed = getattr(self.clock, "speed", 1.0)
        return {
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "clock": self.clock.now().strftime("%Y-%m-%d %H:%M:%S UTC")
            + (f" (simulated, ×{speed:g})" if speed != 1.0 else ""),
            "bus": self.bus.kind,
            "api": self.api_url,
            **{c.name: c.status() for c in self._started},
        }
