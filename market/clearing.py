"""Simulated clearing of bids against historical (or given) prices.

A discharge segment clears when the clearing price ≥ its price; a charge segment when the
clearing price ≤ its price; a reserve capacity offer (discharge side of a reserve bid) when
the reserve price ≥ its price. The award is the cleared quantity, settled at the clearing
price (pay-as-clear); ``p_mw`` is signed like the rest of the engine: + discharge (or
reserve capacity), − charge.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from market.bids import Bid
from market.definitions import Product


@dataclass(frozen=True, slots=True)
class Award:
    award_id: str
    bid_id: str
    bid_version: int
    market: str
    group: str
    product: Product
    interval_start: datetime
    interval_end: datetime
    discharge_mw: float
    charge_mw: float
    price_per_mwh: float

    @property
    def p_mw(self) -> float:
        return self.discharge_mw - self.charge_mw


def clear_bid(bid: Bid, price_per_mwh: float) -> Award:
    discharge, charge = bid.curve.cleared(price_per_mwh)
    return Award(
        award_id=f"{bid.bid_id}:v{bid.version}",
        bid_id=bid.bid_id,
        bid_version=bid.version,
        market=bid.market,
        group=bid.group,
        product=bid.product,
        interval_start=bid.interval_start,
        interval_end=bid.interval_end,
        discharge_mw=discharge,
        charge_mw=charge,
        price_per_mwh=price_per_mwh,
    )


def clear(
    bids: Iterable[Bid], prices: Mapping[tuple[Product, datetime], float]
) -> tuple[list[Award], list[tuple[Bid, str]]]:
    """Awards for every bid with a clearing price, and the bids without one (with why)."""
    awards: list[Award] = []
    unpriced: list[tuple[Bid, str]] = []
    for bid in bids:
        price = prices.get((bid.product, bid.interval_start))
        if price is None:
            unpriced.append((bid, f"no {bid.product.value} price for {bid.interval_start}"))
            continue
        awards.append(clear_bid(bid, price))
    return awards, unpriced
