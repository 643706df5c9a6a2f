"""Dispatch: the split's speed, and a command round trip through a real broker.

(1) Split: ``vpp.dispatch.split.split`` over 10^4, 10^5 and 10^6 sites of a mixed fleet
    (home batteries and C&I, 95 % eligible, SoC spread 5-95 %), a target at 60 % of the
    group's discharge headroom; median of repeated runs, with the ratio to ``numpy.argsort``
    of a same-size float array timed the same way in the same run (the split is a handful
    of vector passes plus a sort, so argsort is its natural yardstick).
(2) Round trip: the real :class:`vpp.dispatch.service.DispatchService` (SQLite ledger,
    Kafka bus) dispatches one group of N sites; simulated gateways in another process
    (``vpp.sim.fleet.handle_commands``, one consumer) apply each command and ack it through
    the same broker (Tansu). Wall time from the first command published to the last ack
    resolved (every command ``acked``, its ack written to the ledger and reflected in the
    twins), and from the dispatch tick's start (split, command creation and the
    ledger-first write of the commands included).

    python benchmarks/dispatch.py [--commands 100000] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._broker import tansu_broker
from vpp.config import (
    BusSettings,
    DatabaseSettings,
    DispatchSettings,
    KafkaSettings,
    TopicSpec,
    TopicsSettings,
)
from vpp.dispatch.split import SplitInput, split

SEED = 7


def _median_s(fn: Any, repeats: int) -> float:
    fn()  # warm caches and allocator
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def split_case(n: int) -> dict[str, Any]:
    rng = np.random.default_rng(n)
    ci = rng.random(n) < 0.25
    capacity = np.where(ci, rng.uniform(200, 1000, n), rng.uniform(5, 15, n))
    p_max = np.where(ci, capacity * rng.uniform(0.25, 0.5, n), rng.uniform(3, 6, n)).round(1)
    inp = SplitInput(
        eligible=rng.random(n) < 0.95,
        soc=rng.uniform(0.05, 0.95, n),
        capacity_kwh=capacity,
        soc_min=np.full(n, 0.05),
        soc_max=np.full(n, 0.95),
        p_charge_max_kw=p_max,
        p_discharge_max_kw=p_max,
        eff_charge=np.full(n, 0.95),
        eff_discharge=np.full(n, 0.95),
    )
    target_kw = 0.6 * float(p_max[inp.eligible].sum())
    result = split(inp, target_kw, 5 / 60, resolution_kw=0.1)
    keys = rng.random(n)
    repeats = 30 if n <= 100_000 else 10
    split_s = _median_s(lambda: split(inp, target_kw, 5 / 60, resolution_kw=0.1), repeats)
    argsort_s = _median_s(lambda: np.argsort(keys), repeats)
    return {
        "sites": n,
        "split_ms": round(split_s * 1e3, 3),
        "argsort_ms": round(argsort_s * 1e3, 3),
        "ratio_to_argsort": round(split_s / argsort_s, 2),
        "allocated_kw": round(result.allocated_kw, 1),
        "target_kw": round(target_kw, 1),
    }


# -- round trip -------------------------------------------------------------------------------


def bus_settings(bootstrap: str, partitions: int) -> BusSettings:
    topics = TopicsSettings(
        commands=TopicSpec(name="bench.commands", partitions=partitions),
        acks=TopicSpec(name="bench.acks", partitions=partitions),
        deadletter=TopicSpec(name="bench.deadletter", partitions=1),
    )
    return BusSettings(
        kind="kafka",
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap,
            client_id="bench-dispatch",
            enable_idempotence=False,  # Tansu does not accept the idempotent producer
            heartbeat_interval_ms=500,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
        ),
        topics=topics,
    )


def gateways(bootstrap: str, n: int, partitions: int, ready: Any, done: Any) -> None:
    """Simulated site gateways (another process): apply commands, ack them, until told."""
    asyncio.run(_gateways(bootstrap, n, partitions, ready, done))


async def _gateways(bootstrap: str, n: int, partitions: int, ready: Any, done: Any) -> None:
    from vpp.bus.kafka import KafkaBus
    from vpp.sim.fleet import CommandFaults, SimulatedFleet, TelemetryFaults, handle_commands
    from vpp.sim.fleet import make_sites as make_sim_sites

    settings = bus_settings(bootstrap, partitions)
    fleet = SimulatedFleet(
        make_sim_sites(n, ["g0"], seed=SEED),
        seed=SEED,
        faults=TelemetryFaults(),
        command_faults=CommandFaults(),
    )
    bus = KafkaBus(settings)
    await bus.start()
    producer = await bus.producer()
    consumer = await bus.consumer([settings.topics.commands.name], "bench-gateways")
    try:
        await consumer.getmany(max_records=1, timeout_s=1.0)  # join the group
        ready.set()
        while not done.is_set():
            records = await consumer.getmany(max_records=50_000, timeout_s=0.05)
            if not records:
                continue
            now = time.time()
            handle_commands(fleet, [r.value for r in records if r.value], now)
            acks = fleet.acks_due(now)
            if acks:
                await producer.send_many(settings.topics.acks.name, acks)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()
        await bus.stop()


def engine_store(n: int, now: float) -> Any:
    """The engine's twins for the gateways' sites, all online at mid SoC."""
    from vpp.sim.fleet import make_sites as make_sim_sites
    from vpp.telemetry.contract import encode_telemetry
    from vpp.telemetry.decode import decode_batch
    from vpp.twins.store import FleetStore

    store = FleetStore()
    sites = make_sim_sites(n, ["g0"], seed=SEED)
    for cfg in sites:
        store.register(cfg)
    stamp = datetime.fromtimestamp(now - 1, UTC)
    cols, _ = decode_batch([encode_telemetry(s.site_id, stamp, 1, 0.5, 0.0) for s in sites])
    store.fold(cols, now)
    store.evaluate(now)
    return store


async def round_trip(bootstrap: str, n: int, partitions: int, db_dir: Path) -> dict[str, Any]:
    from vpp.bus.kafka import KafkaBus
    from vpp.dispatch.service import DispatchService
    from vpp.dispatch.targets import GroupTarget, dispatch_id
    from vpp.store import db

    ctx = mp.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    settings = bus_settings(bootstrap, partitions)
    bus = KafkaBus(settings)
    await bus.start()  # creates the topics before the gateways subscribe
    proc = ctx.Process(target=gateways, args=(bootstrap, n, partitions, ready, done))
    proc.start()
    engine = db.create_db_engine(DatabaseSettings(url=f"sqlite:///{db_dir}/bench.db"))
    db.upgrade(engine)
    store = engine_store(n, time.time())
    service = DispatchService(
        DispatchSettings(tick_s=0.05, ack_timeout_s=20.0, max_attempts=3),
        bus,
        settings.topics,
        db=engine,
        store=lambda: store,
        seed=1,
    )
    marks: dict[str, float] = {}
    publish = service._publish

    async def timed_publish(commands: Any) -> None:
        marks.setdefault("first_publish", time.perf_counter())
        await publish(commands)
        marks["last_publish"] = time.perf_counter()

    service._publish = timed_publish  # type: ignore[method-assign]
    core_tick = service.core.tick

    def timed_tick(now: float) -> Any:
        t0 = time.perf_counter()
        eff = core_tick(now)
        if eff.commands:
            marks.setdefault("dispatch_start", t0)
        return eff

    service.core.tick = timed_tick  # type: ignore[method-assign]
    all_acked = asyncio.Event()
    settle = service._settle

    async def counted_settle(*args: Any) -> None:
        # An ack is resolved once its ledger row is written and the twins reflect it;
        # checked once per ack batch (polling would steal the event loop).
        await settle(*args)
        if service.tracker.counts["acked"] == n:
            marks["last_ack"] = time.perf_counter()
            all_acked.set()

    service._settle = counted_settle  # type: ignore[method-assign]
    try:
        if not await asyncio.to_thread(ready.wait, 120):
            raise RuntimeError(
                "the gateways never joined their group"
                + ("" if proc.is_alive() else f" (their process exited {proc.exitcode})")
            )
        await service.start()
        start = datetime.now(UTC).replace(microsecond=0)
        target_kw = 0.3 * float(store.p_discharge_max_kw.sum())
        service.add_targets(
            [
                GroupTarget(
                    dispatch_id=dispatch_id("g0", start),
                    group="g0",
                    interval_start=start,
                    interval_end=start + timedelta(minutes=5),
                    target_kw=target_kw,
                )
            ]
        )
        deadline = time.monotonic() + 120
        while not all_acked.is_set() and time.monotonic() < deadline:
            if not proc.is_alive():
                raise RuntimeError(f"the gateway process died (exit code {proc.exitcode})")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_acked.wait(), 0.5)
        acked = service.tracker.counts["acked"]
        sent = len(service.tracker.commands)
    finally:
        done.set()
        await service.stop()
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
        await bus.stop()
        engine.dispose()
    if "last_ack" not in marks:
        return {"commands": n, "sent": sent, "acked": acked, "error": "not every command acked"}
    return {
        "commands": n,
        "partitions": partitions,
        "first_publish_to_last_ack_s": round(marks["last_ack"] - marks["first_publish"], 3),
        "dispatch_start_to_last_ack_s": round(marks["last_ack"] - marks["dispatch_start"], 3),
        "split_and_ledger_s": round(marks["first_publish"] - marks["dispatch_start"], 3),
        "publish_s": round(marks["last_publish"] - marks["first_publish"], 3),
        "acked": acked,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commands", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks it still runs")
    args = parser.parse_args()
    sizes = (10_000,) if args.smoke else (10_000, 100_000, 1_000_000)
    commands = min(args.commands, 2_000) if args.smoke else args.commands
    out: dict[str, Any] = {"smoke": args.smoke, "split": [split_case(n) for n in sizes]}
    with tansu_broker() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        out["round_trip"] = asyncio.run(round_trip(bootstrap, commands, args.partitions, Path(tmp)))
    if "error" in out["round_trip"]:
        print(json.dumps(out))
        raise SystemExit(f"round trip failed: {out['round_trip']['error']}")
    million = out["split"][-1]
    out["goals"] = {
        "split_1e6_under_100ms": million["split_ms"] < 100,
        "round_trip_under_3s": out["round_trip"].get("first_publish_to_last_ack_s", 1e9) < 3.0,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
