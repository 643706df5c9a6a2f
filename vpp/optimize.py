"""``vpp optimize``: the perfect-foresight optimum of a scenario — the bound a backtest is
scored against.

Each group of the scenario's fleet is one aggregate battery optimized against the actual
prices (energy, plus reserves when the scenario has their prices). Site classes with a
tariff are committed to peak shaving and never offered to the market, so they are not in
the market bound (they are listed in the result).

Without ``strategy.horizon`` and ``strategy.reoptimize_every`` the whole range is one
model: a range up to ``max_intervals`` (a year of hourly or 15-minute data) is solved at
once; a longer one (a year of 5-minute prices) in rolling windows of ``window`` with
``overlap``: each window starts from the state the previous one reached at the end of its
kept part and keeps only its first ``window − overlap``, so the look-ahead near a window's
end is never cut short. With either key set, the range is solved in exactly the decision
windows a backtest uses (:mod:`vpp.decision_windows`: trading days for a day-ahead
market, ``reoptimize_every`` for real time, each over ``horizon``), with
``strategy.terminal`` at each window's end — the perfect-foresight result of day-by-day
operation. All windows of equal length reuse one built model.

A scenario whose strategy asks for a forecast is refused, naming the key: forecasts are
what ``vpp backtest`` replays.
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
from vpp.bidding.strategies import terminal_for
from vpp.decision_windows import WindowError, decisions
from vpp.scenario import Scenario, ScenarioError, energy_market, load_prices

MAX_INTERVALS = 40_000


@dataclass
class GroupResult:
    group: str
    battery: BatteryAggregate
    revenue: dict[str, float] = field(default_factory=dict)  # by product
    degradation: float = 0.0
    variable_om: float = 0.0  # per MWh discharged
    net: float = 0.0
    discharged_mwh: float = 0.0
    charged_mwh: float = 0.0
    windows: int = 0
    reports: list[SolveReport] = field(default_factory=list)
    # per interval of the period: net revenue (energy + reserves − degradation) and MW
    net_by_interval: list[np.ndarray] = field(default_factory=list)
    p_net_mw: list[np.ndarray] = field(default_factory=list)

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
            "variable_om": self.variable_om,
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
    windows: str = "whole period"
    committed_classes: list[str] = field(default_factory=list)

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
            "windows": self.windows,
            "committed_classes": self.committed_classes,
            "net_revenue": self.net_revenue,
            "revenue": revenue,
            "degradation": sum(g.degradation for g in self.groups),
            "variable_om": sum(g.variable_om for g in self.groups),
            "full_cycles": {g.group: g.full_cycles for g in self.groups},
            "groups": [g.to_dict() for g in self.groups],
        }


# Strategy keys that only a forecast-driven backtest uses: the bound refuses them.
BACKTEST_ONLY = (
    "bid_quantile",
    "scenarios",
    "base_forecast",
    "anchor",
    "features",
    "backup_reserve_fraction",
    "history_days",
    "learned",
    "lear",
)


def check_bound(scenario: Scenario) -> None:
    """Refuse a scenario that asks the perfect-foresight bound for something else."""
    strategy = scenario.strategy
    others = [n for n in strategy.names if n != "perfect"]
    if others:
        raise ScenarioError(
            f"scenario {scenario.name}: strategy.forecast asks for {', '.join(others)}: "
            "vpp optimize computes the perfect-foresight bound only; replay forecast "
            "strategies with `vpp backtest SCENARIO`"
        )
    for key in BACKTEST_ONLY:
        if key in strategy.model_fields_set:
            raise ScenarioError(
                f"scenario {scenario.name}: strategy.{key} configures forecast strategies, "
                "which vpp optimize does not run (it computes the perfect-foresight bound); "
                "use `vpp backtest SCENARIO`, or remove the key"
            )
    if scenario.features is not None:
        raise ScenarioError(
            f"scenario {scenario.name}: features: feature series feed forecasters, which vpp "
            "optimize does not run (it computes the perfect-foresight bound); use "
            "`vpp backtest SCENARIO`, or remove the key"
        )


def optimize(
    scenario: Scenario,
    *,
    max_intervals: int = MAX_INTERVALS,
    window: timedelta = timedelta(days=7),
    overlap: timedelta = timedelta(days=1),
    progress: Callable[[int, int], None] | None = None,
    check: bool = True,
) -> OptimizeResult:
    """The bound; ``check=False`` lets a backtest compute it for a scenario whose strategy
    names forecasts (the backtest scores them against this)."""
    if check:
        check_bound(scenario)
    market = scenario.market_definition
    energy, reserves = load_prices(scenario)
    market, product = energy_market(market, energy.interval)
    strategy = scenario.strategy
    interval_h = energy.interval.total_seconds() / 3600
    total = len(energy)
    rolling = strategy.horizon is not None or strategy.reoptimize_every is not None
    spans: list[tuple[int, int, int]]
    if rolling:
        try:
            found = decisions(
                energy.starts,
                0,
                total,
                market,
                product,
                horizon=strategy.horizon,
                every=strategy.reoptimize_every,
                lead=timedelta(0),
                clock=strategy.window_clock,
            )
        except WindowError as exc:
            raise ScenarioError(f"scenario {scenario.name}: strategy: {exc}") from None
        spans = [(d.first, d.end, d.kept) for d in found]
        described = (
            f"{len(spans)} decision windows (horizon {strategy.horizon or 'default'}, every "
            f"{strategy.reoptimize_every or 'default'}, terminal {strategy.terminal}, "
            f"window clock {strategy.window_clock})"
        )
    elif total <= max_intervals:
        spans = [(0, total, total)]
        described = "whole period"
    else:
        size = int(window / energy.interval)
        keep = size - int(overlap / energy.interval)
        spans = []
        for start in range(0, total, keep):
            end = min(total, start + size)
            spans.append((start, end, end - start if end == total else keep))
            if end == total:
                break
        described = f"{len(spans)} windows of {window} overlapping {overlap}"
    market_fleet = [f for f in scenario.fleet if f.tariff is None]
    committed = [f.name for f in scenario.fleet if f.tariff is not None]
    groups = sorted({f.group for f in market_fleet})
    models: dict[int, MarketModel] = {}
    results = []
    done = 0
    steps = len(spans) * len(groups)
    for group in groups:
        battery = battery_from_entries([f for f in market_fleet if f.group == group])
        out = GroupResult(group, battery)
        state = battery.e_initial_mwh
        for start, end, kept in spans:
            horizon = end - start
            model = models.get(horizon)
            if model is None:
                model = models[horizon] = MarketModel(
                    horizon, strategy.reserves, mip_rel_gap=strategy.mip_rel_gap
                )
                model.simultaneous = strategy.simultaneous
            current = BatteryAggregate(
                e_min_mwh=battery.e_min_mwh,
                e_max_mwh=battery.e_max_mwh,
                e_initial_mwh=min(max(state, battery.e_min_mwh), battery.e_max_mwh),
                p_charge_max_mw=battery.p_charge_max_mw,
                p_discharge_max_mw=battery.p_discharge_max_mw,
                eff_charge=battery.eff_charge,
                eff_discharge=battery.eff_discharge,
            )
            prices = energy.values[start:end]
            inputs = MarketInputs(
                interval_h=interval_h,
                energy_price=prices,
                reserve_price={k: reserves[k].values[start:end] for k in strategy.reserves},
                deployment=dict(strategy.reserve_deployment),
                sustain_h=strategy.sustain_h,
                degradation_per_mwh=strategy.degradation_per_mwh,
                vom_per_mwh=strategy.vom_per_mwh,
                terminal=terminal_for(strategy.terminal, current, prices)
                if rolling or strategy.terminal != "free"
                else Terminal(),
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
        windows=described,
        committed_classes=committed,
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
    variable_om = float(inputs.vom_per_mwh * dt * np.sum(p_dis))
    per = (
        price * dt * (p_dis - p_ch)
        - inputs.degradation_per_mwh * dt * (throughput + deployed)
        - inputs.vom_per_mwh * dt * p_dis
    )
    for k, r in sched.reserves_mw.items():
        delta = inputs.deployment.get(k, 0.0)
        sign = 1.0 if k != Product.REG_DOWN else -1.0
        per = (
            per
            + (np.asarray(inputs.reserve_price[k])[:kept] + sign * delta * price) * dt * r[:kept]
        )
    out.net_by_interval.append(per)
    out.p_net_mw.append(p_dis - p_ch)
    out.degradation += degradation
    out.variable_om += variable_om
    out.discharged_mwh += float(np.sum(p_dis) * dt)
    out.charged_mwh += float(np.sum(p_ch) * dt)
    out.net = sum(out.revenue.values()) - out.degradation - out.variable_om
