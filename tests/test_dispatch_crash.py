"""Crash safety: the engine (`vpp serve`, real broker, SQLite) is SIGKILLed mid-interval and
restarted. The ledger must show no lost command and no command id with two contents, the
restarted tracker must resume, and every command seen on the bus must be in the ledger."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import free_port
from vpp.config import TopicsSettings
from vpp.store.tables import command_ledger

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def env_for(tmp_path: Path, bootstrap: str, port: int) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "VPP_BUS__KIND": "kafka",
        "VPP_BUS__KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "VPP_BUS__KAFKA__ENABLE_IDEMPOTENCE": "false",
        "VPP_BUS__KAFKA__HEARTBEAT_INTERVAL_MS": "300",
        "VPP_BUS__KAFKA__SESSION_TIMEOUT_MS": "6000",
        "VPP_BUS__KAFKA__REQUEST_TIMEOUT_MS": "10000",
        "VPP_DATABASE__URL": f"sqlite:///{tmp_path}/engine.db",
        "VPP_API__PORT": str(port),
        "VPP_BIDDING__ENABLED": "false",
        "VPP_INGEST__SNAPSHOT_EVERY_S": "2",
        "VPP_SIMULATOR__SITES": "24",
        "VPP_SIMULATOR__TELEMETRY_INTERVAL_S": "0.5",
        "VPP_SIMULATOR__TICK_S": "0.1",
        "VPP_SIMULATOR__FAULTS__ACK_LOSS": "0.2",
        "VPP_SIMULATOR__FAULTS__OFFLINE_PER_HOUR": "0",
        "VPP_SIMULATOR__FAULTS__MALFORMED": "0",
        "VPP_DISPATCH__ACK_TIMEOUT_S": "1.0",
        "VPP_DISPATCH__TICK_S": "0.25",
        "VPP_LOG__LEVEL": "WARNING",
        # Consumer groups of this test only: members of another test's group (a SIGKILLed
        # engine's included) must not take part in this one's rebalances.
        "VPP_INGEST__GROUP_ID": f"crash-ingest-{suffix}",
        "VPP_DISPATCH__CONSUMER_GROUP": f"crash-dispatch-{suffix}",
    }
    env.update(TopicsSettings.renamed(f"crash.{suffix}", partitions=4).environment())
    return env


def vpp(env: dict[str, str], *args: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "vpp", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,
    )


def migrated_with_key(env: dict[str, str]) -> str:
    """The database migrated and an operator key made, both by the CLI; returns the key."""
    subprocess.run(
        [sys.executable, "-m", "vpp", "db", "upgrade"], env=env, check=True, capture_output=True
    )
    created = subprocess.run(
        [sys.executable, "-m", "vpp", "keys", "create", "--role", "operator", "--name", "test"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return created.stdout.strip().splitlines()[-1]


def wait_online(port: int, key: str, sites: int, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            r = httpx.get(
                f"http://127.0.0.1:{port}/api/v1/fleet", headers={"X-API-Key": key}, timeout=2
            )
            if (
                r.status_code == 200
                and r.json()["fleet"]["counts"]["connectivity"]["online"] >= sites
            ):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError("the engine never saw the fleet online")


def ledger_rows(db_path: Path) -> list[Any]:
    engine = sa.create_engine(f"sqlite:///{db_path}")
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.select(command_ledger).order_by(command_ledger.c.seq)))
    finally:
        engine.dispose()


def test_sigkill_mid_interval_loses_nothing_and_resumes(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    port = free_port()
    env = env_for(tmp_path, kafka_bootstrap, port)
    key = migrated_with_key(env)
    engine = vpp(env, "serve")
    sim = vpp(env, "simulate")
    restarted = None
    try:
        wait_online(port, key, 24)
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
        end = start + timedelta(seconds=30)
        r = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/dispatch/targets",
            headers={"X-API-Key": key},
            timeout=10,
            json={
                "group": "north",
                "interval_start": start.isoformat(),
                "duration_s": int((end - start).total_seconds()),
                "target_kw": -30.0,  # within the free sites' P90 charge power
            },
        )
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(ledger_rows(tmp_path / "engine.db")) < 20:
            time.sleep(0.3)
        time.sleep(4)  # well into the interval: commands in flight, retries pending
        engine.send_signal(signal.SIGKILL)
        engine.wait(timeout=10)
        killed_at = datetime.now(UTC)
        before = ledger_rows(tmp_path / "engine.db")
        assert before, "the engine issued nothing before the crash"
        time.sleep(1)
        restarted = vpp(env, "serve")
        wait_online(port, key, 24)
        time.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()) + 4)
    finally:
        for proc in (restarted, sim, engine):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in (restarted, sim, engine):
            if proc is not None:
                try:
                    proc.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.communicate()

    rows = ledger_rows(tmp_path / "engine.db")
    content: dict[str, tuple[Any, ...]] = {}
    final: dict[str, str] = {}
    events: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        key_ = (r.site_id, r.setpoint_kw, r.valid_from, r.valid_until, r.dispatch_id)
        assert content.setdefault(r.command_id, key_) == key_, (
            f"command {r.command_id} sent with two contents"
        )
        final[r.command_id] = r.state
        events[r.command_id].append(r.event)
    # Every command was issued before anything else happened to it, once.
    assert all(evs[0] == "issued" and evs.count("issued") == 1 for evs in events.values())
    # No command is lost: each one ended (the restarted tracker took over the open ones).
    open_ = [cid for cid, s in final.items() if s in ("pending", "acked")]
    assert not open_, f"commands never closed: {open_[:5]}"
    in_flight = {r.command_id for r in before}
    resumed = [
        r for r in rows if r.command_id in in_flight and r.ts.replace(tzinfo=UTC) > killed_at
    ]
    assert resumed, "the restarted engine did nothing with the commands in flight"
    assert {r.event for r in resumed} & {
        "sent",
        "acked",
        "completed",
        "expired",
        "timeout",
        "superseded",
    }
    bus_commands = json.loads(read_bus_commands(env))
    assert bus_commands, "nothing on the command topic"
    for cid, site, setpoint, valid_until in bus_commands:
        assert cid in content, f"command {cid} on the bus is not in the ledger"
        assert content[cid][0] == site and abs(content[cid][1] - setpoint) < 1e-9
        ledger_until = content[cid][3].replace(tzinfo=UTC)
        assert ledger_until == datetime.fromisoformat(valid_until)


def read_bus_commands(env: dict[str, str]) -> str:
    """Every command on the topic (id, site, setpoint, valid_until), via a small script."""
    script = r"""
import asyncio, json, uuid
from vpp.config import load_settings
from vpp.bus import make_bus
from vpp.dispatch.contract import command_decoder

async def main():
    cfg = load_settings()
    bus = make_bus(cfg.bus)
    await bus.start()
    c = await bus.consumer([cfg.bus.topics.commands.name], f"reader-{uuid.uuid4().hex[:6]}")
    seen, idle = [], 0
    while idle < 6:
        recs = await c.getmany(max_records=10000, timeout_s=0.5)
        idle = 0 if recs else idle + 1
        for r in recs:
            cmd = command_decoder.decode(r.value)
            seen.append([cmd.command_id, cmd.site_id, cmd.setpoint_kw, cmd.valid_until.isoformat()])
    await c.stop()
    await bus.stop()
    print(json.dumps(seen))

asyncio.run(main())
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]
