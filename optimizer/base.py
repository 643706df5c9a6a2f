"""What the market and scenario models share: parameters in, HiGHS columns out.

A :class:`DispatchModel` owns a built Pyomo model of one or more dispatch blocks (one per
price path) and its persistent HiGHS instance. For each solve it

1. refuses contradictory inputs (:func:`optimizer.report.check_inputs`);
2. writes battery and economics into the model's mutable parameters, and — only when one
   of them differs from the last solve — pushes them all through Pyomo (full path);
3. builds the objective coefficient vector from the prices in NumPy and pushes it, with
   the initial energy's row bound, straight to HiGHS (hot path);
4. makes ``u_t`` binary exactly where the path's price is negative;
5. runs HiGHS warm and reads every block's schedule back as arrays.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyomo.environ as pyo

from market.definitions import Product
from optimizer.blocks import UP
from optimizer.inputs import BatteryAggregate, Terminal
from optimizer.report import InfeasibleInputError
from optimizer.solver import MIP_REL_GAP, PersistentHighs, RunResult

Simultaneous = Literal["forbid", "time_share"]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class BlockColumns:
    """HiGHS column indices of one dispatch block's variables."""

    p_dis: I64
    p_ch: I64
    e: I64
    u: I64
    reserves: dict[Product, I64]
    e0_row: int


@dataclass(frozen=True)
class DispatchBounds:
    """Per block and interval bounds on discharge and charge (MW, ``(blocks, T)``; ``NaN``
    = the battery's own limit). Two uses: an interval already bid or awarded is *fixed*
    (lower = upper = what it delivers in that block's price path), and a curve that must
    contain a schedule gets the schedule as its *lower* bound in every block."""

    dis_lower: F64
    dis_upper: F64
    ch_lower: F64
    ch_upper: F64


@dataclass(frozen=True, slots=True)
class BlockSchedule:
    p_dis: F64
    p_ch: F64
    e: F64
    reserves: dict[Product, F64]


def _sig(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, tuple):
        return tuple(_sig(v) for v in value)
    return value


