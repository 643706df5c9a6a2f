"""Monotone price-quantity bid curves read off a scenario solution, merged to market rules.

Per interval, scenario ``s`` (prices ascending in ``s``) dispatches ``P⁺_s`` and ``P⁻_s``,
non-decreasing and non-increasing in ``s`` respectively (the model guarantees it). Read as
step curves:

- discharge offers: at a clearing price ``≥ π_s`` deliver at least ``P⁺_s``, i.e. a segment
  of ``P⁺_s − P⁺_{s−1}`` MW priced ``π_s`` wherever that increment is positive;
- charge bids: at a clearing price ``≤ π_s`` charge at least ``P⁻_s``: a segment of
  ``P⁻_s − P⁻_{s+1}`` MW priced ``π_s``, listed from the highest price down.

Merging to the market's segment limit repeatedly joins the two adjacent segments whose
join moves the least area (``Σ q_i·|p_i − p̄|`` with ``p̄`` the quantity-weighted price);
a joined segment's price lies between its parts', so the order — and monotonicity — is
kept. Quantities are then floored to the market's step (never offering more than the
fleet can deliver), segments below the minimum are dropped, prices are clipped to the
market's floor and cap, and a charge bid never reaches an offer's price (the bid would
trade with itself). Prices are rounded to the cent.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from market.bids import BidCurve, Segment
from market.definitions import MarketDefinition, Product

F64 = npt.NDArray[np.float64]
Pair = tuple[float, float]  # (price, incremental quantity)


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
        q_step = math.floor((q + carry) / rules.quantity_step_mw + 1e-9) * rules.quantity_step_mw
        carry = q + carry - q_step  # a remainder moves to the next (less attractive) price
        if q_step >= max(rules.min_quantity_mw, rules.quantity_step_mw) - 1e-12:
            out.append((round(min(max(price, floor), cap), 2), round(q_step, 9)))
            carry = 0.0 if q_step > 0 else carry
    return out


def curve_for_interval(
    prices: F64,
    p_dis: F64,
    p_ch: F64,
    market: MarketDefinition,
    product: Product,
    tick: float = 0.01,
) -> BidCurve:
    """The market-conforming bid curve of one interval (see the module docstring)."""
    offers = _conform(offer_steps(prices, p_dis), market, product)
    bids = _conform(charge_steps(prices, p_ch), market, product)
    if offers and bids:
        lowest_offer = offers[0][0]
        bids = [(min(p, lowest_offer - tick), q) for p, q in bids]
        floor, _ = market.price_limits(product)
        bids = [(max(p, floor), q) for p, q in bids]
        if bids and bids[0][0] >= lowest_offer:  # squeezed against the floor: give way
            bids = []
    return BidCurve(
        discharge=[Segment(price_per_mwh=p, quantity_mw=q) for p, q in offers],
        charge=[Segment(price_per_mwh=p, quantity_mw=q) for p, q in bids],
    )
