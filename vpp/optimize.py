"""``vpp optimize``: the perfect-foresight optimum of a scenario over its whole date range.

Each group of the scenario's fleet is one aggregate battery optimized against the actual
prices (energy, plus reserves when the scenario has their prices). A range up to
``max_intervals`` (a year of hourly or 15-minute data) is solved as one model. A longer one
(a year of 5-minute prices) is solved in rolling windows of ``window`` with ``overlap``:
each window starts from the state the previous one reached at the end of its kept part
and keeps only its first ``window − overlap``, so the look-ahead near a window's end is
never cut short. All windows of equal length reuse one built model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np

from market.definitions import Product
from optimizer.inputs import BatteryAggregate, MarketInputs, Terminal
from optimizer.market_model import MarketModel
from optimizer.report import SolveReport
from vpp.aggregate import battery_from_entries
from vpp.scenario import Scenario, energy_product, load_prices

MAX_INTERVALS = 40_000


@dataclass
class GroupResult:
    group: str
    battery: BatteryAggregate
    revenue: dict[str, float] = field(default_factory=dict)  # by product
    degradation: float = 0.0
    net: float = 0.0
    discharged_mwh: float = 0.0
    charged_mwh: float = 0.0
    windows: int = 0
    reports: list[SolveReport] = field(default_factory=list)

    @property
    def full_cycles(self) -> float:
        usable = self.battery.e_max_mwh - self.battery.e_min_mwh
        return self.discharged_mwh / usable if usable > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        last = self.reports[-1] if self.reports else None
        return {
            "group": self.group,
            "revenue": self.revenue,
            "degradation": self.degradation,
            "net_revenue": self.net,
            "discharged_mwh": self.discharged_mwh,
            "charged_mwh": self.charged_mwh,
            "full_cycles": self.full_cycles,
            "windows": self.windows,
            "solve": {
                "build_s": sum(r.build_s for r in self.reports[:1]),
                "solve_s": sum(r.solve_s for r in self.reports),
                "highs_s": sum(r.highs_s for r in self.reports),
                "status": last.status if last else None,
                "integer_intervals": sum(r.integer_intervals for r in self.reports),
                "binding": [b.to_dict() for b in last.binding] if last else [],
            },
        }


@dataclass
class OptimizeResult:
    scenario: str
    market: str
    currency: str
    energy_product: str
    start: str
    end: str
    intervals: int
    groups: list[GroupResult]

    @property
    def net_revenue(self) -> float:
        return sum(g.net for g in self.groups)

    def to_dict(self) -> dict[str, Any]:
        revenue: dict[str, float] = {}
        for g in self.groups:
            for k, v in g.revenue.items():
                revenue[k] = revenue.get(k, 0.0) + v
        return {
            "scenario": self.scenario,
            "market": self.market,
            "currency": self.currency,
            "energy_product": self.energy_product,
            "start": self.start,
            "end": self.end,
            "intervals": self.intervals,
            "net_revenue": self.net_revenue,
            "revenue": revenue,
            "degradation": sum(g.degradation for g in self.groups),
            "full_cycles": {g.group: g.full_cycles for g in self.groups},
            "groups": [g.to_dict() for g in self.groups],
        }


def optimize(
    scenario: Scenario,
    *,
    max_intervals: int = MAX_INTERVALS,
    window: timedelta = timedelta(days=7),
    overlap: timedelta = timedelta(days=1),
    progress: Callable[[int, int], None] | None = None,
) -> OptimizeResult:
    market = scenario.market_definition
    energy, reserves = load_prices(scenario)
    product = energy_product(market, energy.interval)
    strategy = scenario.strategy
    interval_h = energy.interval.total_seconds() / 3600
    total = len(energy)
    if total <= max_intervals:
        spans = [(0, total, total)]
    else:
        size = int(window / energy.interval)
        keep = size - int(overlap / energy.interval)
        spans = []
        for start in range(0, total, keep):
            end = min(total, start + size)
            spans.append((start, end, end - start if end == total else keep))
            if end == total:
                break
    models: dict[int, MarketModel] = {}
    results = []
    done = 0
    steps = len(spans) * len(scenario.groups)
    for group in scenario.groups:
        battery = battery_from_entries([f for f in scenario.fleet if f.group == group])
        out = GroupResult(group, battery)
        state = battery.e_initial_mwh
        for start, end, kept in spans:
            horizon = end - start
            model = models.get(horizon)
            if model is None:
                model = models[horizon] = MarketModel(horizon, strategy.reserves)
            current = BatteryAggregate(
                e_min_mwh=battery.e_min_mwh,
                e_max_mwh=battery.e_max_mwh,
                e_initial_mwh=min(max(state, battery.e_min_mwh), battery.e_max_mwh),
                p_charge_max_mw=battery.p_charge_max_mw,
                p_discharge_max_mw=battery.p_discharge_max_mw,
                eff_charge=battery.eff_charge,
                eff_discharge=battery.eff_discharge,
            )
            inputs = MarketInputs(
                interval_h=interval_h,
                energy_price=energy.values[start:end],
                reserve_price={k: reserves[k].values[start:end] for k in strategy.reserves},
                deployment=dict(strategy.reserve_deployment),
                sustain_h=strategy.sustain_h,
                degradation_per_mwh=strategy.degradation_per_mwh,
                terminal=Terminal(),
            )
            sched = model.solve(current, inputs)
            _account(out, sched, inputs, kept, product)
            state = float(sched.e_mwh[kept - 1])
            out.windows += 1
            if sched.report is not None:
                out.reports.append(sched.report)
            done += 1
            if progress is not None:
                progress(done, steps)
        results.append(out)
    return OptimizeResult(
        scenario=scenario.name,
        market=market.market_id,
        currency=market.currency,
        energy_product=product.value,
        start=energy.start.isoformat(),
        end=energy.end.isoformat(),
        intervals=total,
        groups=results,
    )


def _account(
    out: GroupResult, sched: Any, inputs: MarketInputs, kept: int, product: Product
) -> None:
    """Add the kept part of a window's schedule to the group's totals."""
    dt = inputs.interval_h
    price = np.asarray(inputs.energy_price)[:kept]
    p_dis, p_ch = sched.p_discharge_mw[:kept], sched.p_charge_mw[:kept]
    energy = float(np.sum(price * dt * (p_dis - p_ch)))
    out.revenue[product.value] = out.revenue.get(product.value, 0.0) + energy
    throughput = p_dis + p_ch
    deployed = np.zeros(kept)
    for k, r in sched.reserves_mw.items():
        r = r[:kept]
        delta = inputs.deployment.get(k, 0.0)
        sign = 1.0 if k != Product.REG_DOWN else -1.0
        rev = float(np.sum(np.asarray(inputs.reserve_price[k])[:kept] * dt * r))
        out.revenue[k.value] = out.revenue.get(k.value, 0.0) + rev
        dep = float(np.sum(price * dt * sign * delta * r))
        out.revenue["deployment"] = out.revenue.get("deployment", 0.0) + dep
        deployed = deployed + delta * r
    degradation = float(inputs.degradation_per_mwh * dt * np.sum(throughput + deployed))
    out.degradation += degradation
    out.discharged_mwh += float(np.sum(p_dis) * dt)
    out.charged_mwh += float(np.sum(p_ch) * dt)
    out.net = sum(out.revenue.values()) - out.degradation
