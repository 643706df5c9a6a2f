"""Solve reports, binding constraints, and input checks that name conflicting inputs."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from optimizer.inputs import BatteryAggregate, Terminal

F64 = npt.NDArray[np.float64]
TOL = 1e-6


class InfeasibleInputError(ValueError):
    """The inputs contradict each other; the message names which and by how much."""


@dataclass(frozen=True, slots=True)
class Binding:
    """A constraint family active (at its limit) in some intervals."""

    family: str
    intervals: int
    first: list[int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class SolveReport:
    model: str
    horizon: int
    scenarios: int
    build_s: float
    update_s: float
    solve_s: float
    highs_s: float
    load_s: float
    status: str
    objective: float
    objective_split: dict[str, float] = field(default_factory=dict)
    binding: list[Binding] = field(default_factory=list)
    integer_intervals: int = 0
    simultaneous_intervals: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["binding"] = [b.to_dict() for b in self.binding]
        return out


def binding_families(
    *,
    e: F64,
    p_dis: F64,
    p_ch: F64,
    up: F64,
    down: F64,
    battery: BatteryAggregate,
    sustain_h: float,
    terminal: Terminal,
    has_up: bool,
    has_down: bool,
) -> list[Binding]:
    """Families at their limit, by primal slack (works for LPs and MILPs alike)."""
    scale = max(1.0, battery.e_max_mwh, battery.p_discharge_max_mw, battery.p_charge_max_mw)
    tol = 1e-6 * scale
    checks: list[tuple[str, npt.NDArray[np.bool_]]] = [
        ("soc-max", e >= battery.e_max_mwh - tol),
        ("soc-min", e <= battery.e_min_mwh + tol),
        ("power-discharge", p_dis >= battery.p_discharge_max_mw - tol),
        ("power-charge", p_ch >= battery.p_charge_max_mw - tol),
    ]
    if has_up:  # net-power headroom, the sum of both sides' (blocks.add_reserve_headroom)
        checks.append(
            (
                "headroom-up",
                (p_dis - p_ch + up >= battery.p_discharge_max_mw - tol) & (up > tol),
            )
        )
    if has_down:
        checks.append(
            (
                "headroom-down",
                (p_ch - p_dis + down >= battery.p_charge_max_mw - tol) & (down > tol),
            )
        )
    # sustain from the start of each interval (optimizer.blocks.add_sustain_duration); the
    # schedule reports each offer whole, so the check takes the part beyond the charge
    # (up) or the discharge (down) as the side that moves the store
    start = np.concatenate([[battery.e_initial_mwh], e[:-1]]) if e.size else e
    if has_up:
        drawn = np.maximum(up - p_ch, 0.0)
        checks.append(
            (
                "sustain-up",
                (start - sustain_h * drawn / battery.eff_discharge <= battery.e_min_mwh + tol)
                & (drawn > tol),
            )
        )
    if has_down:
        stored = np.maximum(down - p_dis, 0.0)
        checks.append(
            (
                "sustain-down",
                (start + sustain_h * battery.eff_charge * stored >= battery.e_max_mwh - tol)
                & (stored > tol),
            )
        )
    out = [
        Binding(name, int(mask.sum()), np.flatnonzero(mask)[:5].tolist())
        for name, mask in checks
        if mask.any()
    ]
    if terminal.e_target_mwh is not None and e.size and e[-1] <= terminal.e_target_mwh + tol:
        out.append(Binding("terminal", 1, [len(e) - 1]))
    return out


def check_inputs(
    battery: BatteryAggregate,
    horizon: int,
    interval_h: float,
    terminal: Terminal,
    prices: F64,
    what: str = "energy price",
) -> None:
    """Refuse contradictory inputs before solving, naming the inputs in conflict."""
    b = battery
    problems = []
    for name, value in (
        ("eff_charge", b.eff_charge),
        ("eff_discharge", b.eff_discharge),
    ):
        if not 0 < value <= 1:
            problems.append(f"{name} {value} must be in (0, 1]")
    for name, value in (
        ("p_charge_max_mw", b.p_charge_max_mw),
        ("p_discharge_max_mw", b.p_discharge_max_mw),
    ):
        if not (math.isfinite(value) and value >= 0):
            problems.append(f"{name} {value} must be a finite number >= 0")
    if b.e_min_mwh > b.e_max_mwh + TOL:
        problems.append(f"floor e_min {b.e_min_mwh:.6g} MWh is above e_max {b.e_max_mwh:.6g} MWh")
    if b.e_initial_mwh < b.e_min_mwh - TOL:
        problems.append(
            f"initial energy {b.e_initial_mwh:.6g} MWh is below the floor e_min "
            f"{b.e_min_mwh:.6g} MWh (soc_min plus backup reserve)"
        )
    if b.e_initial_mwh > b.e_max_mwh + TOL:
        problems.append(
            f"initial energy {b.e_initial_mwh:.6g} MWh is above e_max {b.e_max_mwh:.6g} MWh"
        )
    if interval_h <= 0:
        problems.append(f"interval length {interval_h} h must be positive")
    if terminal.e_target_mwh is not None:
        hours = horizon * interval_h
        reach_up = min(b.e_max_mwh, b.e_initial_mwh + hours * b.eff_charge * b.p_charge_max_mw)
        if terminal.e_target_mwh > b.e_max_mwh + TOL:
            problems.append(
                f"terminal target {terminal.e_target_mwh:.6g} MWh is above e_max "
                f"{b.e_max_mwh:.6g} MWh"
            )
        elif terminal.e_target_mwh > reach_up + TOL:
            problems.append(
                f"terminal target {terminal.e_target_mwh:.6g} MWh is unreachable: from "
                f"{b.e_initial_mwh:.6g} MWh, charging at most {b.p_charge_max_mw:.6g} MW "
                f"(eff {b.eff_charge}) for {hours:g} h reaches {reach_up:.6g} MWh"
            )
    bad = np.flatnonzero(~np.isfinite(prices))
    if bad.size:
        problems.append(f"{what} is not finite at interval {int(bad.flat[0])}")
    if problems:
        raise InfeasibleInputError("; ".join(problems))
