"""Targets: what a group (or a site) must deliver in an interval, in kW.

An energy award of ``p_mw`` becomes ``1000·p_mw`` kW of net discharge for the group (+
discharge, − charge). A reserve award becomes headroom the split must leave free: up
reserves (reg up, spinning) on the discharge side, reg down on the charge side. Several
awards of one group and interval add up. A peak-shaving schedule gives a site its own
target directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from market.clearing import Award
from market.definitions import Product

KW_PER_MW = 1000.0


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupTarget:
    dispatch_id: str
    group: str
    interval_start: datetime
    interval_end: datetime
    target_kw: float  # + discharge, − charge
    reserve_up_kw: float = 0.0
    reserve_down_kw: float = 0.0
    source: str = "award"

    def covers(self, t: datetime) -> bool:
        return self.interval_start <= t < self.interval_end


def dispatch_id(group: str, start: datetime) -> str:
    return f"{group}-{start:%Y%m%dT%H%M%SZ}"


def from_awards(awards: Iterable[Award]) -> list[GroupTarget]:
    """One target per (group, interval) from all its awards."""
    acc: dict[tuple[str, datetime], list[float]] = {}  # [net kW, up kW, down kW]
    ends: dict[tuple[str, datetime], datetime] = {}
    for a in awards:
        key = (a.group, a.interval_start)
        t = acc.setdefault(key, [0.0, 0.0, 0.0])
        ends[key] = a.interval_end
        if a.product.is_energy:
            t[0] += a.p_mw * KW_PER_MW
        elif a.product == Product.REG_DOWN:
            t[2] += a.discharge_mw * KW_PER_MW
        else:
            t[1] += a.discharge_mw * KW_PER_MW
    return [
        GroupTarget(
            dispatch_id=dispatch_id(g, start),
            group=g,
            interval_start=start,
            interval_end=ends[(g, start)],
            target_kw=net,
            reserve_up_kw=up,
            reserve_down_kw=down,
        )
        for (g, start), (net, up, down) in sorted(acc.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]
