"""A site's electricity bill over a long range (up to a year) planned as one model.

Where :mod:`optimizer.peak_model` re-plans a day at a time against the month's peak so far,
this model plans a whole range at once with perfect foresight — the what-if an analyst or a
site owner asks for ("what would this battery and PV have saved us last year?") and the
reference a peer's results are checked against. It carries what real tariffs bill:

- seasonal time-of-use energy prices (any price per interval, see :mod:`market.tariffs`);
- several demand charges at once: each charge ``k`` has a price ``c_k`` per kW and a set of
  intervals it covers (a facility charge on every hour, a peak-period charge on its hours
  only), billed on the highest import within them *in each billing month*: one peak
  variable ``D_{k,m}`` per (charge, month), so a year is one model;
- a grid import limit and an export limit, and an export price (a feed-in tariff, or the
  import price for net metering);
- PV with optional curtailment.

Notation (interval ``t`` of ``Δt`` hours; kW, kWh, currency/kWh): load ``L_t``, PV ``S_t``,
curtailed PV ``C_t``, battery discharge/charge ``P⁺_t, P⁻_t``, stored energy ``E_t``
(end of interval), grid import/export ``G⁺_t, G⁻_t``::

    min  Σ_t Δt (π_t G⁺_t − π^x_t G⁻_t) + Σ_{k,m} c_k D_{k,m} + c_deg Σ_t Δt (P⁺_t + P⁻_t)
    s.t. G⁺_t − G⁻_t = L_t − S_t + C_t − P⁺_t + P⁻_t               (meter)
         0 ≤ G⁺_t ≤ G⁺_max,  0 ≤ G⁻_t ≤ G⁻_max,  0 ≤ C_t ≤ S_t·[curtail]  (limits)
         E_t = E_{t−1} + Δt (η_c P⁻_t − P⁺_t/η_d),  E_min ≤ E_t ≤ E_max  (SoC)
         E_{T−1} ≥ E_end                                              (terminal)
         D_{k,m} ≥ G⁺_t  for every t in month m covered by charge k     (peaks)

An LP, exact without binaries while ``π^x_t ≤ π_t`` and ``c_deg ≥ 0``: charging and
discharging at once, or importing and exporting at once, only loses energy and never lowers
a peak (the pairs cancel at the meter), so an optimum never needs to. An export price above
the import price is refused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyomo.environ as pyo

from optimizer.report import InfeasibleInputError
from optimizer.solver import PersistentHighs

F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class DemandCharge:
    """A demand charge: ``price_per_kw`` on the month's highest import in ``covers``."""

    name: str
    price_per_kw: float
    covers: B  # (T,) the intervals the charge looks at


@dataclass(frozen=True)
class BillInputs:
    interval_h: float
    load_kw: F64  # (T,)
    import_price_per_kwh: F64  # (T,)
    export_price_per_kwh: F64  # (T,)
    month: npt.NDArray[np.int64]  # (T,) billing month of each interval (any labels)
    demand: Sequence[DemandCharge] = ()
    pv_kw: F64 | None = None  # (T,) available PV output
    curtail_pv: bool = False
    import_max_kw: float = float("inf")
    export_max_kw: float = float("inf")
    degradation_per_kwh: float = 0.0


@dataclass(frozen=True, slots=True)
class BillBattery:
    e_min_kwh: float
    e_max_kwh: float
    e0_kwh: float
    e_end_kwh: float
    p_charge_max_kw: float
    p_discharge_max_kw: float
    eff_charge: float
    eff_discharge: float


@dataclass(frozen=True)
class BillPlan:
    p_kw: F64  # battery, + = discharge
    grid_kw: F64  # + = import
    e_kwh: F64
    curtailed_kw: F64
    peaks_kw: dict[tuple[str, int], float]  # (charge name, month) -> billed peak
    objective: float
    build_s: float
    solve_s: float
    highs_s: float


