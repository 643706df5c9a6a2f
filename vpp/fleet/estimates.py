"""Per-site estimates with honest bounds, vectorized over the whole fleet store.

Energy is reported *at the grid meter*: what a site can still deliver above ``soc_min``
is ``(E - E_min)·η_d`` and what it can still absorb below ``soc_max`` is
``(E_max - E)/η_c``, with ``E = soc·capacity``.

Uncertainty by connectivity:

- online: the newest reading is taken as exact (expected = lower = upper);
- stale (age ``a`` hours): the battery may have moved at up to its power limits since, so
  ``E ∈ [max(min(E_min, E), E - P_dis·a/η_d), min(max(E_max, E), E + P_ch·a·η_c)]``; the
  expected value stays the last reading and the bounds widen with age;
- offline, unavailable or in fault: contributes nothing to the expected value and
  ``[0, last known]`` to the bounds; never heard from: ``[0, what its ratings allow]``.

Power a site can offer is energy-limited: ``P_dis = min(P_dis_max, E_dis / h)`` where ``h``
(``sustain_h``) is how long an offer must be held; likewise for charging. Its rated power
(``P_dis_max`` of a usable site, whatever its SoC) is reported too, and the power a site
holds over a whole bid horizon ``H`` (``bid_horizon_h``): ``min(P_dis_max, E_dis/H')`` with
``H' = min(H, D)``, ``D = ΣE_full/ΣP_max`` the fleet's duration at full power (a day-ahead
horizon of 24 h would otherwise cut a 2-hour fleet's offer to a twelfth).
The bidder sizes an aggregate's power on the latter: the aggregate's SoC constraints pool
the sites' energy, but sites of unequal energy-to-power ratios do not empty together at
full power — the small ones run out first and the group's power falls although energy is
left. An aggregate power of ``Σ min(P_i, E_i/H)`` can be held every interval of ``H`` by
every site at its share, so what the bid offers, the split can allocate.

Availability (for P50/P90). Site ``i`` delivers ``B_i·X_i``: ``B_i ~ Bernoulli(a_i)`` with
``a_i`` the site's availability health (an EWMA of being online, discounted for stale
sites, zero for silent ones) and ``X_i`` uniform on its bounds around the expected value.
Summed over many sites the total is close to normal with
``μ = Σ a_i m_i`` and ``σ² = Σ a_i(m_i² + w_i²/12) - a_i² m_i²`` (``w_i`` the bound width),
so ``P50 ≈ μ`` and ``P90 = μ - 1.2816 σ`` (exceeded with 90 % probability), clipped to
``[0, Σ upper]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vpp.twins.states import CommandState, Connectivity, Operation
from vpp.twins.store import FleetStore

F64 = npt.NDArray[np.float64]
Z90 = 1.2815515655446004


def _duration(full_kwh: F64, p_max_kw: F64, mask: npt.NDArray[np.bool_]) -> float:
    """Hours the masked sites together last at full power (inf when none has power)."""
    p = float(np.sum(p_max_kw[mask]))
    return float(np.sum(full_kwh[mask])) / p if p > 0 else float("inf")


@dataclass(frozen=True, slots=True)
class EstimateSettings:
    sustain_h: float = 0.25  # an offered power must be held this long (h)
    stale_availability: float = 0.5  # a stale site's availability relative to an online one
    bid_horizon_h: float | None = None  # bids cover this long: ``p_*_bid_kw`` hold for it


@dataclass(frozen=True, slots=True)
class Triple:
    """Expected value with lower and upper bounds, per site (arrays)."""

    expected: F64
    lower: F64
    upper: F64


@dataclass(frozen=True, slots=True)
class SiteEstimates:
    counted: npt.NDArray[np.bool_]  # active and owned by this instance
    e_discharge_kwh: Triple
    e_charge_kwh: Triple
    p_discharge_kw: Triple
    p_charge_kw: Triple
    p_net_kw: Triple
    p_discharge_rated_kw: Triple  # rating of a usable site, whatever its SoC
    p_charge_rated_kw: Triple
    p_discharge_bid_kw: Triple  # rating, limited to what the site holds over a bid horizon
    p_charge_bid_kw: Triple
    availability: F64
    dispatchable: npt.NDArray[np.bool_]  # usable and not unresponsive: can take a command


def estimate(store: FleetStore, now_s: float, settings: EstimateSettings) -> SiteEstimates:
    n = store.n
    col = store.column
    cap, soc_min, soc_max = col("capacity_kwh"), col("soc_min"), col("soc_max")
    eta_c, eta_d = col("eff_charge"), col("eff_discharge")
    p_ch_max, p_dis_max = col("p_charge_max_kw"), col("p_discharge_max_kw")
    conn, op, cmd = col("conn"), col("op"), col("cmd")
    counted = col("active") & col("owned")

    seen = conn != Connectivity.UNKNOWN
    age_h = np.where(seen, np.maximum(now_s - col("ts"), 0.0), 0.0) / 3600.0
    e = np.nan_to_num(col("soc"), nan=0.0) * cap
    e_min, e_max = soc_min * cap, soc_max * cap

    stale = conn == Connectivity.STALE
    e_lo = np.where(stale, np.maximum(np.minimum(e_min, e), e - p_dis_max * age_h / eta_d), e)
    e_hi = np.where(stale, np.minimum(np.maximum(e_max, e), e + p_ch_max * age_h * eta_c), e)

    e_dis = Triple(
        np.maximum(e - e_min, 0.0) * eta_d,
        np.maximum(e_lo - e_min, 0.0) * eta_d,
        np.maximum(e_hi - e_min, 0.0) * eta_d,
    )
    e_chg = Triple(
        np.maximum(e_max - e, 0.0) / eta_c,
        np.maximum(e_max - e_hi, 0.0) / eta_c,
        np.maximum(e_max - e_lo, 0.0) / eta_c,
    )
    h = settings.sustain_h
    p_dis = Triple(
        *(np.minimum(p_dis_max, x / h) for x in (e_dis.expected, e_dis.lower, e_dis.upper))
    )
    p_chg = Triple(
        *(np.minimum(p_ch_max, x / h) for x in (e_chg.expected, e_chg.lower, e_chg.upper))
    )

    p = col("p_kw")
    online = conn == Connectivity.ONLINE
    p_net = Triple(
        np.where(online | stale, p, 0.0),
        np.where(online, p, np.where(stale, -p_ch_max, np.minimum(p, 0.0))),
        np.where(online, p, np.where(stale, p_dis_max, np.maximum(p, 0.0))),
    )

    usable = (online | stale) & (op != Operation.FAULT) & (op != Operation.UNAVAILABLE)
    never = ~seen
    full_dis = (soc_max - soc_min) * cap * eta_d
    full_chg = (soc_max - soc_min) * cap / eta_c
    e_dis = _silence(e_dis, usable, never, full_dis)
    e_chg = _silence(e_chg, usable, never, full_chg)
    p_dis = _silence(p_dis, usable, never, np.minimum(p_dis_max, full_dis / h))
    p_chg = _silence(p_chg, usable, never, np.minimum(p_ch_max, full_chg / h))
    p_net = Triple(
        np.where(never, 0.0, p_net.expected),
        np.where(never, 0.0, p_net.lower),
        np.where(never, 0.0, p_net.upper),
    )

    p_dis_rated = Triple(
        np.where(usable, p_dis_max, 0.0),
        np.where(usable, p_dis_max, 0.0),
        np.where(usable | never, p_dis_max, 0.0),
    )
    p_chg_rated = Triple(
        np.where(usable, p_ch_max, 0.0),
        np.where(usable, p_ch_max, 0.0),
        np.where(usable | never, p_ch_max, 0.0),
    )
    if settings.bid_horizon_h is None:
        p_dis_bid, p_chg_bid = p_dis_rated, p_chg_rated
    else:
        # No site need hold its share longer than the fleet's own duration at full power
        # (ΣE/ΣP): over a day-ahead horizon a 2-hour fleet offers its power for 2 hours,
        # not a twelfth of it for 24 — the model's energy balance spreads it over the day.
        fleet = counted & usable
        hb_dis = min(settings.bid_horizon_h, _duration(full_dis, p_dis_max, fleet))
        hb_chg = min(settings.bid_horizon_h, _duration(full_chg, p_ch_max, fleet))
        p_dis_bid = Triple(
            *(
                np.minimum(r, x / hb_dis)
                for r, x in zip(_parts(p_dis_rated), _parts(e_dis), strict=True)
            )
        )
        p_chg_bid = Triple(
            *(
                np.minimum(r, x / hb_chg)
                for r, x in zip(_parts(p_chg_rated), _parts(e_chg), strict=True)
            )
        )
    dispatchable = usable & (cmd != CommandState.UNRESPONSIVE)
    factor = np.where(online, 1.0, np.where(stale, settings.stale_availability, 0.0))
    availability = np.where(dispatchable, col("health") * factor, 0.0)
    del n
    return SiteEstimates(
        counted=counted,
        e_discharge_kwh=e_dis,
        e_charge_kwh=e_chg,
        p_discharge_kw=p_dis,
        p_charge_kw=p_chg,
        p_net_kw=p_net,
        p_discharge_rated_kw=p_dis_rated,
        p_charge_rated_kw=p_chg_rated,
        p_discharge_bid_kw=p_dis_bid,
        p_charge_bid_kw=p_chg_bid,
        availability=availability,
        dispatchable=dispatchable,
    )


def _parts(t: Triple) -> tuple[F64, F64, F64]:
    return t.expected, t.lower, t.upper


def _silence(
    t: Triple, usable: npt.NDArray[np.bool_], never: npt.NDArray[np.bool_], full: F64
) -> Triple:
    """Unusable sites: nothing expected, [0, last known] (or [0, full] if never seen)."""
    return Triple(
        np.where(usable, t.expected, 0.0),
        np.where(usable, t.lower, 0.0),
        np.where(usable, t.upper, np.where(never, full, t.upper)),
    )


def wsum(group: npt.NDArray[np.integer[Any]], weights: F64, groups: int) -> F64:
    """Sum of ``weights`` per group id (``bincount``), as float64."""
    return np.bincount(group, weights=weights, minlength=groups).astype(np.float64, copy=False)


def moment_sums(
    t: Triple, availability: F64, group: npt.NDArray[np.integer[Any]], groups: int
) -> tuple[F64, F64, F64]:
    """``(Σμ_i, Σσ_i², Σupper_i)`` per group: additive, so partial sums over disjoint sets
    of sites (one engine instance's partitions each) add up to the whole's."""
    m, w = t.expected, t.upper - t.lower
    mean_i = availability * m
    var_i = availability * (m * m + w * w / 12.0) - mean_i * mean_i
    return (
        wsum(group, mean_i, groups),
        wsum(group, np.maximum(var_i, 0.0), groups),
        wsum(group, t.upper, groups),
    )


def quantiles(mean: F64, var: F64, upper: F64) -> tuple[F64, F64]:
    """P50 and P90 of a total from its moment sums (see the module docstring)."""
    p50 = np.clip(mean, 0.0, upper)
    p90 = np.clip(mean - Z90 * np.sqrt(var), 0.0, upper)
    return p50, p90


def quantile_sums(
    t: Triple, availability: F64, group: npt.NDArray[np.integer[Any]], groups: int
) -> tuple[F64, F64]:
    """P50 and P90 of the deliverable total per group."""
    return quantiles(*moment_sums(t, availability, group, groups))
