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

Fail-over (``--failover-kills`` times at each setting, median and maximum): 3 instances
drain a smaller backlog (``--failover-messages``) at the shipped Kafka and ingest settings
(partials every 5 s, a 6 s group session), then one is killed with SIGKILL. Measured from
the kill, in a fourth process's combined view (:class:`vpp.fleet.combined.FleetView`):

- ``reassigned_s``: until the survivors own every partition (the group's session timeout
  and the rebalance), from the instances' own reports;
- ``complete_again_s``: until every partition is reported by a live instance again and
  the killed instance's partials no longer count (the group's session timeout, the
  rebalance, the new owners' partials sent at assignment); also with a 3 s session;
- ``values_again_s``: until the view's expected discharge energy is back to its value
  before the kill (within 1e-6): the new owners have replayed the partitions they took
  over (no snapshot database here, so from the start of each partition) and sent their
  next partials (every ``ingest.partials_every_s``). The group's assignor moves most
  partitions at a rebalance, not only the killed instance's, so every survivor replays.

Leader fail-over to the next bid: two ``vpp serve`` instances bidding (caiso real time,
5-minute intervals, gate 60 s, bids made 120 s before their gate) and a ``vpp simulate``
on the same broker and PostgreSQL. A new interval becomes biddable every 5 minutes; the
leader is SIGKILLed 1 s after that moment, before its scheduled cycle would bid it, and
measured from the kill:

- ``elected_s``: until the standby holds the next term (``leader_terms.acquired_at``);
- ``next_bid_s``: until the new interval's bid is stored (``bids.created_at``): the
  election, the new leader's reconciliation and its catch-up bidding pass.

The killed instance is started again (a standby) and the next kill is at the next
interval, so each repeat alternates the leader and takes about 5 minutes.

    python benchmarks/scaleout.py [--messages 1200000] [--sites 60000]
        [--failover-kills 3] [--failover-messages 300000] [--leader-kills 3]
        [--parts throughput,failover,leader]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._broker import _free_port, tansu_broker
from benchmarks.ingest import messages, sites
from vpp.config import (
    BusSettings,
    IngestSettings,
    KafkaSettings,
    LeaderSettings,
    TopicSpec,
    TopicsSettings,
)

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 12


def _settings(bootstrap: str, suffix: str, session_timeout_ms: int | None = None) -> BusSettings:
    """The shipped Kafka settings (session timeout and heartbeat included, unless a
    session is given), with fetch sizes for draining a backlog."""
    shipped = KafkaSettings()
    return BusSettings(
        kind="kafka",
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap,
            enable_idempotence=False,
            session_timeout_ms=session_timeout_ms or shipped.session_timeout_ms,
            heartbeat_interval_ms=min(shipped.heartbeat_interval_ms, 500)
            if session_timeout_ms
            else shipped.heartbeat_interval_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
        ),
        topics=TopicsSettings.renamed(f"so.{suffix}", partitions=4).model_copy(
            update={"telemetry": TopicSpec(name=f"so.{suffix}.telemetry", partitions=PARTITIONS)}
        ),
    )