def add_vars(m: pyo.ConcreteModel, inputs: BillInputs, battery: BillBattery, pv: F64) -> None:
    """``P⁺, P⁻, E, G⁺, G⁻, C`` with their bounds (limits, SoC window, curtailment)."""
    b = battery
    m.p_dis = pyo.Var(m.T, bounds=(0, b.p_discharge_max_kw))
    m.p_ch = pyo.Var(m.T, bounds=(0, b.p_charge_max_kw))
    m.e = pyo.Var(m.T, bounds=(b.e_min_kwh, b.e_max_kwh))
    imp = None if np.isinf(inputs.import_max_kw) else inputs.import_max_kw
    exp = None if np.isinf(inputs.export_max_kw) else inputs.export_max_kw
    m.g_imp = pyo.Var(m.T, bounds=(0, imp))
    m.g_exp = pyo.Var(m.T, bounds=(0, exp))
    cap = pv if inputs.curtail_pv else np.zeros_like(pv)
    m.curtail = pyo.Var(m.T, bounds=lambda m, t: (0.0, float(cap[t])))


def add_meter(m: pyo.ConcreteModel, net_kw: F64) -> None:
    """``G⁺_t − G⁻_t = L_t − S_t + C_t − P⁺_t + P⁻_t``."""
    m.meter = pyo.Constraint(
        m.T,
        rule=lambda m, t: (
            m.g_imp[t] - m.g_exp[t] - m.curtail[t] + m.p_dis[t] - m.p_ch[t] == float(net_kw[t])
        ),
    )


def add_soc(m: pyo.ConcreteModel, dt: float, battery: BillBattery) -> None:
    """``E_t = E_{t−1} + Δt (η_c P⁻_t − P⁺_t/η_d)``, ``E_{−1} = E₀``; ``E_{T−1} ≥ E_end``."""
    c_ch, c_dis = dt * battery.eff_charge, dt / battery.eff_discharge

    def rule(m: pyo.ConcreteModel, t: int) -> object:
        prev = battery.e0_kwh if t == 0 else m.e[t - 1]
        return m.e[t] == prev + c_ch * m.p_ch[t] - c_dis * m.p_dis[t]

    m.soc = pyo.Constraint(m.T, rule=rule)
    m.terminal = pyo.Constraint(expr=m.e[m.T.last()] >= battery.e_end_kwh)


def add_peaks(m: pyo.ConcreteModel, groups: list[tuple[str, int, float, list[int]]]) -> None:
    """``D_{k,m} ≥ G⁺_t`` for every interval ``t`` of month ``m`` that charge ``k`` covers."""
    m.K = pyo.RangeSet(0, len(groups) - 1) if groups else pyo.Set(initialize=[])
    m.peak = pyo.Var(m.K, bounds=(0, None))
    pairs = [(k, t) for k, (_, _, _, ts) in enumerate(groups) for t in ts]
    m.peak_pairs = pyo.Set(initialize=pairs, dimen=2)
    m.peak_floor = pyo.Constraint(m.peak_pairs, rule=lambda m, k, t: m.peak[k] >= m.g_imp[t])


def add_objective(
    m: pyo.ConcreteModel,
    inputs: BillInputs,
    groups: list[tuple[str, int, float, list[int]]],
) -> None:
    """Energy bill − export credit + demand charges + degradation (minimised)."""
    dt = inputs.interval_h
    imp, exp = inputs.import_price_per_kwh, inputs.export_price_per_kwh
    deg = inputs.degradation_per_kwh
    m.bill = pyo.Objective(
        expr=sum(
            dt * (float(imp[t]) * m.g_imp[t] - float(exp[t]) * m.g_exp[t])
            + dt * deg * (m.p_dis[t] + m.p_ch[t])
            for t in m.T
        )
        + sum(price * m.peak[k] for k, (_, _, price, _) in enumerate(groups)),
        sense=pyo.minimize,
    )


