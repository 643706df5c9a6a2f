"""Peak shaving for one site: cut the demand charge and the energy bill with its battery.

Notation (per interval ``t`` of length ``Δt`` hours; kW, kWh, currency/kWh):

- ``L_t``: forecast net load (site load − PV), kW, may be negative (export);
- ``P⁺_t, P⁻_t ≥ 0``: battery discharge and charge at the meter (+ = discharge);
- ``E_t``: stored energy at the end of interval ``t`` (``E_{-1} = E₀``);
- ``G⁺_t, G⁻_t ≥ 0``: grid import and export; ``D ≥ 0``: the billed peak import.

Constraints (one function each below):

- meter balance: ``G⁺_t − G⁻_t = L_t − P⁺_t + P⁻_t``;
- export limit: ``G⁻_t ≤ X`` (``X = max(0, −L_t)`` when the battery may not export, so only
  the site's own surplus leaves; set per interval in the bound ``x_max_t``);
- SoC: ``E_t = E_{t-1} + Δt·(η_c·P⁻_t − P⁺_t/η_d)``, ``E_min ≤ E_t ≤ E_max``;
- terminal: ``E_{T-1} ≥ E_end`` (by default the starting energy, so the plan does not
  borrow energy from the next window to look good in this one);
- peak: ``D ≥ G⁺_t`` for every ``t`` and ``D ≥ D₀``, the peak already set this billing
  month — imports below it cost no demand charge, so the model does not spend energy on
  them.

Objective (minimised): ``c_D·(D − D₀) + Σ_t Δt·(π_t·G⁺_t − π^x_t·G⁻_t) + c_deg·Σ_t Δt·(P⁺_t +
P⁻_t)``, with ``c_D`` the demand charge per kW of monthly peak, ``π`` the time-of-use
import price, ``π^x`` the export price and ``c_deg`` the degradation cost per kWh of
throughput.

Why an LP without a charge/discharge binary: with ``π^x_t ≤ π_t``, ``c_deg ≥ 0`` and
``η < 1``, charging and discharging in the same interval only loses energy, costs
degradation and cannot lower ``D`` (the two cancel at the meter) — an optimum never does
it, so the relaxation is exact. :func:`build_peak_model` refuses an export price above the
import price, where that argument would fail.

The model is built once per horizon and re-solved for each site and each re-plan by
changing its mutable parameters (one full parameter push per solve: a 96-interval model
pushes in well under a millisecond, so the market model's hot path is not needed here).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyomo.environ as pyo

from optimizer.report import InfeasibleInputError
from optimizer.solver import PersistentHighs

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class SiteBattery:
    """One site's battery in kW and kWh (the registry's units)."""

    e_min_kwh: float
    e_max_kwh: float
    p_charge_max_kw: float
    p_discharge_max_kw: float
    eff_charge: float
    eff_discharge: float


@dataclass(frozen=True, slots=True)
class PeakInputs:
    """Everything one solve needs besides the battery; arrays are per interval."""

    interval_h: float
    net_load_kw: F64  # site load − PV (+ = import without the battery)
    import_price_per_kwh: F64
    export_price_per_kwh: F64
    demand_charge_per_kw: float
    e0_kwh: float
    peak_so_far_kw: float = 0.0
    e_end_kwh: float | None = None  # None: end no lower than e0 (or the floor, if above)
    degradation_per_kwh: float = 0.0
    battery_may_export: bool = False


@dataclass(frozen=True, slots=True)
class PeakPlan:
    """The solved plan: battery power (+ discharge), grid import, energy, and the bill."""

    p_kw: F64
    grid_kw: F64  # + import, − export
    e_kwh: F64
    peak_kw: float  # the billed peak after the plan (at least the peak so far)
    peak_without_kw: float  # the same without the battery
    cost: float  # demand charge increase + energy − export + degradation
    cost_without: float
    status: str
    solve_s: float


def add_params(m: pyo.ConcreteModel, horizon: int) -> None:
    """Sets and mutable parameters (battery, tariff, forecast, state)."""
    m.T = pyo.RangeSet(0, horizon - 1)
    mutable = {"mutable": True, "within": pyo.Reals}
    for name in (
        "dt",
        "e0",
        "e_min",
        "e_max",
        "e_end",
        "p_dis_max",
        "p_ch_max",
        "c_ch",
        "c_dis",
        "demand_charge",
        "peak0",
        "deg",
    ):
        setattr(m, name, pyo.Param(initialize=0.0, **mutable))
    m.net_load = pyo.Param(m.T, initialize=0.0, **mutable)
    m.price = pyo.Param(m.T, initialize=0.0, **mutable)
    m.export_price = pyo.Param(m.T, initialize=0.0, **mutable)
    m.x_max = pyo.Param(m.T, initialize=0.0, **mutable)


def add_vars(m: pyo.ConcreteModel) -> None:
    """``P⁺ ∈ [0, P⁺_max]``, ``P⁻ ∈ [0, P⁻_max]``, ``E ∈ [E_min, E_max]``, ``G± ≥ 0``, ``D``."""
    m.p_dis = pyo.Var(m.T, bounds=(0, m.p_dis_max))
    m.p_ch = pyo.Var(m.T, bounds=(0, m.p_ch_max))
    m.e = pyo.Var(m.T, bounds=(m.e_min, m.e_max))
    m.g_imp = pyo.Var(m.T, bounds=(0, None))
    m.g_exp = pyo.Var(m.T, bounds=(0, None))
    m.peak = pyo.Var(bounds=(0, None))


def add_meter_balance(m: pyo.ConcreteModel) -> None:
    """``G⁺_t − G⁻_t = L_t − P⁺_t + P⁻_t`` and ``G⁻_t ≤ x_max_t``."""
    m.meter = pyo.Constraint(
        m.T, rule=lambda m, t: m.g_imp[t] - m.g_exp[t] == m.net_load[t] - m.p_dis[t] + m.p_ch[t]
    )
    m.export_limit = pyo.Constraint(m.T, rule=lambda m, t: m.g_exp[t] <= m.x_max[t])


def add_soc_balance(m: pyo.ConcreteModel) -> None:
    """``E_t = E_{t-1} + c_ch·P⁻_t − c_dis·P⁺_t`` with ``c_ch = Δt·η_c``, ``c_dis = Δt/η_d``."""

    def rule(m: pyo.ConcreteModel, t: int) -> object:
        prev = m.e0 if t == 0 else m.e[t - 1]
        return m.e[t] == prev + m.c_ch * m.p_ch[t] - m.c_dis * m.p_dis[t]

    m.soc_balance = pyo.Constraint(m.T, rule=rule)


def add_terminal(m: pyo.ConcreteModel) -> None:
    """``E_{T-1} ≥ E_end``."""
    m.terminal = pyo.Constraint(expr=m.e[m.T.last()] >= m.e_end)


def add_peak(m: pyo.ConcreteModel) -> None:
    """``D ≥ G⁺_t`` for all ``t``, and ``D ≥ D₀`` (the month's peak so far)."""
    m.peak_covers = pyo.Constraint(m.T, rule=lambda m, t: m.peak >= m.g_imp[t])
    m.peak_floor = pyo.Constraint(expr=m.peak >= m.peak0)


def add_objective(m: pyo.ConcreteModel) -> None:
    """``c_D·D + Σ Δt·(π G⁺ − π^x G⁻ + c_deg (P⁺ + P⁻))`` (``c_D·D₀`` is a constant)."""
    m.bill = pyo.Objective(
        expr=m.demand_charge * m.peak
        + sum(
            m.dt * (m.price[t] * m.g_imp[t] - m.export_price[t] * m.g_exp[t])
            + m.dt * m.deg * (m.p_dis[t] + m.p_ch[t])
            for t in m.T
        ),
        sense=pyo.minimize,
    )


class PeakShavingModel:
    """One horizon's model and its persistent HiGHS instance, re-solved per site/re-plan."""

    def __init__(self, horizon: int) -> None:
        started = time.perf_counter()
        m = pyo.ConcreteModel(name=f"peak_shaving_{horizon}")
        add_params(m, horizon)
        add_vars(m)
        add_meter_balance(m)
        add_soc_balance(m)
        add_terminal(m)
        add_peak(m)
        add_objective(m)
        self.model = m
        self.horizon = horizon
        self._solver: PersistentHighs | None = None
        self.build_s = time.perf_counter() - started

    def solve(self, battery: SiteBattery, inputs: PeakInputs) -> PeakPlan:
        """Plan the battery; :class:`InfeasibleInputError` names contradictory inputs."""
        load = _checked(inputs, battery, self.horizon)
        m = self.model
        e_end = inputs.e_end_kwh
        if e_end is None:
            e_end = min(max(inputs.e0_kwh, battery.e_min_kwh), battery.e_max_kwh)
        values = {
            "dt": inputs.interval_h,
            "e0": inputs.e0_kwh,
            "e_min": battery.e_min_kwh,
            "e_max": battery.e_max_kwh,
            "e_end": e_end,
            "p_dis_max": battery.p_discharge_max_kw,
            "p_ch_max": battery.p_charge_max_kw,
            "c_ch": inputs.interval_h * battery.eff_charge,
            "c_dis": inputs.interval_h / battery.eff_discharge,
            "demand_charge": inputs.demand_charge_per_kw,
            "peak0": inputs.peak_so_far_kw,
            "deg": inputs.degradation_per_kwh,
        }
        for name, value in values.items():
            getattr(m, name).set_value(float(value))
        surplus = np.maximum(0.0, -load)
        x_max = surplus + battery.p_discharge_max_kw if inputs.battery_may_export else surplus
        for t in range(self.horizon):
            m.net_load[t].set_value(float(load[t]))
            m.price[t].set_value(float(inputs.import_price_per_kwh[t]))
            m.export_price[t].set_value(float(inputs.export_price_per_kwh[t]))
            m.x_max[t].set_value(float(x_max[t]))
        if self._solver is None:
            self._solver = PersistentHighs(m)
        else:
            self._solver.update_all_parameters()
        solver = self._solver
        result = solver.run()
        if not result.optimal:
            raise InfeasibleInputError(
                f"peak shaving: HiGHS found no optimal plan ({result.status}) for E0 "
                f"{inputs.e0_kwh:g} kWh, E_end {e_end:g} kWh, window "
                f"[{battery.e_min_kwh:g}, {battery.e_max_kwh:g}] kWh"
            )
        T = list(m.T)  # noqa: N806 - the model's interval set
        col = solver.cols
        p = result.values[col([m.p_dis[t] for t in T])] - result.values[col([m.p_ch[t] for t in T])]
        grid = (
            result.values[col([m.g_imp[t] for t in T])]
            - result.values[col([m.g_exp[t] for t in T])]
        )
        e = result.values[col([m.e[t] for t in T])]
        peak = float(result.values[col([m.peak])][0])
        return PeakPlan(
            p_kw=p,
            grid_kw=grid,
            e_kwh=e,
            peak_kw=peak,
            peak_without_kw=max(inputs.peak_so_far_kw, float(np.max(load, initial=0.0))),
            cost=_bill(inputs, grid, p, peak),
            cost_without=_bill(inputs, load, np.zeros_like(load), None),
            status=result.status,
            solve_s=result.solve_s,
        )


def _bill(inputs: PeakInputs, grid_kw: F64, p_kw: F64, peak_kw: float | None) -> float:
    """Demand charge above the peak so far + energy − export + degradation."""
    peak = max(inputs.peak_so_far_kw, float(np.max(grid_kw, initial=0.0)))
    if peak_kw is not None:
        peak = max(peak, peak_kw)
    dt = inputs.interval_h
    energy = float(
        np.sum(
            np.maximum(grid_kw, 0) * inputs.import_price_per_kwh
            + np.minimum(grid_kw, 0) * inputs.export_price_per_kwh
        )
        * dt
    )
    wear = inputs.degradation_per_kwh * float(np.sum(np.abs(p_kw))) * dt
    return inputs.demand_charge_per_kw * (peak - inputs.peak_so_far_kw) + energy + wear


def _checked(inputs: PeakInputs, battery: SiteBattery, horizon: int) -> F64:
    """The inputs' load as an array, or :class:`InfeasibleInputError` naming the conflict."""
    load = np.asarray(inputs.net_load_kw, dtype=np.float64)
    problems = []
    for name in ("net_load_kw", "import_price_per_kwh", "export_price_per_kwh"):
        arr = np.asarray(getattr(inputs, name), dtype=np.float64)
        if arr.shape != (horizon,):
            problems.append(f"{name} has {arr.size} values, the model {horizon} intervals")
        elif not np.isfinite(arr).all():
            problems.append(f"{name} has non-finite values")
    if not problems and np.any(inputs.export_price_per_kwh > inputs.import_price_per_kwh):
        problems.append("export price above the import price in some interval")
    if not battery.e_min_kwh <= inputs.e0_kwh <= battery.e_max_kwh:
        problems.append(
            f"initial energy {inputs.e0_kwh:g} kWh outside "
            f"[{battery.e_min_kwh:g}, {battery.e_max_kwh:g}] kWh"
        )
    if inputs.e_end_kwh is not None and inputs.e_end_kwh > battery.e_max_kwh:
        problems.append(
            f"end energy {inputs.e_end_kwh:g} kWh above the ceiling {battery.e_max_kwh:g} kWh"
        )
    if inputs.e_end_kwh is not None:
        reach = (
            inputs.e0_kwh
            + horizon * inputs.interval_h * battery.p_charge_max_kw * battery.eff_charge
        )
        if inputs.e_end_kwh > reach + 1e-9:
            problems.append(
                f"end energy {inputs.e_end_kwh:g} kWh unreachable from {inputs.e0_kwh:g} kWh "
                f"(at most {reach:g} kWh at full charge power)"
            )
    if inputs.interval_h <= 0 or inputs.demand_charge_per_kw < 0 or inputs.peak_so_far_kw < 0:
        problems.append("interval, demand charge and peak so far must be positive / non-negative")
    if problems:
        raise InfeasibleInputError("peak shaving: " + "; ".join(problems))
    return load


_MODELS: dict[int, PeakShavingModel] = {}


def peak_model(horizon: int) -> PeakShavingModel:
    """The process's model for ``horizon`` intervals (built at first use, then re-solved).

    Not thread-safe: callers that plan from several threads serialise on their own lock.
    """
    model = _MODELS.get(horizon)
    if model is None:
        model = _MODELS[horizon] = PeakShavingModel(horizon)
    return model
