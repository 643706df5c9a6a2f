"""Leader fail-over, measured with real processes on PostgreSQL: two processes contend for
the bidder role (``tests/leader_proc.py``: nothing but :class:`vpp.leader.Leadership`
ticking every ``check_every_s``); the leader is killed with SIGKILL and the time until the
standby reports that it leads is measured (the kernel closes the dead process's socket,
the server ends its session and frees the advisory lock, the standby's next tick takes it).
A network partition is slower by the server's TCP keepalive timeout, which this does not
measure. After election the bidder reconciles and bids at once; the time from the kill
to that bid, through ``vpp serve`` processes, is measured in ``benchmarks/scaleout.py``.

Median and maximum of ``--repeats`` kills, at the shipped ``check_every_s`` (2 s) and at
0.5 s; the goal of issue 13 is under 15 s for the leader.

    python benchmarks/leader_failover.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
URL = os.environ.get("VPP_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _spawn(schema: str, holder: str, check_s: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.leader_proc", URL, schema, holder, str(check_s)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def _until_leader(out: IO[str], deadline_s: float = 60.0) -> dict[str, Any]:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        line = out.readline()
        if not line:
            raise RuntimeError("the process ended before it led")
        event = json.loads(line)
        if event["leader"]:
            return event
    raise RuntimeError("no leader within the deadline")


def failovers(schema: str, check_s: float, repeats: int) -> dict[str, Any]:
    times = []
    leader = _spawn(schema, "p0", check_s)
    assert leader.stdout is not None
    _until_leader(leader.stdout)
    for k in range(1, repeats + 1):
        standby = _spawn(schema, f"p{k}", check_s)
        assert standby.stdout is not None
        first = json.loads(standby.stdout.readline())
        assert not first["leader"], "the standby led while the leader was alive"
        t0 = time.time()
        leader.send_signal(signal.SIGKILL)
        leader.wait()
        took = _until_leader(standby.stdout)
        times.append(took["t"] - t0)
        if leader.stdout is not None:
            leader.stdout.close()
        leader = standby
    leader.kill()
    leader.wait()
    if leader.stdout is not None:
        leader.stdout.close()
    return {
        "check_every_s": check_s,
        "kills": repeats,
        "failover_s_median": round(statistics.median(times), 3),
        "failover_s_max": round(max(times), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="one fail-over each: checks it runs")
    args = ap.parse_args()
    if args.smoke:
        args.repeats = 1
    sys.path.insert(0, str(ROOT))
    from vpp.config import DatabaseSettings
    from vpp.store import db

    admin = sa.create_engine(URL)
    schema = f"bench_leader_{os.getpid()}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        engine = db.create_db_engine(DatabaseSettings(url=URL, schema_name=schema))  # type: ignore[arg-type]
        db.upgrade(engine)
        engine.dispose()
        out = {
            "goal_leader_failover_s": 15,
            "shipped": failovers(schema, 2.0, args.repeats),
            "fast_check": failovers(schema, 0.5, args.repeats),
        }
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
