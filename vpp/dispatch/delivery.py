"""One target's delivery: what was allocated, what the sites were told, what they did."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from vpp.dispatch.targets import GroupTarget

F64 = npt.NDArray[np.float64]


@dataclass
class Delivery:
    target: GroupTarget
    allocated_kw: float = 0.0
    shortfall_kw: float = 0.0
    redispatches: int = -1  # the first dispatch is not a re-dispatch
    commands: int = 0
    samples: list[tuple[float, float]] = field(default_factory=list)  # (epoch, kW)
    compliance: float | None = None
    excluded: set[str] = field(default_factory=set)
    dispatched: bool = False
    # With instances sharing the fleet: this instance's share of the target (kW) and its
    # base share before re-allocation (None: the whole target is this instance's).
    share_kw: float = 0.0
    base_kw: float | None = None
    foreign: bool = False  # a site target for a site another instance owns
    # Setpoint of each site's live command of this delivery, by store row (NaN: none);
    # the deadband compares a re-dispatch against it.
    active_sp: F64 = field(default_factory=lambda: np.full(0, np.nan))

    def active_at(self, rows: npt.NDArray[np.int64], n: int) -> F64:
        if self.active_sp.size < n:
            grown = np.full(max(n, 2 * self.active_sp.size), np.nan)
            grown[: self.active_sp.size] = self.active_sp
            self.active_sp = grown
        out: F64 = self.active_sp[rows]
        return out

    @property
    def delivered_kw(self) -> float | None:
        """Mean measured net power over the samples so far (telemetry-based)."""
        return float(np.mean([kw for _, kw in self.samples])) if self.samples else None

    def delivered_kwh(self) -> float | None:
        if len(self.samples) < 2:
            return None
        t = np.array([s[0] for s in self.samples])
        kw = np.array([s[1] for s in self.samples])
        return float(np.sum(kw[:-1] * np.diff(t)) / 3600.0)

    def status(self, now: datetime) -> str:
        """``scheduled`` before the interval, ``active`` in it; a closed one is final."""
        if self.target.interval_end <= now:
            return "delivered" if self.shortfall_kw == 0 else "short"
        return "active" if self.target.interval_start <= now else "scheduled"

    def row(self, status: str, now: float) -> dict[str, Any]:
        t = self.target
        return {
            "dispatch_id": t.dispatch_id,
            "group_id": t.group,
            "interval_start": t.interval_start,
            "interval_end": t.interval_end,
            "source": t.source,
            "target_kw": t.target_kw,
            "reserve_up_kw": t.reserve_up_kw,
            "reserve_down_kw": t.reserve_down_kw,
            "allocated_kw": self.allocated_kw,
            "shortfall_kw": self.shortfall_kw,
            "delivered_kw": self.delivered_kw,
            "delivered_kwh": self.delivered_kwh(),
            "redispatches": max(0, self.redispatches),
            "status": status,
            "updated_at": datetime.fromtimestamp(now, UTC),
            # for instances sharing the fleet (vpp.store.dispatch_log.upsert_shared)
            "share_kw": self.share_kw,  # 0 until this instance takes its share
            "foreign": self.foreign,
        }
