"""Many ingest instances on one consumer group, through a real broker (Tansu), measured.

Throughput: a preloaded backlog (``--messages`` readings of ``--sites`` sites, 12
telemetry partitions) drained by 1, 2 and 3 instances, each a separate process running
the engine's own :class:`vpp.ingest.loop.Ingest` (decode, validate, fold, refresh, publish
its partial aggregates). Each configuration gets its own topics and consumer group, so
each drains the same backlog from the start. Figures: messages/s from the first message
folded to the last, and each instance's CPU (its own user+system seconds over the wall
time of the drain). This machine has 2 cores shared by the broker, the instances and this
process: with 3 instances the scaling is sub-linear by construction; the numbers say how
much.

Fail-over: with 3 instances drained and publishing partials every second, one is killed
with SIGKILL. Measured from the kill, in a fourth process's combined view
(:class:`vpp.fleet.combined.FleetView`):

- ``complete_again_s``: until every partition is reported by a live instance again (the
  group's session timeout, ``kafka.session_timeout_ms`` = 10 s by default, then the
  rebalance, then the new owners' first partials); measured at the shipped 10 s session
  and at 3 s;
- ``values_again_s``: until the view's expected discharge energy is back to its value
  before the kill (within 1e-6): the new owners have replayed the partitions they took
  over (no snapshot database here, so from the start of each partition).

    python benchmarks/scaleout.py [--messages 1200000] [--sites 60000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import signal
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._broker import tansu_broker
from benchmarks.ingest import messages, sites
from vpp.config import (
    BusSettings,
    IngestSettings,
    KafkaSettings,
    TopicSpec,
    TopicsSettings,
)

PARTITIONS = 12


def _settings(bootstrap: str, suffix: str, session_timeout_ms: int = 10_000) -> BusSettings:
    return BusSettings(
        kind="kafka",
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap,
            enable_idempotence=False,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=500,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
        ),
        topics=TopicsSettings.renamed(f"so.{suffix}", partitions=4).model_copy(
            update={"telemetry": TopicSpec(name=f"so.{suffix}.telemetry", partitions=PARTITIONS)}
        ),
    )


def _ingest_settings(suffix: str) -> IngestSettings:
    return IngestSettings(
        group_id=f"so-ingest-{suffix}",
        batch_max_records=50_000,
        replay_window_s=10 * 86400 * 365,
        partials_every_s=1.0,
        partials_max_age_s=5.0,
        trace_depth=0,
    )


async def preload(bootstrap: str, suffix: str, n_msgs: int, n_sites: int) -> None:
    from vpp.bus.kafka import KafkaBus
    from vpp.ingest.loop import publish_registry

    bus = KafkaBus(_settings(bootstrap, suffix))
    await bus.start()
    await bus.ensure_topics(bus.settings.topics.all())
    producer = await bus.producer()
    topics = bus.settings.topics
    # a long telemetry interval: no site goes stale while the benchmark runs
    await publish_registry(producer, topics.sites.name, sites(n_sites, telemetry_interval_s=3600.0))
    span = timedelta(seconds=n_msgs // n_sites * 5 + 5)
    backlog = messages(n_msgs, n_sites, seed=3, t0=datetime.now(UTC) - span)
    keys = [f"site-{k % n_sites:07d}".encode() for k in range(n_msgs)]
    for i in range(0, n_msgs, 10_000):
        chunk = zip(keys[i : i + 10_000], backlog[i : i + 10_000], strict=True)
        await producer.send_many(topics.telemetry.name, list(chunk))
    await producer.flush()
    await producer.stop()
    await bus.stop()


def member(bootstrap: str, suffix: str, name: str, out: Any, session_ms: int) -> None:
    """One instance: the engine's ingest; reports (name, messages, cpu_s, t) every 0.1 s."""
    from vpp.bus.kafka import KafkaBus
    from vpp.ingest.loop import Ingest

    async def run() -> None:
        bus = KafkaBus(_settings(bootstrap, suffix, session_ms))
        await bus.start()
        ing = Ingest(bus, _ingest_settings(suffix), bus.settings.topics, member_id=name)
        await ing.start()
        while True:
            r = resource.getrusage(resource.RUSAGE_SELF)
            out.put((name, ing.stats.messages, r.ru_utime + r.ru_stime, time.time(), os.getpid()))
            await asyncio.sleep(0.1)

    asyncio.run(run())


def _start(ctx: Any, bootstrap: str, suffix: str, k: int, out: Any, session_ms: int) -> list[Any]:
    procs = []
    for i in range(k):
        p = ctx.Process(
            target=member, args=(bootstrap, suffix, f"m{i}", out, session_ms), daemon=True
        )
        p.start()
        procs.append(p)
    return procs


