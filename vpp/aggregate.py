"""The fleet seen as one battery per group, at the market boundary (kW/kWh → MW/MWh).

This is the one place where engine units (kW, kWh) become market units (MW, MWh).

Efficiencies of a group are capacity-weighted means of its sites' (exact when the sites
agree, a close approximation when they differ by a few percent).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from optimizer.inputs import BatteryAggregate
from vpp.fleet.hierarchy import NodeAggregate

if TYPE_CHECKING:  # a type only: the scenario module needs the bidding code at run time
    from vpp.scenario import FleetEntry

KW_PER_MW = 1000.0


def battery_from_entries(entries: Sequence[FleetEntry]) -> BatteryAggregate:
    """A scenario fleet's group as one aggregate battery (nameplate)."""
    cap = sum(e.count * e.capacity_kwh for e in entries)
    if cap <= 0:
        raise ValueError("a group needs capacity")

    def weighted(attr: str) -> float:
        return sum(e.count * e.capacity_kwh * float(getattr(e, attr)) for e in entries) / cap

    return BatteryAggregate(
        e_min_mwh=sum(e.count * e.capacity_kwh * e.soc_min for e in entries) / KW_PER_MW,
        e_max_mwh=sum(e.count * e.capacity_kwh * e.soc_max for e in entries) / KW_PER_MW,
        e_initial_mwh=sum(e.count * e.capacity_kwh * e.soc_initial for e in entries) / KW_PER_MW,
        p_charge_max_mw=sum(e.count * e.p_charge_max_kw for e in entries) / KW_PER_MW,
        p_discharge_max_mw=sum(e.count * e.p_discharge_max_kw for e in entries) / KW_PER_MW,
        eff_charge=weighted("eff_charge"),
        eff_discharge=weighted("eff_discharge"),
    )


def battery_from_node(
    node: NodeAggregate,
    *,
    eff_charge: float,
    eff_discharge: float,
    quantile: float = 0.9,
    backup_reserve_kwh: float = 0.0,
    promised_out_mwh: float = 0.0,
    promised_in_mwh: float = 0.0,
) -> BatteryAggregate:
    """A live group (from the fleet hierarchy) as one battery: its *free* capacity (what is
    not committed to peak shaving or site targets), sized to an availability quantile.

    Powers are the free sites' bid powers at the quantile (P90: of the sites that will be
    there nine times out of ten): each site's rating, limited to what it can hold over the
    hierarchy's bid horizon when one is set (:mod:`vpp.fleet.estimates` says why pooled
    energy alone over-promises); the optimizer's SoC constraints limit energy.
    Energies are stored energy relative to the floor: ``E_min = backup``,
    ``E₀ = E_min + E_dis/η_d`` (the hierarchy reports energy at the grid),
    ``E_max = E₀ + E_chg·η_c``; the lower bound of available energy is used, so bids never
    count on energy a stale site might no longer have.

    ``promised_out_mwh`` / ``promised_in_mwh`` (at the grid) are what standing bids for
    intervals not yet over could still take out or put in if every offer (charge bid)
    cleared. New bids get the window that leaves: ``E₀`` lowered by ``out/η_d`` (not below
    the floor) and the headroom by ``in·η_c`` — so a megawatt-hour is promised once, even
    when the intervals it was promised for were bid in earlier cycles.
    """
    free = node.free
    if quantile == 0.9:
        p_dis, p_chg = free.p_discharge_bid_p90_kw, free.p_charge_bid_p90_kw
    elif quantile == 0.5:
        p_dis, p_chg = free.p_discharge_bid_p50_kw, free.p_charge_bid_p50_kw
    else:
        raise ValueError(f"the hierarchy reports P50 and P90 availability, not P{quantile:.0%}")
    e_min = backup_reserve_kwh / KW_PER_MW
    above_floor = max(free.e_discharge_kwh.lower / eff_discharge - backup_reserve_kwh, 0.0)
    e0 = e_min + max(above_floor / KW_PER_MW - promised_out_mwh / eff_discharge, 0.0)
    headroom = max(
        free.e_charge_kwh.lower * eff_charge / KW_PER_MW - promised_in_mwh * eff_charge, 0.0
    )
    return BatteryAggregate(
        e_min_mwh=e_min,
        e_max_mwh=e0 + headroom,
        e_initial_mwh=e0,
        p_charge_max_mw=p_chg / KW_PER_MW,
        p_discharge_max_mw=p_dis / KW_PER_MW,
        eff_charge=eff_charge,
        eff_discharge=eff_discharge,
    )
