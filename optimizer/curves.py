"""Monotone price-quantity bid curves read off a scenario solution, merged to market rules.

Per interval, scenario ``s`` (prices ascending in ``s``) dispatches ``P⁺_s`` and ``P⁻_s``,
non-decreasing and non-increasing in ``s`` respectively (the model guarantees it). Read as
step curves:

- discharge offers: at a clearing price ``≥ π_s`` deliver at least ``P⁺_s``, i.e. a segment
  of ``P⁺_s − P⁺_{s−1}`` MW priced ``π_s`` wherever that increment is positive;
- charge bids: at a clearing price ``≤ π_s`` charge at least ``P⁻_s``: a segment of
  ``P⁻_s − P⁻_{s+1}`` MW priced ``π_s``, listed from the highest price down.

What every scenario dispatches is bid price-taking: the discharge of the lowest-price
scenario (``P⁺_1``) is offered at the price floor and the charge of the highest-price
scenario (``P⁻_S``) bid at the cap. Then a realized price beyond the scenarios' range gets
the extreme scenario's quantity, never less — which is what keeps every combination of
awards feasible: with comonotone scenarios and monotone dispatch, an interval's dispatch at
any price lies between its dispatch in scenarios ``1`` and ``S``, so the stored energy of
any realized day lies between the energies of paths ``S`` (all prices high: most discharge,
least charge) and ``1`` (all low), both feasible in the model. Without it, a price above
every scenario would drop a charge the later discharges rely on.

A point-forecast schedule is bid as is with :func:`self_schedule` (price-taking segments).

Merging to the market's segment limit repeatedly joins the two adjacent segments whose
join moves the least area (``Σ q_i·|p_i − p̄|`` with ``p̄`` the quantity-weighted price);
a joined segment's price lies between its parts', so the order — and monotonicity — is
kept. Quantities are then floored to the market's step (never offering more than the
fleet can deliver), segments below the minimum are dropped, prices are clipped to the
market's floor and cap, and a charge bid never reaches an offer's price (the bid would
trade with itself). Prices are rounded to the cent.

Markets whose band prices are fixed per trading day (AEMO-like: the day's ≤ 10 prices per
side, intervals only set quantities) take the day's curves through :func:`fix_day_bands`:
bands are the day's quantity-weighted price quantiles per side, and each segment moves to
a band conservatively (offers up, charge bids down), so no interval trades at a price it
did not accept.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from market.bids import BidCurve, Segment, Side
from market.definitions import MarketDefinition, Product

F64 = npt.NDArray[np.float64]
Pair = tuple[float, float]  # (price, incremental quantity)
NOISE_MW = 1e-4  # quantities this close to a market step are on it (numerical noise)


def offer_steps(prices: F64, p_dis: F64, tol: float = 1e-7) -> list[Pair]:
    """Discharge offer segments, price ascending."""
    steps: list[Pair] = []
    prev = 0.0
    for price, q in zip(prices.tolist(), np.maximum.accumulate(p_dis).tolist(), strict=True):
        if q - prev > tol:
            steps.append((price, q - prev))
            prev = q
    return steps


def charge_steps(prices: F64, p_ch: F64, tol: float = 1e-7) -> list[Pair]:
    """Charge bid segments, price descending."""
    steps: list[Pair] = []
    prev = 0.0
    # from the highest price down the charging quantity can only grow
    cumulative = np.maximum.accumulate(p_ch[::-1])
    for price, q in zip(prices[::-1].tolist(), cumulative.tolist(), strict=True):
        if q - prev > tol:
            steps.append((price, q - prev))
            prev = q
    return steps


def merge(steps: list[Pair], max_segments: int) -> list[Pair]:
    """Join adjacent segments with the least area moved until at most ``max_segments``."""
    merged = list(steps)
    while len(merged) > max_segments:
        best, best_cost, best_pair = 0, math.inf, merged[0]
        for i in range(len(merged) - 1):
            (p1, q1), (p2, q2) = merged[i], merged[i + 1]
            p = (p1 * q1 + p2 * q2) / (q1 + q2)
            cost = q1 * abs(p1 - p) + q2 * abs(p2 - p)
            if cost < best_cost:
                best, best_cost, best_pair = i, cost, (p, q1 + q2)
        merged[best : best + 2] = [best_pair]
    return merged


def _conform(steps: list[Pair], market: MarketDefinition, product: Product) -> list[Pair]:
    rules = market.curve
    floor, cap = market.price_limits(product)
    out: list[Pair] = []
    carry = 0.0
    for price, q in merge(steps, rules.max_segments):
        # A plan within NOISE_MW of a multiple is that multiple: it absorbs the solver's and
        # the SoC readings' numerical noise (1.99999 MW is a 2 MW plan); otherwise floor:
        # never offer more than planned.
        slack = NOISE_MW / rules.quantity_step_mw
        q_step = math.floor((q + carry) / rules.quantity_step_mw + slack) * rules.quantity_step_mw
        carry = q + carry - q_step  # a remainder moves to the next (less attractive) price
        if q_step >= max(rules.min_quantity_mw, rules.quantity_step_mw) - 1e-12:
            out.append((round(min(max(price, floor), cap), 2), round(q_step, 9)))
            # A segment rounded up within the noise leaves a negative carry: the next
            # segment pays it back, so the curve's total never exceeds the plan by more than
            # one noise margin (hypothesis found two segments each rounded up: 0.172 MW
            # offered on a 0.171875 MW plan). A positive remainder of an emitted segment is
            # dropped: offering less than planned is the safe side.
            carry = min(carry, 0.0) if q_step > 0 else carry
    return out


def curve_for_interval(
    prices: F64,
    p_dis: F64,
    p_ch: F64,
    market: MarketDefinition,
    product: Product,
    tick: float = 0.01,
    *,
    charge_prices: F64 | None = None,
) -> BidCurve:
    """The market-conforming bid curve of one interval (see the module docstring).

    ``prices`` price the discharge increments and ``charge_prices`` (default: the same)
    the charge increments, scenario by scenario. A scenario that stands for a price
    *bucket* ``[b_s, b_{s+1})`` (:mod:`vpp.bidding.distribution`) offers its discharge
    increment at the bucket's lower edge ``b_s`` and bids its charge increment at the
    upper edge ``b_{s+1}``: then every price in the bucket clears exactly the bucket's
    dispatch, the semantics the model optimised."""
    floor, cap = market.price_limits(product)
    offer = offer_steps(prices, p_dis)
    if offer and p_dis[0] > 1e-7:  # dispatched in every scenario: price-taking
        offer[0] = (floor, offer[0][1])
    charge = charge_steps(prices if charge_prices is None else charge_prices, p_ch)
    if charge and p_ch[-1] > 1e-7:
        charge[0] = (cap, charge[0][1])
    offers = _conform(offer, market, product)
    bids = _conform(charge, market, product)
    if offers and bids:
        lowest_offer = offers[0][0]
        bids = [(min(p, lowest_offer - tick), q) for p, q in bids]
        bids = [(max(p, floor), q) for p, q in bids]
        if bids and bids[0][0] >= lowest_offer:  # squeezed against the floor: give way
            bids = []
    return BidCurve(
        discharge=[Segment(price_per_mwh=p, quantity_mw=q) for p, q in offers],
        charge=[Segment(price_per_mwh=p, quantity_mw=q) for p, q in bids],
    )


def self_schedule(
    p_dis_mw: float, p_ch_mw: float, market: MarketDefinition, product: Product
) -> BidCurve:
    """A price-taking bid for a scheduled quantity: the discharge offered at the price floor
    and the charge bid at the cap, so it clears whatever the price (a point-forecast
    schedule submitted as is). Quantities are floored to the market's step (never more
    than the schedule) and dropped below its minimum."""
    floor, cap = market.price_limits(product)
    offers = _conform([(floor, p_dis_mw)] if p_dis_mw > 1e-9 else [], market, product)
    bids = _conform([(cap, p_ch_mw)] if p_ch_mw > 1e-9 else [], market, product)
    if offers and bids:  # a schedule never does both; keep the larger side
        if offers[0][1] >= bids[0][1]:
            bids = []
        else:
            offers = []
    return BidCurve(
        discharge=[Segment(price_per_mwh=p, quantity_mw=q) for p, q in offers],
        charge=[Segment(price_per_mwh=p, quantity_mw=q) for p, q in bids],
    )


def _weighted_levels(prices: F64, weights: F64, levels: F64) -> list[float]:
    """The smallest price whose cumulative weight reaches each level (inverted CDF)."""
    order = np.argsort(prices, kind="stable")
    cdf = np.cumsum(weights[order]) / weights.sum()
    at = np.searchsorted(cdf, levels - 1e-12, side="left").clip(0, len(order) - 1)
    return sorted({float(prices[order][k]) for k in at.tolist()})


def choose_day_bands(segments: list[Pair], max_bands: int, upward: bool) -> list[float]:
    """Up to ``max_bands`` band prices for one side of a trading day's curves.

    With no more distinct prices than bands, the prices themselves. Otherwise the
    quantity-weighted quantiles at levels ``j/k`` (offers, ``j = 1..k``: the top band is
    the highest price, so every offer has a band at or above it) or ``(j−1)/k`` (charge
    bids, ``j = 1..k``: the bottom band is the lowest price, so every bid has one at or
    below it). Bands are prices the curves already use, so they respect the floor, the cap
    and the cent.
    """
    if not segments:
        return []
    prices = np.array([p for p, _ in segments])
    distinct = sorted(set(prices.tolist()))
    if len(distinct) <= max_bands:
        return distinct
    weights = np.array([q for _, q in segments])
    k = np.arange(1, max_bands + 1, dtype=np.float64)
    levels = k / max_bands if upward else (k - 1) / max_bands
    return _weighted_levels(prices, weights, levels)


def snap_to_bands(steps: list[Pair], bands: list[float], upward: bool) -> list[Pair]:
    """Move each segment to a band price, conservatively, and join segments that meet.

    An offer moves up to the lowest band at or above its price (it is then dispatched only
    at prices it accepted); a charge bid moves down to the highest band at or below its
    price. A segment with no such band is dropped, never offered at a worse price. The
    mapping is monotone, so the curve stays monotone; joined quantities stay multiples of
    the market's step.
    """
    out: list[Pair] = []
    ladder = np.asarray(bands, dtype=np.float64)
    for price, q in steps:
        if upward:
            k = int(np.searchsorted(ladder, price - 1e-9, side="left"))
            if k == ladder.size:
                continue
        else:
            k = int(np.searchsorted(ladder, price + 1e-9, side="right")) - 1
            if k < 0:
                continue
        band = float(ladder[k])
        if out and math.isclose(out[-1][0], band, abs_tol=1e-9):
            out[-1] = (band, round(out[-1][1] + q, 9))
        else:
            out.append((band, q))
    return out


def fix_day_bands(
    curves: list[BidCurve], max_bands: int
) -> tuple[dict[Side, list[float]], list[BidCurve]]:
    """One trading day's curves on that day's band prices (markets whose band prices are
    fixed per trading day and whose intervals only set quantities, AEMO-like).

    Bands are chosen per side (:func:`choose_day_bands`) from all the day's segments, then
    every curve is snapped to them (:func:`snap_to_bands`). A charge bid stays below the
    same interval's lowest offer: it only moves down, the offer only up.
    """
    dis = [(s.price_per_mwh, s.quantity_mw) for c in curves for s in c.discharge]
    chg = [(s.price_per_mwh, s.quantity_mw) for c in curves for s in c.charge]
    bands = {
        Side.DISCHARGE: choose_day_bands(dis, max_bands, upward=True),
        Side.CHARGE: choose_day_bands(chg, max_bands, upward=False),
    }
    return bands, [snap_curve(c, bands) for c in curves]


def snap_curve(curve: BidCurve, bands: Mapping[Side, Sequence[float]]) -> BidCurve:
    """One curve on fixed band prices (:func:`snap_to_bands` per side): a rebid on a
    trading day whose bands were chosen earlier."""
    offers = snap_to_bands(
        [(s.price_per_mwh, s.quantity_mw) for s in curve.discharge],
        list(bands.get(Side.DISCHARGE, ())),
        True,
    )
    bids = snap_to_bands(
        [(s.price_per_mwh, s.quantity_mw) for s in curve.charge],
        list(bands.get(Side.CHARGE, ())),
        False,
    )
    return BidCurve(
        discharge=[Segment(price_per_mwh=p, quantity_mw=q) for p, q in offers],
        charge=[Segment(price_per_mwh=p, quantity_mw=q) for p, q in bids],
    )


def extreme_paths(
    curves: Sequence[BidCurve],
    floor: float,
    cap: float,
    interval_h: float,
    eff_charge: float,
    eff_discharge: float,
) -> tuple[F64, F64]:
    """Stored-energy change after each interval on the two extreme paths of a run of
    curves (relative to the start; MWh at the cells):

    - *low*: every offer clears, and only the charge bids priced at the cap (which clear
      whatever the price) — the least energy any combination of awards can leave;
    - *high*: every charge bid clears, and only the offers priced at the floor — the most.

    Every realised day's net dispatch lies between the two in every interval, so its
    stored energy lies between their running sums: both paths within the battery's limits
    is exactly "any combination of awards is deliverable"."""
    low, high = np.zeros(len(curves)), np.zeros(len(curves))
    e_lo = e_hi = 0.0
    for t, c in enumerate(curves):
        taking_ch = sum(s.quantity_mw for s in c.charge if s.price_per_mwh >= cap)
        taking_dis = sum(s.quantity_mw for s in c.discharge if s.price_per_mwh <= floor)
        e_lo += (taking_ch * eff_charge - c.max_discharge_mw / eff_discharge) * interval_h
        e_hi += (c.max_charge_mw * eff_charge - taking_dis / eff_discharge) * interval_h
        low[t], high[t] = e_lo, e_hi
    return low, high


def deliverable(
    curves: Sequence[BidCurve],
    *,
    e_low_mwh: float,
    e_high_mwh: float,
    e_min_mwh: float,
    e_max_mwh: float,
    interval_h: float,
    eff_charge: float,
    eff_discharge: float,
    market: MarketDefinition,
    product: Product,
    locked: Sequence[bool] | None = None,
) -> tuple[list[BidCurve], float]:
    """The curves trimmed so that any combination of their awards is deliverable from any
    start in ``[e_low_mwh, e_high_mwh]`` (stored energy), on the market's quantity step.

    Plans are made in continuous quantities and floored to the market's step per segment
    (:func:`_conform`); flooring a discharge leaves more stored than planned, flooring a
    charge less, and a later full-power segment can then be undeliverable. This re-checks
    the conformed curves on their extreme paths (:func:`extreme_paths`), interval by
    interval from the first: where the low path would fall below ``e_min`` the offers are
    cut, most expensive segment first (the least likely to clear); where the high path
    would pass ``e_max`` the charge bids are cut, cheapest segment first. Cuts are whole
    quantity steps, and a segment cut below the market's minimum is dropped. Cutting only
    ever moves both paths towards the previous interval's energy, which was within limits,
    so the walk ends with every interval deliverable. ``locked[t]`` marks a curve that
    stands already (submitted or awarded): its paths count, it is never cut. Returns the
    curves and the MWh cut.
    """
    rules = market.curve
    step = rules.quantity_step_mw
    smallest = max(rules.min_quantity_mw, step)
    floor, cap = market.price_limits(product)
    tol = 1e-9
    out: list[BidCurve] = []
    cut = 0.0
    e_lo, e_hi = e_low_mwh, e_high_mwh

    def after(
        e_lo: float, e_hi: float, dis: list[list[float]], chg: list[list[float]]
    ) -> tuple[float, float]:
        out_all = sum(q for _, q in dis)
        in_all = sum(q for _, q in chg)
        in_taking = sum(q for p, q in chg if p >= cap)
        out_taking = sum(q for p, q in dis if p <= floor)
        lo = e_lo + (in_taking * eff_charge - out_all / eff_discharge) * interval_h
        hi = e_hi + (in_all * eff_charge - out_taking / eff_discharge) * interval_h
        return lo, hi

    def shave(side: list[list[float]]) -> float:
        """Cut one step off the side's last segment (offers: the dearest; charge bids:
        the cheapest); returns the MW cut."""
        seg = side[-1]
        seg[1] = round(seg[1] - step, 9)
        cut_mw = step
        if seg[1] < smallest - 1e-12:
            cut_mw += max(seg[1], 0.0)
            side.pop()
        return cut_mw

    for t, curve in enumerate(curves):
        dis = [[s.price_per_mwh, s.quantity_mw] for s in curve.discharge]  # price ascending
        chg = [[s.price_per_mwh, s.quantity_mw] for s in curve.charge]  # price descending
        for _ in range(0 if locked is not None and locked[t] else 10_000):
            lo, hi = after(e_lo, e_hi, dis, chg)
            if lo < e_min_mwh - tol and dis:
                cut += shave(dis) * interval_h
            elif hi > e_max_mwh + tol and chg:
                cut += shave(chg) * interval_h
            else:
                break
        lo, hi = after(e_lo, e_hi, dis, chg)
        e_lo, e_hi = max(lo, e_min_mwh), min(hi, e_max_mwh)
        out.append(
            BidCurve(
                discharge=[Segment(price_per_mwh=p, quantity_mw=q) for p, q in dis],
                charge=[Segment(price_per_mwh=p, quantity_mw=q) for p, q in chg],
            )
        )
    return out, cut
