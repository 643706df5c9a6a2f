"""Operator edits checked over what is still to come (:mod:`vpp.bidding.physics`): ended
intervals are out, awarded ones count their award, and a breach is the edit's only when the
edited interval pushes that way (a charge-only curve never fails the stored-energy bound)."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from market.bids import BidCurve, Segment
from market.definitions import Product, load_market
from tests.api_support import FIRST
from tests.test_commitment import small_group

MARKET, PRODUCT = load_market("caiso"), Product.ENERGY_RT
STEP = timedelta(minutes=5)
NODE = small_group()  # two free sites: 100 kW at P90, 100 kWh stored, 100 kWh of headroom
OFFER = BidCurve(discharge=[Segment(price_per_mwh=40, quantity_mw=0.1)])


def _problems(
    curves: dict[datetime, BidCurve],
    edited: datetime,
    now: datetime | None = None,
    awarded: dict[datetime, float] | None = None,
) -> list[str]:
    from vpp.bidding.physics import curve_problems

    return curve_problems(NODE, MARKET, PRODUCT, edited, curves, now=now, awarded_mw=awarded)


def test_intervals_that_ended_are_not_checked() -> None:
    curves = {FIRST + k * STEP: OFFER for k in range(14)}  # 0.117 MWh: beyond 0.100
    last = FIRST + 13 * STEP
    assert "free stored energy" in _problems(curves, last)[0]
    # two hours later the first six intervals are delivered: 8 x 0.1 MW x 5 min remain
    assert _problems(curves, last, now=FIRST + 6 * STEP) == []
    # an interval already over is never refused for energy
    assert _problems(curves, FIRST, now=FIRST + 6 * STEP) == []


def test_a_standing_award_replaces_the_worst_case() -> None:
    curves = {FIRST + k * STEP: OFFER for k in range(14)}
    last = FIRST + 13 * STEP
    # four intervals awarded to charge 0.1 MW: their offers no longer spend energy
    awarded = {FIRST + k * STEP: -0.1 for k in range(4)}
    assert _problems(curves, last, awarded=awarded) == []
    # awarded to discharge what was offered: the bound is reached as before
    awarded = {FIRST + k * STEP: 0.1 for k in range(4)}
    assert "free stored energy" in _problems(curves, last, awarded=awarded)[0]


one_segment = st.builds(
    Segment,
    price_per_mwh=st.floats(-100, 1000, allow_nan=False),
    quantity_mw=st.floats(0.001, 0.1, allow_nan=False),
)
segments = st.lists(one_segment, max_size=3)
any_curve = st.builds(BidCurve, discharge=segments, charge=segments)


@settings(max_examples=300, deadline=None)
@given(
    history=st.lists(any_curve, min_size=1, max_size=30),
    at=st.integers(0, 29),
    charge=st.lists(one_segment, min_size=1, max_size=1),
    now_k=st.integers(-3, 30),
)
def test_a_charge_only_curve_never_fails_the_stored_energy_bound(
    history: list[BidCurve], at: int, charge: list[Segment], now_k: int
) -> None:
    curves = {FIRST + k * STEP: c for k, c in enumerate(history)}
    edited = FIRST + min(at, len(history) - 1) * STEP
    curves[edited] = BidCurve(charge=charge)
    found = _problems(curves, edited, now=FIRST + now_k * STEP)
    assert not any("stored energy" in f for f in found), found


@settings(max_examples=200, deadline=None)
@given(
    history=st.lists(any_curve, min_size=1, max_size=30),
    at=st.integers(0, 29),
    q=st.floats(0.001, 0.1, allow_nan=False),
)
def test_an_offer_only_curve_never_fails_the_headroom_bound(
    history: list[BidCurve], at: int, q: float
) -> None:
    curves = {FIRST + k * STEP: c for k, c in enumerate(history)}
    edited = FIRST + min(at, len(history) - 1) * STEP
    curves[edited] = BidCurve(discharge=[Segment(price_per_mwh=40, quantity_mw=q)])
    assert not any("headroom" in f for f in _problems(curves, edited))