def _check(inputs: BillInputs, battery: BillBattery) -> tuple[F64, int]:
    n = len(inputs.load_kw)
    problems = []
    for name in ("load_kw", "import_price_per_kwh", "export_price_per_kwh", "month"):
        arr = np.asarray(getattr(inputs, name))
        if arr.shape != (n,):
            problems.append(f"{name} has shape {arr.shape}, expected ({n},)")
        elif arr.dtype.kind == "f" and not np.isfinite(arr).all():
            problems.append(f"{name} has non-finite values")
    pv = np.zeros(n) if inputs.pv_kw is None else np.asarray(inputs.pv_kw, dtype=np.float64)
    if pv.shape != (n,) or (pv < 0).any() or not np.isfinite(pv).all():
        problems.append("pv_kw must be finite, >= 0 and one value per interval")
    for d in inputs.demand:
        if np.asarray(d.covers).shape != (n,) or d.price_per_kw < 0:
            problems.append(f"demand charge {d.name!r}: covers one flag per interval, price >= 0")
    if not problems and np.any(inputs.export_price_per_kwh > inputs.import_price_per_kwh):
        problems.append(
            "export price above the import price in some interval (the LP is exact only without)"
        )
    b = battery
    if not b.e_min_kwh <= b.e0_kwh <= b.e_max_kwh or not b.e_min_kwh <= b.e_end_kwh <= b.e_max_kwh:
        problems.append(
            f"initial {b.e0_kwh:g} and end {b.e_end_kwh:g} kWh must lie in "
            f"[{b.e_min_kwh:g}, {b.e_max_kwh:g}] kWh"
        )
    if inputs.interval_h <= 0 or n == 0:
        problems.append("need at least one interval of positive length")
    if problems:
        raise InfeasibleInputError("bill model: " + "; ".join(problems))
    return pv, n


def plan_bill(inputs: BillInputs, battery: BillBattery) -> BillPlan:
    """Build and solve the bill model (a what-if over a past or future range)."""
    started = time.perf_counter()
    pv, n = _check(inputs, battery)
    months = np.asarray(inputs.month)
    groups: list[tuple[str, int, float, list[int]]] = []
    for d in inputs.demand:
        covers = np.asarray(d.covers, dtype=bool)
        for month in np.unique(months[covers]).tolist():
            ts = np.flatnonzero(covers & (months == month)).tolist()
            groups.append((d.name, int(month), d.price_per_kw, ts))
    m = pyo.ConcreteModel(name="bill")
    m.T = pyo.RangeSet(0, n - 1)
    add_vars(m, inputs, battery, pv)
    add_meter(m, np.asarray(inputs.load_kw, dtype=np.float64) - pv)
    add_soc(m, inputs.interval_h, battery)
    add_peaks(m, groups)
    add_objective(m, inputs, groups)
    solver = PersistentHighs(m)
    build_s = time.perf_counter() - started
    result = solver.run()
    if not result.optimal:
        raise InfeasibleInputError(
            f"bill model: HiGHS found no optimal plan ({result.status}); check the import "
            "limit against the load and the terminal energy against the charge power"
        )
    T = list(m.T)  # noqa: N806 - the model's interval set
    v, col = result.values, solver.cols
    p = v[col([m.p_dis[t] for t in T])] - v[col([m.p_ch[t] for t in T])]
    grid = v[col([m.g_imp[t] for t in T])] - v[col([m.g_exp[t] for t in T])]
    peaks = v[col([m.peak[k] for k in m.K])] if groups else np.zeros(0)
    return BillPlan(
        p_kw=p,
        grid_kw=grid,
        e_kwh=v[col([m.e[t] for t in T])],
        curtailed_kw=v[col([m.curtail[t] for t in T])],
        peaks_kw={(g[0], g[1]): float(x) for g, x in zip(groups, peaks, strict=True)},
        objective=result.objective,
        build_s=build_s,
        solve_s=result.solve_s,
        highs_s=result.highs_s,
    )


def monthly_bill(grid_kw: F64, inputs: BillInputs) -> dict[int, dict[str, float]]:
    """The bill of a grid profile per month: energy (import − export credit) and demand."""
    dt = inputs.interval_h
    months = np.asarray(inputs.month)
    out: dict[int, dict[str, float]] = {}
    imp, exp = np.maximum(grid_kw, 0.0), np.maximum(-grid_kw, 0.0)
    for month in np.unique(months).tolist():
        sel = months == month
        energy = float(
            np.sum(
                dt
                * (
                    inputs.import_price_per_kwh[sel] * imp[sel]
                    - inputs.export_price_per_kwh[sel] * exp[sel]
                )
            )
        )
        demand = 0.0
        for d in inputs.demand:
            covered = sel & np.asarray(d.covers, dtype=bool)
            if covered.any():
                demand += d.price_per_kw * float(np.max(imp[covered]))
        out[int(month)] = {"energy": energy, "demand": demand}
    return out
