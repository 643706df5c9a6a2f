"""Scenario bidding: one dispatch per price scenario, monotone in price, read as bid curves.

The model holds ``S`` copies of the dispatch block (:mod:`optimizer.blocks`), one per
price scenario, sharing the battery and its initial state, linked by
:func:`optimizer.blocks.add_monotone_dispatch`::

    max  Σ_s w_s·net_s      s.t. every block's families, and for adjacent scenarios
         P⁺_{s+1,t} ≥ P⁺_{s,t},  P⁻_{s+1,t} ≤ P⁻_{s,t}

where ``net_s`` is scenario ``s``'s energy revenue minus degradation and variable O&M
(per MWh discharged) plus terminal value
and ``w_s`` its probability. Scenarios must be comonotone (each interval's prices
ascending in ``s``; :func:`market.forecasts.price_scenarios` builds them so): then the
linking constraints are fixed, and a new forecast changes parameters only.

Because dispatch is monotone in the interval's price, each interval's (price, quantity)
pairs form a valid step curve — discharge offers and charge bids — which
:mod:`optimizer.curves` merges to the market's rules. The battery passed in should be sized
to the fleet's availability quantile (P90 by default), not its nameplate: a bid the fleet
cannot deliver nine times out of ten is a bid it should not make.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyomo.environ as pyo

from market.bids import BidCurve
from market.definitions import MarketDefinition, Product
from optimizer.base import DispatchBounds, DispatchModel
from optimizer.blocks import add_battery_params, add_monotone_dispatch, build_dispatch_block
from optimizer.curves import curve_for_interval
from optimizer.inputs import BatteryAggregate, ScenarioInputs
from optimizer.report import InfeasibleInputError, SolveReport, binding_families, check_inputs
from optimizer.solver import MIP_REL_GAP

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ScenarioSolution:
    prices: F64  # (S, T)
    p_discharge_mw: F64  # (S, T)
    p_charge_mw: F64  # (S, T)
    e_mwh: F64  # (S, T)
    report: SolveReport

    def curves(self, market: MarketDefinition, product: Product) -> list[BidCurve]:
        """One market-conforming bid curve per interval."""
        return [
            curve_for_interval(
                self.prices[:, t],
                self.p_discharge_mw[:, t],
                self.p_charge_mw[:, t],
                market,
                product,
            )
            for t in range(self.prices.shape[1])
        ]


class ScenarioBidModel(DispatchModel):
    """Built once per (horizon, scenario count); solved with each new set of scenarios."""

    def __init__(self, horizon: int, scenarios: int, *, mip_rel_gap: float = MIP_REL_GAP) -> None:
        started = time.perf_counter()
        if scenarios < 1:
            raise ValueError("need at least one scenario")
        m = pyo.ConcreteModel(name="scenario_bidding")
        add_battery_params(m, horizon, ())
        m.S = pyo.RangeSet(0, scenarios - 1)
        m.scen = pyo.Block(m.S)
        for s in m.S:
            build_dispatch_block(m.scen[s], m)
        add_monotone_dispatch(m)
        m.prob = pyo.Param(m.S, initialize=1.0 / scenarios, mutable=True, within=pyo.Reals)
        m.obj = pyo.Objective(expr=sum(m.prob[s] * m.scen[s].net for s in m.S), sense=pyo.maximize)
        self.scenarios = scenarios
        super().__init__(m, [m.scen[s] for s in m.S], (), started, mip_rel_gap)

    def solve(
        self,
        battery: BatteryAggregate,
        inputs: ScenarioInputs,
        bounds: DispatchBounds | None = None,
    ) -> ScenarioSolution:
        if (inputs.scenarios, inputs.horizon) != (self.scenarios, self.horizon):
            raise ValueError(
                f"model built for {self.scenarios} x {self.horizon}, got "
                f"{inputs.scenarios} x {inputs.horizon}"
            )
        prices = np.asarray(inputs.energy_price, dtype=np.float64)
        check_inputs(battery, self.horizon, inputs.interval_h, inputs.terminal, prices.ravel())
        if self.scenarios > 1 and (np.diff(prices, axis=0) < -1e-9).any():
            s, t = np.argwhere(np.diff(prices, axis=0) < -1e-9)[0]
            raise InfeasibleInputError(
                f"scenario prices must ascend in every interval (comonotone scenarios): "
                f"interval {t}, scenario {s + 1} is priced below scenario {s}"
            )
        probs = (
            np.full(self.scenarios, 1.0 / self.scenarios)
            if inputs.probabilities is None
            else np.asarray(inputs.probabilities, dtype=np.float64)
        )
        if probs.shape != (self.scenarios,) or (probs < 0).any() or abs(probs.sum() - 1) > 1e-9:
            raise InfeasibleInputError("scenario probabilities must be >= 0 and sum to 1")
        started = time.perf_counter()
        self.push_battery(
            battery, inputs.interval_h, inputs.terminal, 1.0, {}, inputs.degradation_per_mwh
        )
        costs = np.zeros(self.solver.n_cols)
        self.set_dispatch_bounds(battery, bounds)
        for s in range(self.scenarios):
            self.model.prob[s].set_value(float(probs[s]))
            self.objective_costs(
                costs,
                s,
                float(probs[s]),
                prices[s],
                {},
                {},
                inputs.interval_h,
                inputs.degradation_per_mwh,
                inputs.terminal.value_per_mwh,
                inputs.vom_per_mwh,
            )
        update_s = time.perf_counter() - started
        result = self.run(battery, costs, "scenario bidding model", list(prices))
        integer = self.integer_intervals
        loaded = time.perf_counter()
        scheds = [self.schedule(result, s) for s in range(self.scenarios)]
        p_dis = np.vstack([x.p_dis for x in scheds])
        p_ch = np.vstack([x.p_ch for x in scheds])
        e = np.vstack([x.e for x in scheds])
        load_s = time.perf_counter() - loaded
        dt = inputs.interval_h
        energy = float(np.sum(probs[:, None] * prices * dt * (p_dis - p_ch)))
        degradation = -float(
            inputs.degradation_per_mwh * dt * np.sum(probs[:, None] * (p_dis + p_ch))
        )
        terminal = float(inputs.terminal.value_per_mwh * np.sum(probs * e[:, -1]))
        binding = binding_families(
            e=e.ravel(),
            p_dis=p_dis.ravel(),
            p_ch=p_ch.ravel(),
            up=np.zeros(e.size),
            down=np.zeros(e.size),
            battery=battery,
            sustain_h=0.0,
            terminal=inputs.terminal,
            has_up=False,
            has_down=False,
        )
        tol = 1e-6 * max(1.0, battery.p_discharge_max_mw, battery.p_charge_max_mw)
        report = SolveReport(
            model="scenario",
            horizon=self.horizon,
            scenarios=self.scenarios,
            build_s=self.build_s,
            update_s=update_s,
            solve_s=result.solve_s,
            highs_s=result.highs_s,
            load_s=load_s,
            status="optimal",
            objective=result.objective,
            objective_split={
                "energy": energy,
                "degradation": degradation,
                "variable_om": -float(inputs.vom_per_mwh * dt * np.sum(probs[:, None] * p_dis)),
                "terminal_value": terminal,
            },
            binding=binding,
            integer_intervals=integer,
            simultaneous_intervals=int(((p_dis > tol) & (p_ch > tol)).sum()),
        )
        return ScenarioSolution(prices, p_dis, p_ch, e, report)


def build_scenario_model(horizon: int, scenarios: int) -> ScenarioBidModel:
    return ScenarioBidModel(horizon, scenarios)
