"""Commitment benchmark: do awards get delivered when peak shaving holds part of the fleet?

The whole engine in one process (`vpp run`'s wiring: embedded bus, SQLite, the shipped
simulated fleet of 50 sites with its C&I sites on a TOU + demand-charge tariff, peak
shaving, the bidder with auto-approval and the demo gate lead) runs one simulated hour on a
clock 60 times faster than the wall, twice: with no simulator faults, and with 10 % of acks
lost. For every interval with an award-sourced dispatch target, the allocated and the
delivered (measured, from telemetry) power as a share of the award. Goal without faults:
allocated >= 99 % and delivered >= 95 % of each award, and no interval ``short`` as the
meter counts it (|target − measured mean| beyond ``dispatch.delivery_tolerance_*``, either
side, 0 MW awards included).

    python -m benchmarks.commitment [--minutes 60] [--speed 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vpp.cli.main import RUN_DEMO, _merge  # noqa: E402
from vpp.clock import ScaledClock  # noqa: E402
from vpp.config import load_settings  # noqa: E402
from vpp.logs import configure  # noqa: E402
from vpp.store.tables import dispatch_intervals  # noqa: E402
from vpp.wiring import build_engine  # noqa: E402

NO_FAULTS = {
    "offline_per_hour": 0.0,
    "gap": 0.0,
    "duplicate": 0.0,
    "reorder": 0.0,
    "malformed": 0.0,
    "ack_loss": 0.0,
    "reject": 0.0,
}


def run_once(minutes: float, speed: float, ack_loss: float, folder: Path) -> dict[str, Any]:
    cfg = load_settings()
    cfg = _merge(cfg, RUN_DEMO)
    cfg = _merge(
        cfg,
        {
            "database": {"url": f"sqlite:///{folder}/vpp.db"},
            "api": {"port": 0},
            "simulator": {
                "faults": {**NO_FAULTS, "ack_loss": ack_loss},
                "telemetry_interval_s": cfg.simulator.telemetry_interval_s * speed,
            },
            "dispatch": {
                "ack_timeout_s": cfg.dispatch.ack_timeout_s * speed,
                "backoff_s": cfg.dispatch.backoff_s * speed,
                "follow_grace_s": cfg.dispatch.follow_grace_s * speed,
            },
            "peak_shaving": {"min_history_s": 0.0},
        },
    )
    clock = ScaledClock(datetime.now(UTC), speed)
    engine = build_engine(cfg, simulate=True, auto_migrate=True, clock=clock)
    asyncio.run(engine.run(minutes * 60 / speed))
    db = sa.create_engine(f"sqlite:///{folder}/vpp.db")
    with db.connect() as conn:
        rows = conn.execute(
            sa.select(dispatch_intervals).where(
                dispatch_intervals.c.source == "award",
                dispatch_intervals.c.status.in_(["delivered", "short"]),
            )
        ).all()
    db.dispose()
    awarded = [r for r in rows if abs(r.target_kw) > 1.0]
    zero = [r for r in rows if abs(r.target_kw) <= 1.0]
    allocated = [r.allocated_kw / r.target_kw for r in awarded]
    delivered = [(r.delivered_kw or 0.0) / r.target_kw for r in awarded]
    deviation = [abs((r.delivered_kw or 0.0) - r.target_kw) / abs(r.target_kw) for r in awarded]

    def _r(xs: list[float], f: Any) -> float | None:
        return round(f(xs), 4) if xs else None

    return {
        "ack_loss": ack_loss,
        "intervals_closed": len(rows),
        "intervals_awarded": len(awarded),
        "awarded_mw_mean": round(sum(abs(r.target_kw) for r in awarded) / len(awarded) / 1000, 4)
        if awarded
        else 0.0,
        "allocated_share_min": _r(allocated, min),
        "allocated_share_mean": _r(allocated, lambda x: sum(x) / len(x)),
        "delivered_share_min": _r(delivered, min),
        "delivered_share_mean": _r(delivered, lambda x: sum(x) / len(x)),
        # as a meter counts it (vpp.dispatch.core): |target - measured mean| beyond tolerance
        "deviation_share_max": _r(deviation, max),
        "short_intervals": sum(r.status == "short" for r in rows),
        "zero_mw_awards": len(zero),
        "zero_mw_awards_short": sum(r.status == "short" for r in zero),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=60.0, help="simulated minutes")
    parser.add_argument("--speed", type=float, default=60.0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks it still runs")
    args = parser.parse_args()
    if args.smoke:
        args.minutes = 15.0
    configure("WARNING", True)
    out: dict[str, Any] = {
        "benchmark": "commitment",
        "simulated_minutes": args.minutes,
        "speed": args.speed,
    }
    for name, loss in (("no_faults", 0.0), ("ack_loss_10pct", 0.1)):
        with tempfile.TemporaryDirectory() as tmp:
            out[name] = run_once(args.minutes, args.speed, loss, Path(tmp))
    nf = out["no_faults"]
    out["goal"] = (
        "no faults: allocated >= 0.99 and delivered >= 0.95 of every award, no interval short"
    )
    out["goal_met"] = bool(
        nf["intervals_awarded"]
        and nf["allocated_share_min"] >= 0.99
        and nf["delivered_share_min"] >= 0.95
        and nf["short_intervals"] == 0
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
