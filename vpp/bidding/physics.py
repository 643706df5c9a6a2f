"""Operator input checked against what the fleet can physically do.

A bid curve or a manual target an operator writes is compared with the group's *free*
capacity now (:attr:`vpp.fleet.hierarchy.NodeAggregate.free`: sites neither committed to
peak shaving or site targets nor unable to take a command):

- power: the curve's total offered discharge (charge) in an interval must not exceed the
  free sites' rated discharge (charge) power at P90 availability — what the group
  delivers nine times out of ten;
- energy: over the run of consecutive intervals the group has bids for that are still to
  be delivered (an interval that has ended is the meter's business, not the battery's),
  starting from the stored energy now, the worst case for the battery — every offer
  clearing, and only the price-taking charge bids (at the market's cap) that clear
  whatever the price; an interval already awarded counts its award instead (a standing
  commitment) — must not take out more than the free sites' stored energy, nor put in
  more than their headroom (expected values, at the grid). With ``E`` the cumulative
  worst-case energy out from the first interval still to come to interval ``k``::

      E_k = Σ_{j≤k} Δt·(D_j − T_j)   (D: offered discharge, T: price-taking charge;
                                       an awarded interval: its award p_j)
      F_k = Σ_{j≤k} Δt·C_j           (C: every charge bid; an awarded interval: −min(p_j, 0))
      E_k ≤ E_free,  F_k ≤ H_free

  A breach is the edit's only if the edited interval adds to that direction and the
  breach happens at or after it: a curve that only charges cannot fail the stored-energy
  bound, an offer-only curve cannot fail the headroom bound, and an edit is never refused
  for what the other intervals already do.

Each problem names the bound and the figure that breaks it; an admin may override with a
reason (audited by the caller).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from market.bids import BidCurve
from market.definitions import MarketDefinition, Product
from vpp.aggregate import KW_PER_MW
from vpp.fleet.hierarchy import NodeAggregate

TOL_MW = 1e-6


def curve_problems(
    node: NodeAggregate,
    market: MarketDefinition,
    product: Product,
    edited: datetime,
    curves: dict[datetime, BidCurve],
    *,
    now: datetime | None = None,
    awarded_mw: dict[datetime, float] | None = None,
) -> list[str]:
    """What is wrong with the group's curves (``curves``: by interval start, the edited one
    included) given its free capacity now; empty when every bound holds. ``now``: intervals
    that ended before it are left out; ``awarded_mw``: standing awards by interval start
    (MW, positive discharge), which replace those intervals' worst case."""
    free = node.free
    out: list[str] = []
    curve = curves[edited]
    p_dis = free.p_discharge_rated_p90_kw / KW_PER_MW
    p_ch = free.p_charge_rated_p90_kw / KW_PER_MW
    if curve.max_discharge_mw > p_dis + TOL_MW:
        out.append(
            f"discharge offers total {curve.max_discharge_mw:g} MW, above the group's free "
            f"discharge power at P90 ({p_dis:.3f} MW, {free.sites} free sites)"
        )
    if curve.max_charge_mw > p_ch + TOL_MW:
        out.append(
            f"charge bids total {curve.max_charge_mw:g} MW, above the group's free charge "
            f"power at P90 ({p_ch:.3f} MW, {free.sites} free sites)"
        )
    step = market.interval(product)
    if now is not None and edited + step <= now:
        return out  # delivered already: nothing the battery can still do about it
    hours = step.total_seconds() / 3600.0
    _, cap = market.price_limits(product)
    ahead = {t: c for t, c in curves.items() if now is None or t + step > now}
    awards = awarded_mw or {}
    run = _run(ahead, edited, step)
    e_out = free.e_discharge_kwh.expected / KW_PER_MW
    e_in = free.e_charge_kwh.expected / KW_PER_MW

    def worst(start: datetime) -> tuple[float, float]:
        """(energy out, energy in) of one interval in its worst case, MWh."""
        if start != edited and start in awards:
            p = awards[start]
            return p * hours, max(-p, 0.0) * hours
        c = ahead[start]
        taking = sum(s.quantity_mw for s in c.charge if s.price_per_mwh >= cap)
        return (c.max_discharge_mw - taking) * hours, c.max_charge_mw * hours

    own_out, own_in = worst(edited)
    stored = 0.0  # worst case for the floor: every offer clears, only price-taking charges
    filled = 0.0  # worst case for the ceiling: every charge bid clears, no offer
    for start in run:
        d_out, d_in = worst(start)
        stored += d_out
        filled += d_in
        mine = start >= edited
        if mine and own_out > TOL_MW and stored > e_out + TOL_MW:
            out.append(
                f"if every offer from {run[0]:%Y-%m-%dT%H:%MZ} to {start:%H:%MZ} clears, the "
                f"group delivers {stored:.3f} MWh, more than its free stored energy "
                f"({e_out:.3f} MWh)"
            )
            break
        if mine and own_in > TOL_MW and filled > e_in + TOL_MW:
            out.append(
                f"if every charge bid from {run[0]:%Y-%m-%dT%H:%MZ} to {start:%H:%MZ} clears, "
                f"the group absorbs {filled:.3f} MWh, more than its free headroom "
                f"({e_in:.3f} MWh)"
            )
            break
    return out


def _run(curves: dict[datetime, BidCurve], edited: datetime, step: timedelta) -> list[datetime]:
    """The consecutive intervals around ``edited`` that have curves, in order."""
    first = edited
    while first - step in curves:
        first -= step
    out = []
    t = first
    while t in curves:
        out.append(t)
        t += step
    return out


def target_problems(
    target_kw: float, discharge_kw: float, charge_kw: float, what: str
) -> list[str]:
    """A manual target beyond a node's capability: ``discharge_kw`` / ``charge_kw`` are the
    bounds (a site's ratings; a group's free rated power at P90), ``what`` names them as
    "the rated power of site 's1' to" (then "discharge"/"charge")."""
    bound, direction = (discharge_kw, "discharge") if target_kw >= 0 else (charge_kw, "charge")
    if abs(target_kw) > bound + 1e-6:
        return [f"target {target_kw:g} kW is beyond {what} {direction} ({bound:.1f} kW)"]
    return []
