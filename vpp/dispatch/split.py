"""Split a group's power target across its sites — vectorized, limit-safe, SoC-balancing.

Given a target ``P`` (kW, + = discharge) for the rest of an interval of ``τ`` hours, each
eligible site ``i`` can deliver at most

    cap⁺_i = min(P⁺_max,i, (E_i − E_min,i)·η_d,i / τ)      (discharging)
    cap⁻_i = min(P⁻_max,i, (E_max,i − E_i) / η_c,i / τ)     (charging)

— its power limit, or what its SoC window lets it hold until the interval ends. Sites that
are stale, offline, unresponsive, unavailable or in fault get nothing.

Reserve headroom: an awarded up-reserve ``R⁺`` (down-reserve ``R⁻``) is kept free by
scaling every site's cap in that direction by ``1 − R/Σcap``: each site keeps the same
share of its headroom, so a reserve call can be split the same way.

SoC balancing by water-filling on energy: site ``i`` gets ``p_i = min(cap_i, λ·w_i)``
with ``w_i`` its dischargeable energy (for a discharge target) or its chargeable headroom
(for a charge target), and ``λ`` such that ``Σ p_i = P``. Fuller sites discharge more and
emptier ones charge more, so sites drift toward the same time-to-empty. ``λ`` is found
by fixing the capped set and solving for the rest, repeated until no new site caps —
each round one pass over the arrays, a handful of rounds in practice, never a sort.

Rounding to the device resolution keeps the total (cumulative rounding, linear time: see
:func:`round_keeping_total`). If ``Σ cap < |P|`` every site runs at its cap and the exact
gap is reported as the shortfall.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class SplitInput:
    """Per-site arrays (one group) plus the eligibility mask."""

    eligible: B
    soc: F64
    capacity_kwh: F64
    soc_min: F64
    soc_max: F64
    p_charge_max_kw: F64
    p_discharge_max_kw: F64
    eff_charge: F64
    eff_discharge: F64


@dataclass(frozen=True, slots=True)
class SplitResult:
    setpoint_kw: F64  # per site, + = discharge; 0 for ineligible sites
    allocated_kw: float
    shortfall_kw: float  # |target| the group cannot cover (same sign as the target)
    cap_kw: F64  # each site's cap in the target's direction (after reserve headroom)


def direction_caps(inp: SplitInput, hours_left: float, discharge: bool) -> tuple[F64, F64]:
    """(cap, energy weight) per site in one direction; zero where ineligible."""
    tau = max(hours_left, 1e-6)
    e = inp.soc * inp.capacity_kwh
    if discharge:
        energy = e - inp.soc_min * inp.capacity_kwh
        np.maximum(energy, 0.0, out=energy)
        energy *= inp.eff_discharge
        p_max = inp.p_discharge_max_kw
    else:
        energy = inp.soc_max * inp.capacity_kwh - e
        np.maximum(energy, 0.0, out=energy)
        energy /= inp.eff_charge
        p_max = inp.p_charge_max_kw
    energy[~inp.eligible] = 0.0
    cap = np.minimum(p_max, energy / tau)
    return cap, energy


def water_fill(target: float, cap: F64, weight: F64, max_rounds: int = 64) -> F64:
    """``p = min(cap, λ·w)`` with ``Σp = target`` (target ≤ Σcap, all inputs ≥ 0)."""
    if target <= 0:
        return np.zeros_like(cap)
    w = weight if weight.sum() > 0 else cap  # no energy anywhere: shares of the caps
    capped = np.zeros(cap.shape, dtype=bool)
    free_w = float(w.sum())
    capped_cap = 0.0
    for _ in range(max_rounds):
        rest = target - capped_cap
        if free_w <= 0 or rest <= 0:
            break
        lam = rest / free_w
        newly = (lam * w >= cap) & ~capped
        if not newly.any():
            p = lam * w
            np.copyto(p, cap, where=capped)
            return p
        free_w -= float(w[newly].sum())
        capped_cap += float(cap[newly].sum())
        capped |= newly
    # Degenerate or slow convergence: finish exactly with a sort (rare).
    return _water_fill_sorted(target, cap, w)


def _water_fill_sorted(target: float, cap: F64, w: F64) -> F64:
    ratio = np.where(w > 0, cap / np.where(w > 0, w, 1.0), np.inf)
    order = np.argsort(ratio)
    cap_o, w_o = cap[order], w[order]
    cum_cap = np.concatenate(([0.0], np.cumsum(cap_o)))
    rest_w = np.concatenate((np.cumsum(w_o[::-1])[::-1], [0.0]))
    lam = np.inf
    for k in range(len(cap_o) + 1):
        if rest_w[k] <= 0:
            break
        lam_k = (target - cum_cap[k]) / rest_w[k]
        if k == len(cap_o) or lam_k * w_o[k] <= cap_o[k]:
            lam = lam_k
            break
    p_o = np.minimum(cap_o, lam * w_o) if np.isfinite(lam) else cap_o
    p = np.empty_like(p_o)
    p[order] = p_o
    return p


def round_keeping_total(p: F64, cap: F64, step: float) -> F64:
    """Multiples of ``step`` that keep the total: cumulative rounding.

    The caps are already multiples of ``step`` (see :func:`split`), so flooring or ceiling a
    setpoint never crosses its cap. The running total is rounded and differenced: every
    site gets its value floored or ceiled and the sum moves by less than one step — in
    linear time, no sort.
    """
    if step <= 0:
        return p
    units = np.minimum(p, cap) / step
    total = np.cumsum(units)
    np.rint(total, out=total)
    rounded = np.diff(total, prepend=0.0)
    rounded *= step
    return rounded


def split(
    inp: SplitInput,
    target_kw: float,
    hours_left: float,
    *,
    reserve_up_kw: float = 0.0,
    reserve_down_kw: float = 0.0,
    resolution_kw: float = 0.0,
) -> SplitResult:
    """Allocate ``target_kw`` across the group (see the module docstring)."""
    discharge = target_kw >= 0
    cap, energy = direction_caps(inp, hours_left, discharge)
    reserve = reserve_up_kw if discharge else reserve_down_kw
    total_cap = float(cap.sum())
    if reserve > 0 and total_cap > 0:
        cap *= max(0.0, 1.0 - reserve / total_cap)
    if resolution_kw > 0:  # a device can only hold multiples of its resolution
        cap = np.floor(cap / resolution_kw + 1e-9) * resolution_kw
    total_cap = float(cap.sum())
    want = abs(target_kw)
    p = cap.copy() if want >= total_cap else water_fill(want, cap, energy)
    p = round_keeping_total(p, cap, resolution_kw)
    allocated = float(p.sum())
    # What no site can cover: the target beyond the group's (rounded) capacity. Below it,
    # the difference between target and allocation is rounding, not a shortfall.
    shortfall = want - total_cap if want > total_cap + 1e-9 else 0.0
    sign = 1.0 if discharge else -1.0
    if not discharge:
        p = -p
    return SplitResult(p, sign * allocated, sign * shortfall, cap)