class DispatchModel:
    def __init__(
        self,
        model: pyo.ConcreteModel,
        blocks: list[pyo.Block],
        reserves: tuple[Product, ...],
        build_started: float,
        mip_rel_gap: float = MIP_REL_GAP,
    ) -> None:
        if not 0 <= mip_rel_gap < 1:
            raise ValueError(f"mip_rel_gap must be in [0, 1), got {mip_rel_gap}")
        self.mip_rel_gap = mip_rel_gap
        self.model = model
        self.blocks = blocks
        self.reserves = reserves
        self.horizon = len(model.T)
        self._solver: PersistentHighs | None = None
        self.columns: list[BlockColumns] = []
        self._integer: list[set[int]] = [set() for _ in blocks]
        self._structure: tuple[Any, ...] | None = None
        self.build_s = time.perf_counter() - build_started
        self.instance_s = 0.0
        self.solves = 0
        # per block: the last solve's (c_dis, c_ch, reserve costs, end value)
        self._objective: dict[int, tuple[F64, F64, dict[Product, F64], float]] = {}
        self._bounded = False  # dispatch bounds were pushed by the last solve
        # Every solve from scratch (no basis kept): the answer is a function of this
        # solve's inputs alone, not of what was solved before — bids must be (the live
        # bidder and a backtest give the same bids on the same inputs, and a degenerate LP
        # has many optima). Slower than a warm re-solve; decision models set it.
        self.cold = False
        # "forbid": no charge and discharge in one interval (binaries where the relaxation
        # would); "time_share": the interval's average may be any point of their convex
        # hull (see :func:`optimizer.blocks.add_no_simultaneous`): one LP, no binaries.
        self.simultaneous: Simultaneous = "forbid"

    @property
    def solver(self) -> PersistentHighs:
        """The HiGHS instance, created at the first solve — when the parameters already
        hold that solve's values, so no second pass over them is needed."""
        if self._solver is None:
            started = time.perf_counter()
            solver = PersistentHighs(self.model, mip_rel_gap=self.mip_rel_gap)
            solver.cold = self.cold
            T = list(self.model.T)  # noqa: N806 - the model's interval set
            self.columns = [
                BlockColumns(
                    p_dis=solver.cols([b.p_dis[t] for t in T]),
                    p_ch=solver.cols([b.p_ch[t] for t in T]),
                    e=solver.cols([b.e[t] for t in T]),
                    u=solver.cols([b.u[t] for t in T]),
                    reserves={k: solver.cols([b.r[k.value, t] for t in T]) for k in self.reserves},
                    # E₀'s one row: the balance's first, or E_{-1}'s own with reserves
                    e0_row=solver.row(b.start if self.reserves else b.soc_balance[0]),
                )
                for b in self.blocks
            ]
            self._solver = solver
            self.instance_s = time.perf_counter() - started
        return self._solver

    # -- parameters ------------------------------------------------------------------------

    def _structure_key(
        self,
        battery: BatteryAggregate,
        interval_h: float,
        terminal: Terminal,
        sustain_h: float,
        deployment: dict[Product, float],
    ) -> tuple[Any, ...]:
        """What forces the full parameter push when it changes (the initial energy does not:
        it is the hot path's row bound). Rounded to 12 significant digits, so the float noise
        of a battery recomputed from fresh telemetry (1e-16 MWh) does not force it."""
        return tuple(
            _sig(v)
            for v in self._structure_values(battery, interval_h, terminal, sustain_h, deployment)
        )

    def _structure_values(
        self,
        battery: BatteryAggregate,
        interval_h: float,
        terminal: Terminal,
        sustain_h: float,
        deployment: dict[Product, float],
    ) -> tuple[Any, ...]:
        return (
            interval_h,
            battery.e_min_mwh,
            battery.e_max_mwh,
            battery.p_charge_max_mw,
            battery.p_discharge_max_mw,
            battery.eff_charge,
            battery.eff_discharge,
            sustain_h,
            tuple(deployment.get(k, 0.0) for k in self.reserves),
            battery.e_min_mwh if terminal.e_target_mwh is None else terminal.e_target_mwh,
        )

    def push_battery(
        self,
        battery: BatteryAggregate,
        interval_h: float,
        terminal: Terminal,
        sustain_h: float,
        deployment: dict[Product, float],
        degradation_per_mwh: float,
    ) -> None:
        m = self.model
        m.dt.set_value(interval_h)
        m.e0.set_value(battery.e_initial_mwh)
        m.e_min.set_value(battery.e_min_mwh)
        m.e_max.set_value(battery.e_max_mwh)
        m.p_dis_max.set_value(battery.p_discharge_max_mw)
        m.p_ch_max.set_value(battery.p_charge_max_mw)
        m.eta_c.set_value(battery.eff_charge)
        m.eta_d.set_value(battery.eff_discharge)
        m.sustain_h.set_value(sustain_h)
        m.deg_cost.set_value(degradation_per_mwh)
        target = terminal.e_target_mwh
        m.e_target.set_value(battery.e_min_mwh if target is None else target)
        m.end_value.set_value(terminal.value_per_mwh)
        m.c_ch.set_value(interval_h * battery.eff_charge)
        m.c_dis.set_value(interval_h / battery.eff_discharge)
        m.s_c.set_value(sustain_h * battery.eff_charge)
        m.s_d.set_value(sustain_h / battery.eff_discharge)
        for k in self.reserves:
            delta = deployment.get(k, 0.0)
            m.deploy[k.value].set_value(delta)
            # the side a deployed MWh comes from sets what it moves in store (blocks)
            m.c_dep_c[k.value].set_value(interval_h * battery.eff_charge * delta)
            m.c_dep_d[k.value].set_value(interval_h * delta / battery.eff_discharge)
        key = self._structure_key(battery, interval_h, terminal, sustain_h, deployment)
        if self._solver is None:
            self._structure = key  # the instance is created from these values
        elif key != self._structure:
            self.solver.update_all_parameters()  # full path
            self._structure = key
        for cols in self.columns:  # hot path: E_{-1} is the balance row's constant
            self.solver.set_row_bounds(cols.e0_row, battery.e_initial_mwh, battery.e_initial_mwh)

    def set_dispatch_bounds(self, battery: BatteryAggregate, bounds: DispatchBounds | None) -> None:
        """Push ``bounds`` (or the battery's limits everywhere) to every block's ``P⁺, P⁻``
        columns — the hot path: no Pyomo pass. Each solve sets them afresh, so a bound of
        one solve never leaks into the next."""
        if bounds is None and not self._bounded:
            return  # nothing set before: the model's own bounds hold
        self._bounded = bounds is not None
        blocks = len(self.blocks)
        shape = (blocks, self.horizon)
        inf_d, inf_c = battery.p_discharge_max_mw, battery.p_charge_max_mw
        if bounds is None:
            lo_d = np.zeros(shape)
            hi_d = np.full(shape, inf_d)
            lo_c = np.zeros(shape)
            hi_c = np.full(shape, inf_c)
        else:
            for name in ("dis_lower", "dis_upper", "ch_lower", "ch_upper"):
                if getattr(bounds, name).shape != shape:
                    raise ValueError(
                        f"dispatch bounds {name}: {getattr(bounds, name).shape} != {shape}"
                    )
            hi_d = np.clip(np.nan_to_num(bounds.dis_upper, nan=inf_d), 0.0, inf_d)
            hi_c = np.clip(np.nan_to_num(bounds.ch_upper, nan=inf_c), 0.0, inf_c)
            lo_d = np.minimum(np.clip(np.nan_to_num(bounds.dis_lower, nan=0.0), 0.0, None), hi_d)
            lo_c = np.minimum(np.clip(np.nan_to_num(bounds.ch_lower, nan=0.0), 0.0, None), hi_c)
        idx = np.concatenate([np.concatenate([c.p_dis, c.p_ch]) for c in self.columns])
        lower = np.concatenate([np.concatenate([lo_d[b], lo_c[b]]) for b in range(blocks)])
        upper = np.concatenate([np.concatenate([hi_d[b], hi_c[b]]) for b in range(blocks)])
        self.solver.set_col_bounds(idx, lower, upper)

    def objective_costs(
        self,
        costs: F64,
        block: int,
        weight: float,
        price: F64,
        reserve_price: dict[Product, F64],
        deployment: dict[Product, float],
        interval_h: float,
        degradation_per_mwh: float,
        end_value: float,
        vom_per_mwh: float = 0.0,
    ) -> None:
        """One block's coefficients (equations in :func:`optimizer.blocks.add_objective_costs`),
        added, weighted, into ``costs`` — the vector HiGHS gets.

        This is the one place the objective's numbers are computed. The Pyomo model declares
        the objective's structure (``b.net``: a cost parameter times each variable); its cost
        parameters take these numbers only when asked (:meth:`sync_objective`, e.g. to write
        the model out or to inspect it), because writing 3·T Pyomo parameters per solve cost
        more than the solve itself (4 of 7 ms on a 288-interval re-solve)."""
        cols = self.columns[block]
        dt, deg = interval_h, degradation_per_mwh
        c_dis = (price - deg - vom_per_mwh) * dt
        c_ch = -(price + deg) * dt
        costs[cols.p_dis] += weight * c_dis
        costs[cols.p_ch] += weight * c_ch
        c_res: dict[Product, F64] = {}
        for k, c in cols.reserves.items():
            delta = deployment.get(k, 0.0)
            sign = 1.0 if k in UP else -1.0
            c_res[k] = (reserve_price[k] + sign * delta * price - deg * delta) * dt
            costs[c] += weight * c_res[k]
        costs[cols.e[-1]] += weight * end_value
        self._objective[block] = (c_dis, c_ch, c_res, end_value)

    def sync_objective(self) -> None:
        """Write the last solve's objective coefficients into the Pyomo cost parameters, so
        ``value(model.obj)`` at the solution equals what HiGHS optimized."""
        for block, (c_dis, c_ch, c_res, end_value) in self._objective.items():
            b = self.blocks[block]
            b.cost_dis.store_values(dict(enumerate(c_dis.tolist())))
            b.cost_ch.store_values(dict(enumerate(c_ch.tolist())))
            b.cost_end.set_value(end_value)
            for k, c_r in c_res.items():
                b.cost_r.store_values({(k.value, t): v for t, v in enumerate(c_r.tolist())})

    def set_integer(self, block: int, wanted: set[int]) -> None:
        """Make ``u_t`` binary exactly for the intervals in ``wanted``."""
        b = self.blocks[block]
        current = self._integer[block]
        changed = []
        for t in wanted - current:
            b.u[t].domain = pyo.Binary
            changed.append(b.u[t])
        for t in current - wanted:
            b.u[t].domain = pyo.Reals
            b.u[t].setlb(0)
            b.u[t].setub(1)
            changed.append(b.u[t])
        self.solver.update_variables(changed)
        self._integer[block] = set(wanted)
        self.solver.integer = any(self._integer)

    # -- solve -----------------------------------------------------------------------------

    def _simultaneous(self, result: RunResult, block: int, tol: float) -> set[int]:
        cols = self.columns[block]
        both = (result.values[cols.p_dis] > tol) & (result.values[cols.p_ch] > tol)
        return set(np.flatnonzero(both).tolist())

    def run(
        self, battery: BatteryAggregate, costs: F64, what: str, prices: Sequence[F64]
    ) -> RunResult:
        """Solve; add binaries only where they can matter, and only if the LP needs them.

        The model with every ``u_t`` continuous is a relaxation of the one with binaries, so
        an optimum of it that never charges and discharges in the same interval is optimal
        for the exact problem too (most solves end here, as LPs). Where it does (only
        possible at negative prices, see :func:`optimizer.blocks.add_no_simultaneous`), that
        block's ``u_t`` become binary at every negative price at once (``prices``, one path
        per block) and HiGHS solves one MILP. Adding only the offending intervals would
        need a MILP per round as the optimum moves its losses elsewhere: three rounds of
        2-3 s each on the DE 2019 year, against one of 2.8 s. Any interval still
        simultaneous after that gets its binary too, until none is. Returns the last run,
        with the HiGHS and wall times of all runs added up.
        """
        self.solver.set_costs(costs)
        for block in range(len(self.blocks)):
            self.set_integer(block, set())
        tol = 1e-6 * max(1.0, battery.p_discharge_max_mw, battery.p_charge_max_mw)
        highs_s = solve_s = 0.0
        for _ in range(len(self.blocks) * self.horizon + 1):
            result = self.solver.run()
            highs_s += result.highs_s
            solve_s += result.solve_s
            if not result.optimal:
                raise InfeasibleInputError(
                    f"{what}: HiGHS found no optimal schedule ({result.status}) for E0 "
                    f"{battery.e_initial_mwh:.6g} MWh in [{battery.e_min_mwh:.6g}, "
                    f"{battery.e_max_mwh:.6g}] MWh, P⁺ {battery.p_discharge_max_mw:.6g} MW, "
                    f"P⁻ {battery.p_charge_max_mw:.6g} MW"
                )
            if self.simultaneous == "time_share":
                break  # the relaxation is the model: no binaries (blocks.add_no_simultaneous)
            offenders = [self._simultaneous(result, b, tol) for b in range(len(self.blocks))]
            if not any(offenders):
                break
            for block, extra in enumerate(offenders):
                if extra:
                    negative = set(np.flatnonzero(np.asarray(prices[block]) < 0).tolist())
                    self.set_integer(block, self._integer[block] | extra | negative)
        self.solves += 1
        return RunResult(result.status, result.objective, result.values, highs_s, solve_s)

    @property
    def integer_intervals(self) -> int:
        return sum(len(s) for s in self._integer)

    def schedule(self, result: RunResult, block: int) -> BlockSchedule:
        cols = self.columns[block]
        v = result.values
        return BlockSchedule(
            p_dis=np.maximum(v[cols.p_dis], 0.0),
            p_ch=np.maximum(v[cols.p_ch], 0.0),
            e=v[cols.e],
            reserves={k: np.maximum(v[c], 0.0) for k, c in cols.reserves.items()},
        )
