"""The aggregate-battery market model: energy and reserves co-optimized for one group.

``build_market_model(T, reserves)`` builds the Pyomo model once (the blocks of
:mod:`optimizer.blocks` on one price path) and hands it to one HiGHS instance as matrices
(:mod:`optimizer.solver`). :meth:`MarketModel.solve` then sets prices, battery state and
economics as mutable parameters and re-solves; the model is never rebuilt.

Objective (maximize expected net revenue)::

    Σ_t π_t Δt (P⁺_t − P⁻_t) + Σ_k Σ_t ρ^k_t Δt R^k_t
      + Σ_t π_t Δt (Σ_up δ_k R^k_t − δ_down R^down_t)
      − c_deg Δt Σ_t (P⁺_t + P⁻_t + Σ_k δ_k R^k_t) − c_vom Δt Σ_t P⁺_t + v_end E_{T−1}

subject to the families in :mod:`optimizer.blocks` (SoC balance with separate
efficiencies, energy limits, reserve headroom, sustain duration, terminal target, no
simultaneous charge and discharge where prices are negative).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pyomo.environ as pyo

from market.definitions import RESERVES, Product
from optimizer.base import DispatchBounds, DispatchModel
from optimizer.blocks import UP, add_battery_params, build_dispatch_block
from optimizer.inputs import BatteryAggregate, MarketInputs
from optimizer.report import (
    InfeasibleInputError,
    SolveReport,
    binding_families,
    check_inputs,
)
from optimizer.solver import MIP_REL_GAP

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class MarketSchedule:
    """The optimal schedule (MW per interval) and the report of the solve that made it."""

    p_discharge_mw: F64
    p_charge_mw: F64
    e_mwh: F64  # stored energy at the end of each interval
    reserves_mw: dict[Product, F64] = field(default_factory=dict)
    report: SolveReport | None = None

    @property
    def p_net_mw(self) -> F64:
        out: F64 = self.p_discharge_mw - self.p_charge_mw
        return out


class MarketModel(DispatchModel):
    """Built once per (horizon, reserve products); solved many times."""

    def __init__(
        self, horizon: int, reserves: Sequence[Product] = (), *, mip_rel_gap: float = MIP_REL_GAP
    ) -> None:
        started = time.perf_counter()
        unknown = [p for p in reserves if Product(p) not in RESERVES]
        if unknown:
            raise ValueError(f"not reserve products: {unknown} (energy is always modelled)")
        products = tuple(Product(p) for p in reserves)
        m = pyo.ConcreteModel(name="market")
        add_battery_params(m, horizon, products)
        m.d = pyo.Block()
        build_dispatch_block(m.d, m)
        m.obj = pyo.Objective(expr=m.d.net, sense=pyo.maximize)
        super().__init__(m, [m.d], products, started, mip_rel_gap)

    def solve(
        self, battery: BatteryAggregate, inputs: MarketInputs, bounds: DispatchBounds | None = None
    ) -> MarketSchedule:
        if inputs.horizon != self.horizon:
            raise ValueError(f"model built for {self.horizon} intervals, got {inputs.horizon}")
        price = np.asarray(inputs.energy_price, dtype=np.float64)
        check_inputs(battery, self.horizon, inputs.interval_h, inputs.terminal, price)
        reserve_price: dict[Product, F64] = {}
        for k in self.reserves:
            series = inputs.reserve_price.get(k)
            if series is None:
                raise InfeasibleInputError(f"reserve product {k.value} enabled without prices")
            reserve_price[k] = np.asarray(series, dtype=np.float64)
            check_inputs(
                battery,
                self.horizon,
                inputs.interval_h,
                inputs.terminal,
                reserve_price[k],
                what=f"{k.value} price",
            )
        deployment = {k: float(inputs.deployment.get(k, 0.0)) for k in self.reserves}
        started = time.perf_counter()
        self.push_battery(
            battery,
            inputs.interval_h,
            inputs.terminal,
            inputs.sustain_h,
            deployment,
            inputs.degradation_per_mwh,
        )
        costs = np.zeros(self.solver.n_cols)
        self.set_dispatch_bounds(battery, bounds)
        self.objective_costs(
            costs,
            0,
            1.0,
            price,
            reserve_price,
            deployment,
            inputs.interval_h,
            inputs.degradation_per_mwh,
            inputs.terminal.value_per_mwh,
            inputs.vom_per_mwh,
        )
        update_s = time.perf_counter() - started
        result = self.run(battery, costs, "market model", [price])
        integer = self.integer_intervals
        loaded = time.perf_counter()
        sched = self.schedule(result, 0)
        load_s = time.perf_counter() - loaded
        report = self._report(
            battery,
            inputs,
            sched.p_dis,
            sched.p_ch,
            sched.e,
            sched.reserves,
            result.objective,
            update_s,
            result.solve_s,
            result.highs_s,
            load_s,
            integer,
        )
        return MarketSchedule(sched.p_dis, sched.p_ch, sched.e, sched.reserves, report)

    def _report(
        self,
        battery: BatteryAggregate,
        inputs: MarketInputs,
        p_dis: F64,
        p_ch: F64,
        e: F64,
        reserves: dict[Product, F64],
        objective: float,
        update_s: float,
        solve_s: float,
        highs_s: float,
        load_s: float,
        integer: int,
    ) -> SolveReport:
        dt, price = inputs.interval_h, np.asarray(inputs.energy_price)
        zero = np.zeros(self.horizon)
        up = sum((reserves[k] for k in reserves if k in UP), zero)
        down = reserves.get(Product.REG_DOWN, zero)
        dep = inputs.deployment
        dep_up = sum((dep.get(k, 0.0) * reserves[k] for k in reserves if k in UP), zero)
        dep_down = dep.get(Product.REG_DOWN, 0.0) * down
        split = {"energy": float(np.sum(price * dt * (p_dis - p_ch)))}
        for k, r in reserves.items():
            split[k.value] = float(np.sum(np.asarray(inputs.reserve_price[k]) * dt * r))
        split["deployment"] = float(np.sum(price * dt * (dep_up - dep_down)))
        split["degradation"] = -float(
            inputs.degradation_per_mwh * dt * np.sum(p_dis + p_ch + dep_up + dep_down)
        )
        split["variable_om"] = -float(inputs.vom_per_mwh * dt * np.sum(p_dis))
        split["terminal_value"] = float(inputs.terminal.value_per_mwh * e[-1])
        tol = 1e-6 * max(1.0, battery.p_discharge_max_mw, battery.p_charge_max_mw)
        return SolveReport(
            model="market",
            horizon=self.horizon,
            scenarios=1,
            build_s=self.build_s,
            update_s=update_s,
            solve_s=solve_s,
            highs_s=highs_s,
            load_s=load_s,
            status="optimal",
            objective=objective,
            objective_split=split,
            binding=binding_families(
                e=e,
                p_dis=p_dis,
                p_ch=p_ch,
                up=up,
                down=down,
                battery=battery,
                sustain_h=inputs.sustain_h,
                terminal=inputs.terminal,
                has_up=any(k in UP for k in reserves),
                has_down=Product.REG_DOWN in reserves,
            ),
            integer_intervals=integer,
            simultaneous_intervals=int(((p_dis > tol) & (p_ch > tol)).sum()),
        )


def build_market_model(horizon: int, reserves: Sequence[Product] = ()) -> MarketModel:
    """The market model for ``horizon`` intervals with the given reserve products."""
    return MarketModel(horizon, reserves)