def drain(
    bootstrap: str, k: int, n_msgs: int, n_sites: int, session_ms: int = 10_000
) -> tuple[dict[str, Any], Any]:
    suffix = uuid.uuid4().hex[:8]
    asyncio.run(preload(bootstrap, suffix, n_msgs, n_sites))
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = _start(ctx, bootstrap, suffix, k, out, session_ms)
    latest: dict[str, tuple[int, float, float]] = {}
    first: dict[str, tuple[int, float, float]] = {}
    t_first = t_last = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        name, msgs, cpu, t, _ = out.get(timeout=60)
        if msgs and name not in first:
            first[name] = (msgs, cpu, t)
            t_first = t if t_first is None else min(t_first, t)
        latest[name] = (msgs, cpu, t)
        if sum(m for m, _, _ in latest.values()) >= n_msgs:
            t_last = t
            break
    assert t_first is not None and t_last is not None, "the backlog was not drained"
    wall = t_last - t_first
    cpu = {
        n: round((latest[n][1] - first.get(n, latest[n])[1]) / wall, 2) if wall > 0 else None
        for n in sorted(latest)
    }
    result = {
        "instances": k,
        "messages": n_msgs,
        "msgs_per_s": round(n_msgs / wall),
        "drain_s": round(wall, 2),
        "cpu_per_instance": cpu,
        "messages_per_instance": {n: latest[n][0] for n in sorted(latest)},
    }
    return result, (procs, out, suffix)


async def failover(
    bootstrap: str, suffix: str, procs: list[Any], out: Any, session_ms: int
) -> dict[str, Any]:
    from vpp.bus.kafka import KafkaBus
    from vpp.fleet.combined import FleetView

    bus = KafkaBus(_settings(bootstrap, suffix))
    await bus.start()
    view = FleetView(bus, _ingest_settings(suffix), bus.settings.topics)
    await view.start()
    try:
        members = {f"m{i}" for i in range(len(procs))}

        def current() -> Any:
            v = view.view()
            if v is None or not v.coverage.complete:
                return None
            return v

        deadline = time.monotonic() + 60
        before = None
        while time.monotonic() < deadline:
            v = current()
            live = {p.instance.rsplit("/", 1)[-1] for p in view.partials.values()}
            if v is not None and members <= live:
                before = v.fleet.e_discharge_kwh.expected
                break
            await asyncio.sleep(0.2)
        assert before is not None, "no complete view before the kill"
        victim = procs[0]
        t0 = time.time()
        os.kill(victim.pid, signal.SIGKILL)
        await asyncio.sleep(1.0)  # the view notices only once its partial ages
        complete = values = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and values is None:
            while not out.empty():  # keep the survivors' reports from filling the pipe
                out.get_nowait()
            v = current()
            killed_gone = all(
                not p.instance.endswith("/m0") or time.time() - p.ts > 5.0
                for p in view.partials.values()
            )
            if v is not None and killed_gone:
                complete = complete or time.time() - t0
                got = v.fleet.e_discharge_kwh.expected
                if abs(got - before) <= 1e-6 * max(1.0, abs(before)):
                    values = time.time() - t0
            await asyncio.sleep(0.1)
        return {
            "killed": "m0",
            "complete_again_s": round(complete, 2) if complete else None,
            "values_again_s": round(values, 2) if values else None,
            "session_timeout_ms": session_ms,
        }
    finally:
        await view.stop()
        await bus.stop()


def _end(procs: list[Any]) -> None:
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=1_200_000)
    ap.add_argument("--sites", type=int, default=60_000)
    args = ap.parse_args()
    result: dict[str, Any] = {
        "goals": {"instance_failover_s": 10, "leader_failover_s": 15},
        "cores": os.cpu_count(),
    }
    with tansu_broker() as bootstrap:
        runs = []
        for k in (1, 2, 3):
            r, (procs, out, suffix) = drain(bootstrap, k, args.messages, args.sites)
            runs.append(r)
            if k == 3:
                result["failover_shipped_session"] = asyncio.run(
                    failover(bootstrap, suffix, procs, out, 10_000)
                )
            _end(procs)
        # the same with a shorter group session (kafka.session_timeout_ms): detection is
        # most of the fail-over time
        _, (procs, out, suffix) = drain(bootstrap, 3, args.messages, args.sites, 3_000)
        result["failover_session_3s"] = asyncio.run(failover(bootstrap, suffix, procs, out, 3_000))
        _end(procs)
        result["throughput"] = runs
        base = runs[0]["msgs_per_s"]
        result["speedup"] = {str(r["instances"]): round(r["msgs_per_s"] / base, 2) for r in runs}
    result["leader_failover"] = "benchmarks/leader_failover.py"
    print(json.dumps(result))


if __name__ == "__main__":
    main()