def _ingest_settings(suffix: str) -> IngestSettings:
    """The shipped ingest settings (partials cadence and age bound included), but a batch
    size for draining a backlog, a replay window reaching the preloaded readings, and no
    per-site trace."""
    return IngestSettings(
        group_id=f"so-ingest-{suffix}",
        batch_max_records=50_000,
        replay_window_s=10 * 86400 * 365,
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


def member(bootstrap: str, suffix: str, name: str, out: Any, session_ms: int | None) -> None:
    """One instance: the engine's ingest; reports (name, messages, cpu_s, t, partitions
    owned) every 0.1 s."""
    from vpp.bus.kafka import KafkaBus
    from vpp.ingest.loop import Ingest

    async def run() -> None:
        bus = KafkaBus(_settings(bootstrap, suffix, session_ms))
        await bus.start()
        ing = Ingest(bus, _ingest_settings(suffix), bus.settings.topics, member_id=name)
        await ing.start()
        while True:
            r = resource.getrusage(resource.RUSAGE_SELF)
            owned = len(ing.telemetry_partitions())
            out.put((name, ing.stats.messages, r.ru_utime + r.ru_stime, time.time(), owned))
            await asyncio.sleep(0.1)

    asyncio.run(run())


def _start(
    ctx: Any, bootstrap: str, suffix: str, k: int, out: Any, session_ms: int | None
) -> list[Any]:
    procs = []
    for i in range(k):
        p = ctx.Process(
            target=member, args=(bootstrap, suffix, f"m{i}", out, session_ms), daemon=True
        )
        p.start()
        procs.append(p)
    return procs


def drain(
    bootstrap: str, k: int, n_msgs: int, n_sites: int, session_ms: int | None = None
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
        "msgs_per_s": round(n_msgs / wall) if wall > 0 else None,  # None: drained at once
        "drain_s": round(wall, 2),
        "cpu_per_instance": cpu,
        "messages_per_instance": {n: latest[n][0] for n in sorted(latest)},
    }
    return result, (procs, out, suffix, t_last)


async def failover(
    bootstrap: str,
    suffix: str,
    procs: list[Any],
    out: Any,
    session_ms: int | None,
    drained_at: float,
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
            # every member's partial sent after the backlog was folded: the true value
            settled = all(p.ts > drained_at + 0.5 for p in view.partials.values())
            if v is not None and members <= live and settled:
                before = v.fleet.e_discharge_kwh.expected
                break
            await asyncio.sleep(0.2)
        assert before is not None, "no complete view before the kill"
        victim = procs[0]
        t0 = time.time()
        os.kill(victim.pid, signal.SIGKILL)
        await asyncio.sleep(1.0)  # the view notices only once its partial ages
        complete = values = reassigned = None
        owned: dict[str, int] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and values is None:
            while not out.empty():  # the survivors' reports (read, so the pipe never fills)
                name, _, _, t, parts = out.get_nowait()
                if t <= t0 or name == "m0":
                    continue  # reported before the kill
                owned[name] = parts
                if reassigned is None and sum(owned.values()) == PARTITIONS and len(owned) > 1:
                    reassigned = t - t0
            v = current()
            # the killed instance's last partials no longer count: the new owners' claim
            # its partitions (or they aged out)
            killed_gone = v is not None and not any(i.endswith("/m0") for i in v.coverage.instances)
            if v is not None and killed_gone:
                complete = complete or time.time() - t0
                got = v.fleet.e_discharge_kwh.expected
                if abs(got - before) <= 1e-6 * max(1.0, abs(before)):
                    values = time.time() - t0
            await asyncio.sleep(0.1)
        return {
            "killed": "m0",
            "reassigned_s": round(reassigned, 2) if reassigned else None,
            "complete_again_s": round(complete, 2) if complete else None,
            "values_again_s": round(values, 2) if values else None,
            "session_timeout_ms": session_ms or KafkaSettings().session_timeout_ms,
        }
    finally:
        await view.stop()
        await bus.stop()


def _summary(kills: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and maximum over the kills; a kill whose view never came back is counted as
    missing."""
    out: dict[str, Any] = {
        "kills": len(kills),
        "session_timeout_ms": kills[0]["session_timeout_ms"],
    }
    for key in ("reassigned_s", "complete_again_s", "values_again_s"):
        got = [k[key] for k in kills if k[key] is not None]
        out[f"{key}_median"] = round(statistics.median(got), 2) if got else None
        out[f"{key}_max"] = max(got) if got else None
        out[f"{key}_missing"] = len(kills) - len(got)
    out["each"] = [{k: v for k, v in kill.items() if k.endswith("_s")} for kill in kills]
    return out


def _end(procs: list[Any]) -> None:
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join(timeout=10)


# -- leader fail-over to the next bid ------------------------------------------------------

PG_URL = os.environ.get("VPP_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
GATE_LEAD_S = 60
REVIEW_S = 120
STEP_S = 300


def _engine_env(bootstrap: str, schema: str, suffix: str) -> dict[str, str]:
    env = {
        **os.environ,
        "VPP_BUS__KIND": "kafka",
        "VPP_BUS__KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "VPP_BUS__KAFKA__ENABLE_IDEMPOTENCE": "false",
        "VPP_DATABASE__URL": PG_URL,
        "VPP_DATABASE__SCHEMA_NAME": schema,
        "VPP_INGEST__GROUP_ID": f"so-lead-ingest-{suffix}",
        "VPP_DISPATCH__CONSUMER_GROUP": f"so-lead-dispatch-{suffix}",
        "VPP_PEAK_SHAVING__ENABLED": "false",
        "VPP_SIMULATOR__SITES": "200",
        "VPP_BIDDING__ENABLED": "true",
        "VPP_BIDDING__MARKET": "caiso",
        "VPP_BIDDING__PRODUCT": "energy_rt",
        "VPP_BIDDING__GATE_LEAD_S": str(GATE_LEAD_S),
        "VPP_BIDDING__REVIEW_WINDOW_S": str(REVIEW_S),
        "VPP_BIDDING__HORIZON_INTERVALS": "3",
        "VPP_LOG__LEVEL": "WARNING",
    }
    env.update(TopicsSettings.renamed(f"so.lead.{suffix}", partitions=4).environment())
    return env


def _cli(env: dict[str, str], *args: str, port: int | None = None) -> subprocess.Popen[bytes]:
    if port is not None:
        env = {**env, "VPP_API__PORT": str(port)}
    return subprocess.Popen(
        [sys.executable, "-m", "vpp", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _until(check: Any, timeout_s: float, what: str) -> Any:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not within {timeout_s} s")


def leader_failover(bootstrap: str, kills: int) -> dict[str, Any]:
    import sqlalchemy as sa

    from vpp.store.tables import bids, leader_terms

    suffix = uuid.uuid4().hex[:8]
    schema = f"bench_so_lead_{suffix}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    db = sa.create_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
    env = _engine_env(bootstrap, schema, suffix)
    subprocess.run(
        [sys.executable, "-m", "vpp", "db", "upgrade"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    ports = [_free_port() for _ in range(2)]
    procs = [_cli(env, "serve", port=p) for p in ports]
    sim = _cli(env, "simulate")

    def term() -> tuple[int, str, datetime] | None:
        with db.connect() as conn:
            row = conn.execute(
                sa.select(
                    leader_terms.c.generation, leader_terms.c.holder, leader_terms.c.acquired_at
                ).where(leader_terms.c.role == "bidder")
            ).first()
        return (row[0], row[1], row[2]) if row else None

    def first_bid_after(t0: datetime) -> tuple[datetime, datetime] | None:
        with db.connect() as conn:
            row = conn.execute(
                sa.select(bids.c.created_at, bids.c.interval_start)
                .where(bids.c.created_at > t0)
                .order_by(bids.c.created_at)
            ).first()
        return (row[0], row[1]) if row else None

    results = []
    try:
        _until(lambda: first_bid_after(datetime(2000, 1, 1, tzinfo=UTC)), 240, "first bids")
        for _ in range(kills):
            # the next moment a new interval becomes biddable: its gate (start - GATE_LEAD_S)
            # is then exactly REVIEW_S away
            now = time.time()
            shift = math.ceil((now + GATE_LEAD_S + REVIEW_S) / STEP_S) * STEP_S
            moment = shift - GATE_LEAD_S - REVIEW_S
            if moment - now < 5:  # too close to be sure the kill comes after it
                moment += STEP_S
            time.sleep(moment + 1.0 - time.time())
            before = term()
            assert before is not None
            lead = [p.pid for p in procs].index(int(before[1].rsplit(":", 1)[1]))
            t0 = datetime.now(UTC)
            procs[lead].send_signal(signal.SIGKILL)
            procs[lead].wait()
            after = _until(
                lambda was=before[0]: (t := term()) is not None and t[0] > was and t,
                60,
                "new leader",
            )
            bid = _until(lambda t0=t0: first_bid_after(t0), STEP_S, "next bid")
            results.append(
                {
                    "elected_s": round((after[2] - t0).total_seconds(), 3),
                    "next_bid_s": round((bid[0] - t0).total_seconds(), 3),
                    "bid_interval": bid[1].isoformat(),
                    # without the catch-up pass the bid waits for the scheduled cycle
                    "scheduled_cycle_s": round(
                        math.ceil((t0.timestamp() - 5) / STEP_S) * STEP_S + 5 - t0.timestamp(), 3
                    ),
                }
            )
            procs[lead] = _cli(env, "serve", port=ports[lead])  # back, as a standby
    finally:
        for proc in (*procs, sim):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in (*procs, sim):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        db.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    elected = [r["elected_s"] for r in results]
    next_bid = [r["next_bid_s"] for r in results]
    return {
        "kills": kills,
        "leader_check_every_s": LeaderSettings().check_every_s,
        "elected_s_median": round(statistics.median(elected), 3),
        "elected_s_max": max(elected),
        "next_bid_s_median": round(statistics.median(next_bid), 3),
        "next_bid_s_max": max(next_bid),
        "each": results,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=1_200_000)
    ap.add_argument("--sites", type=int, default=60_000)
    ap.add_argument("--leader-kills", type=int, default=3)
    ap.add_argument("--failover-kills", type=int, default=3)
    ap.add_argument("--failover-messages", type=int, default=300_000)
    ap.add_argument("--parts", default="throughput,failover,leader", help="comma-separated")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one kill each")
    args = ap.parse_args()
    if args.smoke:
        args.messages, args.sites, args.failover_messages = 300_000, 3_000, 100_000
        args.leader_kills = args.failover_kills = 1
    parts = set(args.parts.split(","))
    result: dict[str, Any] = {
        "goals": {"instance_failover_s": 10, "leader_failover_s": 15},
        "cores": os.cpu_count(),
    }
    with tansu_broker() as bootstrap:
        if "throughput" in parts:
            runs = []
            for k in (1, 2, 3):
                r, (procs, *_) = drain(bootstrap, k, args.messages, args.sites)
                runs.append(r)
                _end(procs)
            result["throughput"] = runs
            base = runs[0]["msgs_per_s"]
            result["speedup"] = {
                str(r["instances"]): round(r["msgs_per_s"] / base, 2)
                if base and r["msgs_per_s"]
                else None
                for r in runs
            }
        if "failover" in parts:
            # at the shipped settings, and with a shorter group session: detection is most
            # of the fail-over time
            for label, session_ms in (("failover_shipped", None), ("failover_session_3s", 3000)):
                kills = []
                for _ in range(args.failover_kills):
                    _, (procs, out, suffix, drained_at) = drain(
                        bootstrap, 3, args.failover_messages, args.sites, session_ms
                    )
                    kills.append(
                        asyncio.run(failover(bootstrap, suffix, procs, out, session_ms, drained_at))
                    )
                    _end(procs)
                result[label] = _summary(kills)
        if "leader" in parts:
            result["leader_failover_to_next_bid"] = leader_failover(bootstrap, args.leader_kills)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
