"""market/: definitions, wire labels across DST, bids and their rules, lifecycle, price
data, forecasts, clearing and the transaction-logged adapter."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.adapter import LoggedMarket, MemoryTxLog, SimulatedMarket
from market.bids import (
    Bid,
    BidCurve,
    BidValidationError,
    PriceBands,
    Segment,
    problems,
    validate,
)
from market.clearing import clear, clear_bid
from market.definitions import MARKETS, Product, load_market
from market.forecasts import point_forecast, price_scenarios
from market.labels import IntervalLabels, LabelError
from market.lifecycle import BidAction, BidStatus, LifecycleError, next_status
from market.prices import PriceDataError, PriceSeries, load_price_csv

DATA = Path(__file__).resolve().parents[1] / "scenarios" / "data"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# -- definitions -------------------------------------------------------------------------------


def test_three_markets_ship_with_their_rules() -> None:
    assert set(MARKETS) == {"caiso", "aemo", "eu-day-ahead"}  # one file each
    caiso, aemo, eu = (load_market(m) for m in ("caiso", "aemo", "eu-day-ahead"))
    assert caiso.interval(Product.ENERGY_DA) == timedelta(hours=1)
    assert caiso.interval(Product.ENERGY_RT) == timedelta(minutes=5)
    assert caiso.curve.max_segments == 10
    assert aemo.curve.fixed_bands_per_trading_day and aemo.curve.bidirectional
    assert aemo.interval(Product.ENERGY_RT) == timedelta(minutes=5)
    assert (eu.price_floor_per_mwh, eu.price_cap_per_mwh) == (-500.0, 4000.0)
    assert eu.with_interval(Product.ENERGY_DA, 60).interval(Product.ENERGY_DA) == timedelta(hours=1)
    with pytest.raises(ValueError, match="runs energy_da at"):
        eu.with_interval(Product.ENERGY_DA, 30)
    with pytest.raises(KeyError, match="has no product"):
        eu.product(Product.REG_UP)


def test_gate_closures() -> None:
    eu, caiso, aemo = load_market("eu-day-ahead"), load_market("caiso"), load_market("aemo")
    # SDAC: 12:00 Brussels the day before (CET in winter = 11:00 UTC).
    assert eu.gate_closure(Product.ENERGY_DA, utc(2026, 11, 22, 13)) == utc(2026, 11, 21, 11)
    # ... and the trading day is Brussels' day: 23:30 UTC on the 21st is the 22nd locally.
    assert eu.gate_closure(Product.ENERGY_DA, utc(2026, 11, 21, 23, 30)) == utc(2026, 11, 21, 11)
    # CAISO day-ahead: 10:00 Pacific the day before (PST = UTC-8).
    assert caiso.gate_closure(Product.ENERGY_DA, utc(2026, 11, 22, 12)) == utc(2026, 11, 21, 18)
    assert caiso.gate_closure(Product.ENERGY_RT, utc(2026, 11, 22, 12)) == utc(2026, 11, 22, 10, 45)
    # AEMO: 5 minutes before the interval; trading day starts 04:00 AEST (18:00 UTC).
    assert aemo.gate_closure(Product.ENERGY_RT, utc(2026, 11, 21, 12)) == utc(2026, 11, 21, 11, 55)
    assert aemo.trading_day(utc(2026, 11, 21, 17, 55)) == date(2026, 11, 21)
    assert aemo.trading_day(utc(2026, 11, 21, 18, 0)) == date(2026, 11, 22)


# -- wire labels -------------------------------------------------------------------------------


def test_caiso_hour_ending_across_dst() -> None:
    labels = IntervalLabels(load_market("caiso"), Product.ENERGY_DA)
    assert labels.intervals_in_day(date(2026, 11, 1)) == 25  # autumn: HE1..HE25
    assert labels.intervals_in_day(date(2026, 3, 8)) == 23  # spring: HE1..HE23
    assert labels.intervals_in_day(date(2026, 11, 21)) == 24
    # Clocks fall back at 02:00 PDT = 09:00 UTC: HE2 is 01:00 PDT → 01:00 PST and ends at
    # the *second* 01:00; HE3 ends at 02:00 PST. The offset keeps them distinct.
    first = labels.to_wire(utc(2026, 11, 1, 8))
    second = labels.to_wire(utc(2026, 11, 1, 9))
    assert (first.ordinal, second.ordinal) == (2, 3)
    assert first.label == "2026-11-01T01:00:00-08:00"
    assert second.label == "2026-11-01T02:00:00-08:00"
    assert labels.to_wire(utc(2026, 11, 1, 7)).label == "2026-11-01T01:00:00-07:00"
    assert labels.from_label(first.label) == utc(2026, 11, 1, 8)
    assert labels.from_label("2026-11-01T01:00:00-07:00") == utc(2026, 11, 1, 7)
    with pytest.raises(LabelError, match="ambiguous"):
        labels.from_label("2026-11-01T01:00:00")
    with pytest.raises(LabelError, match="does not exist"):
        labels.from_label("2026-03-08T02:30:00")
    with pytest.raises(LabelError, match=r"intervals 1\.\.25"):
        labels.from_wire(date(2026, 11, 1), 26)


def test_aemo_interval_ending_aest_and_eu_interval_start() -> None:
    aemo = IntervalLabels(load_market("aemo"), Product.ENERGY_RT)
    wire = aemo.to_wire(utc(2026, 11, 21, 18, 0))  # 04:00 AEST: first of the trading day
    assert (wire.trading_day, wire.ordinal) == (date(2026, 11, 22), 1)
    assert wire.label == "2026-11-22T04:05:00+10:00"
    assert aemo.from_label("2026-11-22T04:05:00") == utc(2026, 11, 21, 18, 0)
    eu = IntervalLabels(load_market("eu-day-ahead"), Product.ENERGY_DA)
    assert eu.to_wire(utc(2026, 7, 1, 22)).label == "2026-07-02T00:00:00+02:00"
    assert eu.to_wire(utc(2026, 7, 1, 22, 45)).ordinal == 4  # quarter-hours since 2025-10
    with pytest.raises(LabelError, match="not the start"):
        eu.to_wire(utc(2026, 7, 1, 22, 10))


def test_sdac_quarter_hours_since_october_2025_and_hours_before() -> None:
    """SDAC clears 15-minute products from delivery day 2025-10-01 (96 a day, 92 and 100 on
    the DST days); the hourly design is its history, with the imbalance rule it had."""
    eu = load_market("eu-day-ahead")
    spec = eu.product(Product.ENERGY_DA)
    assert eu.interval(Product.ENERGY_DA) == timedelta(minutes=15)
    assert spec.interval_minutes_on(date(2025, 9, 30)) == 60
    assert spec.interval_minutes_on(date(2025, 10, 1)) == 15
    assert spec.lengths == [15, 60]
    before, after = eu.as_of("energy_da", date(2019, 3, 1)), eu.as_of("energy_da", date(2026, 1, 5))
    assert before.interval(Product.ENERGY_DA) == timedelta(hours=1)
    assert (before.imbalance_pricing, after.imbalance_pricing) == ("dual", "single")
    assert after == eu
    quarter = IntervalLabels(eu, Product.ENERGY_DA)
    hourly = IntervalLabels(before, Product.ENERGY_DA)
    # 2026: DST begins 29 March (23 h), ends 25 October (25 h), Brussels time
    assert [quarter.intervals_in_day(date(2026, 3, d)) for d in (28, 29)] == [96, 92]
    assert quarter.intervals_in_day(date(2026, 10, 25)) == 100
    assert hourly.intervals_in_day(date(2019, 10, 27)) == 25
    # the gate is the hourly product's: 12:00 Brussels the day before
    assert eu.gate_closure(Product.ENERGY_DA, utc(2026, 11, 22, 13, 45)) == utc(2026, 11, 21, 11)
    with pytest.raises(ValueError, match=r"runs energy_da at \[15, 60\] minutes"):
        eu.with_interval(Product.ENERGY_DA, 30)


@settings(max_examples=300, deadline=None)
@given(
    market_id=st.sampled_from(MARKETS),
    minutes=st.integers(0, 3 * 366 * 24 * 12),
)
def test_labels_round_trip_across_dst(market_id: str, minutes: int) -> None:
    market = load_market(market_id)
    for product in market.products:
        labels = IntervalLabels(market, product)
        step = market.interval(product)
        start = utc(2025, 1, 1) + (minutes * timedelta(minutes=5)) // step * step
        # align to the product's grid from the trading day start
        day_start = market.trading_day_start_utc(market.trading_day(start))
        start = day_start + (start - day_start) // step * step
        wire = labels.to_wire(start)
        assert labels.from_wire(wire.trading_day, wire.ordinal) == start
        assert labels.from_label(wire.label) == start
        assert 1 <= wire.ordinal <= labels.intervals_in_day(wire.trading_day)


# -- bids and lifecycle ------------------------------------------------------------------------


def bid(curve: BidCurve, **kw: object) -> Bid:
    start = utc(2026, 11, 22, 13)
    base: dict[str, object] = {
        "bid_id": "b-17",
        "market": "caiso",
        "group": "north",
        "product": Product.ENERGY_DA,
        "interval_start": start,
        "interval_end": start + timedelta(hours=1),
        "version": 3,
        "curve": curve,
    }
    base.update(kw)
    return Bid.model_validate(base)


def seg(price: float, q: float) -> Segment:
    return Segment(price_per_mwh=price, quantity_mw=q)


def test_valid_bid_passes() -> None:
    curve = BidCurve(discharge=[seg(40, 1), seg(90, 2)], charge=[seg(20, 1), seg(5, 1)])
    validate(load_market("caiso"), bid(curve))


@pytest.mark.parametrize(
    ("curve", "fragment"),
    [
        (
            BidCurve(discharge=[seg(90, 1), seg(85, 1)]),
            "bid b-17 v3, interval 2026-11-22T13:00Z, discharge segment 2: price 85.0 < segment 1 "
            "price 90.0 (offers must be non-decreasing)",
        ),
        (
            BidCurve(charge=[seg(10, 1), seg(20, 1)]),
            "charge segment 2: price 20.0 > segment 1 price 10.0 "
            "(charge bids must be non-increasing)",
        ),
        (
            BidCurve(discharge=[seg(float(p), 1) for p in range(11)]),
            "discharge: 11 segments, the market allows 10",
        ),
        (BidCurve(discharge=[seg(2000, 1)]), "price 2000.0 outside [-150.0, 1000.0] USD/MWh"),
        (BidCurve(discharge=[seg(10, 0.005)]), "quantity 0.005 MW below 0.01 MW"),
        (BidCurve(discharge=[seg(10, 0.0125)]), "not a multiple of 0.001 MW"),
        (BidCurve(discharge=[seg(30, 1)], charge=[seg(35, 1)]), "would buy and sell"),
        (BidCurve(), "no segments"),
    ],
)
def test_bid_rules_name_interval_segment_and_rule(curve: BidCurve, fragment: str) -> None:
    with pytest.raises(BidValidationError) as err:
        validate(load_market("caiso"), bid(curve))
    assert any(fragment in p for p in err.value.problems), err.value.problems


def test_interval_and_product_rules() -> None:
    curve = BidCurve(discharge=[seg(10, 1)])
    caiso = load_market("caiso")
    start = utc(2026, 11, 22, 13, 30)
    found = problems(
        caiso, bid(curve, interval_start=start, interval_end=start + timedelta(hours=1))
    )
    assert any("does not start on the" in p for p in found)
    found = problems(caiso, bid(BidCurve(charge=[seg(5, 1)]), product=Product.REG_UP))
    assert any("offers capacity on the discharge side only" in p for p in found)
    assert problems(
        load_market("eu-day-ahead"), bid(curve, market="eu-day-ahead", product=Product.REG_UP)
    )


def test_aemo_band_prices_fixed_per_trading_day() -> None:
    aemo = load_market("aemo")
    start = utc(2026, 11, 21, 18)
    b = bid(
        BidCurve(discharge=[seg(100, 1), seg(300, 1)]),
        market="aemo",
        product=Product.ENERGY_RT,
        interval_start=start,
        interval_end=start + timedelta(minutes=5),
    )
    bands = [-1000, 0, 50, 100, 200, 300, 500, 1000, 5000, 17500]
    validate(aemo, b, day_bands=bands)
    with pytest.raises(
        BidValidationError, match="not one of the trading day's discharge price bands"
    ):
        validate(aemo, b, day_bands=[0, 100, 200])


def test_the_simulated_aemo_market_fixes_band_prices_per_trading_day() -> None:
    """The day's first bid declares the bands; later bids use them and may not change them;
    a restored order book keeps them; the next trading day needs its own declaration."""
    aemo = load_market("aemo")
    start = utc(2026, 11, 21, 18)  # 04:00 AEST on the 22nd: the first interval of a day
    bands = PriceBands(discharge=[50, 100, 300], charge=[-20, 10])

    def b(bid_id: str, at: datetime, curve: BidCurve, declared: PriceBands | None) -> Bid:
        return bid(
            curve,
            bid_id=bid_id,
            market="aemo",
            product=Product.ENERGY_RT,
            interval_start=at,
            interval_end=at + timedelta(minutes=5),
            price_bands=declared,
        )

    on_bands = BidCurve(discharge=[seg(100, 1), seg(300, 1)], charge=[seg(10, 1)])
    prices = {(Product.ENERGY_RT, start + timedelta(minutes=5 * k)): 120.0 for k in range(300)}
    sim = SimulatedMarket(aemo, prices)
    refused = sim.submit("t1", [b("a", start, on_bands, None)]).refused["a"]
    assert "must declare the day's price bands" in refused
    assert sim.submit("t2", [b("a", start, on_bands, bands)]).accepted == ["a"]
    later = start + timedelta(hours=3)
    assert sim.submit("t3", [b("c", later, on_bands, None)]).accepted == ["c"]
    off = BidCurve(discharge=[seg(120, 1)])
    assert (
        "not one of the trading day's" in sim.submit("t4", [b("d", later, off, None)]).refused["d"]
    )
    changed = PriceBands(discharge=[50, 100, 400], charge=[-20, 10])
    assert "fixed at" in sim.submit("t5", [b("e", later, on_bands, changed)]).refused["e"]
    next_day = start + timedelta(days=1)
    assert "must declare" in sim.submit("t6", [b("f", next_day, on_bands, None)]).refused["f"]

    # A restart rebuilds the order book from the transaction log, bands included.
    log = MemoryTxLog()
    first = SimulatedMarket(aemo, prices)
    LoggedMarket(first, log).submit("t7", [b("a", start, on_bands, bands)])
    again = SimulatedMarket(aemo, prices)
    again.restore([("t7", *log.recorded("t7"))])
    assert "fixed at" in again.submit("t8", [b("g", later, on_bands, changed)]).refused["g"]

    # The declaration itself is checked, and only a fixed-band market takes one.
    bad = PriceBands(discharge=[100, 50, *range(200, 2000, 200)], charge=[])
    found = problems(aemo, b("h", start, on_bands, bad))
    assert any("10 bands" in p or "11 bands" in p for p in found)
    assert any("strictly ascending" in p for p in found)
    caiso_bid = bid(on_bands, price_bands=bands)
    assert any("no price bands fixed" in p for p in problems(load_market("caiso"), caiso_bid))


def test_lifecycle_transitions_and_refusals() -> None:
    s = BidStatus.DRAFT
    for action, expected in (
        (BidAction.EDIT, BidStatus.DRAFT),
        (BidAction.APPROVE, BidStatus.APPROVED),
        (BidAction.EDIT, BidStatus.DRAFT),
        (BidAction.REJECT, BidStatus.REJECTED),
        (BidAction.EDIT, BidStatus.DRAFT),
        (BidAction.APPROVE, BidStatus.APPROVED),
        (BidAction.SUBMIT, BidStatus.SUBMITTED),
        (BidAction.ACCEPT, BidStatus.ACCEPTED),
        (BidAction.AWARD, BidStatus.AWARDED),
    ):
        s = next_status("b-1", s, action)
        assert s == expected
    assert next_status("b-2", BidStatus.SUBMITTED, BidAction.REFUSE) == BidStatus.REFUSED
    with pytest.raises(
        LifecycleError,
        match="b-3 is a draft, so it cannot be submitted; an operator can edit, approve or "
        "reject it",
    ):
        next_status("b-3", BidStatus.DRAFT, BidAction.SUBMIT)
    with pytest.raises(LifecycleError, match="no operator action applies to it any more"):
        next_status("b-4", BidStatus.AWARDED, BidAction.EDIT)


def test_every_refusal_is_in_plain_words() -> None:
    """The walk-through's "cannot approve a approved bid (allowed: edit, reject, submit,
    miss)": a refusal names the state as an operator reads it and only what an operator
    can do next (never the engine's own transitions)."""
    from market.lifecycle import OPERATOR_ACTIONS, STATUS_WORDS, TRANSITIONS, allowed

    for status in BidStatus:
        for action in BidAction:
            if (status, action) in TRANSITIONS:
                continue
            with pytest.raises(LifecycleError) as err:
                next_status("b", status, action)
            text = str(err.value)
            assert STATUS_WORDS[status] in text and f"a {status.value} bid" not in text
            for other in set(allowed(status)) - set(OPERATOR_ACTIONS):
                assert f" {other.value}," not in text and f" {other.value} it" not in text


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(-150, 1000), st.integers(10, 5000)), min_size=1, max_size=12))
def test_validation_refuses_non_monotone_or_over_long_curves(
    pairs: list[tuple[float, int]],
) -> None:
    segments = [seg(p, q / 1000) for p, q in pairs]
    found = problems(load_market("caiso"), bid(BidCurve(discharge=segments)))
    prices = [p for p, _ in pairs]
    monotone = all(b >= a for a, b in itertools.pairwise(prices))
    assert (not found) == (monotone and len(pairs) <= 10)


# -- price data --------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.csv"
    path.write_text(text)
    return path


def test_loader_units_conventions_and_window(tmp_path: Path) -> None:
    path = write(tmp_path, "t,p\n1/1/2019 1:00,0.05\n1/1/2019 2:00,0.06\n1/1/2019 3:00,0.04\n")
    series = load_price_csv(
        path,
        time_column="t",
        column="p",
        unit="USD/kWh",
        interval="end",
        timezone="Etc/GMT+8",
        time_format="%m/%d/%Y %H:%M",
    )
    assert series.interval == timedelta(hours=1)
    assert series.start == utc(2019, 1, 1, 8)  # hour ending 01:00 at UTC-8 starts 08:00 UTC
    assert series.values.tolist() == pytest.approx([50.0, 60.0, 40.0])
    assert len(series.window(utc(2019, 1, 1, 9), utc(2019, 1, 1, 11))) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "t,p\n2019-01-01 00:00,1\n2019-01-01 01:00,x\n",
            "line 3: price 'x' in 'p' is not a number",
        ),
        ("t,p\n2019-01-01 00:00,1\nsoon,2\n", "line 3: cannot parse time 'soon'"),
        (
            "t,p\n2019-01-01 00:00,1\n2019-01-01 01:00,2\n2019-01-01 01:00,3\n",
            "line 4: duplicate time",
        ),
        ("t,p\n2019-01-01 00:00,1\n2019-01-01 01:00,2\n2019-01-01 03:00,3\n", "line 4: gap"),
        (
            "t,p\n2019-01-01 00:00,1\n2019-01-01 01:00,2\n2019-01-01 00:30,3\n",
            "line 4: time goes backwards",
        ),
        ("t,q\n2019-01-01 00:00,1\n", "no column 'p'"),
    ],
)
def test_loader_refuses_bad_rows_with_their_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PriceDataError, match=message):
        load_price_csv(
            write(tmp_path, text),
            time_column="t",
            column="p",
            unit="EUR/MWh",
            interval="start",
            timezone="UTC",
        )


def test_loader_refuses_local_times_that_repeat_in_a_dst_zone(tmp_path: Path) -> None:
    rows = "\n".join(f"2019-03-10 {h:02d}:00,{h}" for h in range(5))
    with pytest.raises(PriceDataError, match="not unambiguous in America/Los_Angeles"):
        load_price_csv(
            write(tmp_path, "t,p\n" + rows + "\n"),
            time_column="t",
            column="p",
            unit="USD/MWh",
            interval="start",
            timezone="America/Los_Angeles",
        )


def test_loader_reads_the_shipped_files() -> None:
    de = load_price_csv(
        DATA / "entsoe_dayahead_2019_de_dk1.csv",
        time_column="time_utc_hour_beginning",
        column="DE",
        unit="EUR/MWh",
        interval="start",
        timezone="UTC",
    )
    assert len(de) == 8760 and de.currency == "EUR" and (de.values < 0).sum() == 211
    rt = load_price_csv(
        DATA / "dervet_rt_2019_07_5min.csv",
        time_column="Datetime (he)",
        column="DA Price ($/kWh)",
        unit="USD/MWh",
        interval="end",
        timezone="Etc/GMT+8",
        time_format="%m/%d/%Y %H:%M",
    )
    assert len(rt) == 31 * 288 and rt.interval == timedelta(minutes=5)
    assert rt.start == utc(2019, 7, 1, 8)


# -- forecasts ---------------------------------------------------------------------------------


def _series() -> PriceSeries:
    return load_price_csv(
        DATA / "entsoe_dayahead_2019_de_dk1.csv",
        time_column="time_utc_hour_beginning",
        column="DE",
        unit="EUR/MWh",
        interval="start",
        timezone="UTC",
    )


def test_point_forecasts() -> None:
    s = _series()
    starts = pd.date_range("2019-03-04", periods=24, freq="h", tz="UTC")
    assert point_forecast(s, starts, "perfect").tolist() == s.at(starts).tolist()
    yesterday = s.at(starts - pd.Timedelta(days=1))
    assert point_forecast(s, starts, "persistence_day").tolist() == yesterday.tolist()
    seasonal = point_forecast(s, starts, "seasonal", seasonal_days=14)
    weekdays = [d for d in range(1, 15) if (starts[0] - pd.Timedelta(days=d)).day_of_week < 5]
    expected = np.mean([s.at(starts - pd.Timedelta(days=d)) for d in weekdays], axis=0)
    assert seasonal == pytest.approx(expected)


def test_scenarios_are_comonotone_and_centred_on_the_forecast() -> None:
    s = _series()
    starts = pd.date_range("2019-03-04", periods=24, freq="h", tz="UTC")
    sc = price_scenarios(s, starts, "persistence_day", 20, window_days=56)
    assert sc.shape == (20, 24)
    assert (np.diff(sc, axis=0) >= 0).all()
    forecast = point_forecast(s, starts, "persistence_day")
    assert np.median(sc, axis=0) == pytest.approx(forecast, abs=25)
    assert (sc[-1] - sc[0]).mean() > 10  # real spread from real errors


# -- clearing and the market adapter -----------------------------------------------------------


def test_clearing_rules() -> None:
    b = bid(BidCurve(discharge=[seg(40, 1), seg(90, 2)], charge=[seg(20, 1), seg(5, 1)]))
    assert clear_bid(b, 100).p_mw == 3
    assert clear_bid(b, 90).p_mw == 3  # clears at its own price
    assert clear_bid(b, 50).p_mw == 1
    assert clear_bid(b, 30).p_mw == 0
    assert clear_bid(b, 10).p_mw == -1
    assert clear_bid(b, 5).p_mw == -2
    reserve = bid(BidCurve(discharge=[seg(8, 0.5)]), product=Product.REG_UP)
    awards, missing = clear([b, reserve], {(Product.ENERGY_DA, b.interval_start): 95.0})
    assert [a.p_mw for a in awards] == [3] and missing[0][0] is reserve


def test_logged_market_never_submits_twice_and_replays() -> None:
    b = bid(BidCurve(discharge=[seg(40, 1)]))
    bad = bid(BidCurve(discharge=[seg(4000, 1)]), bid_id="b-18")
    sim = SimulatedMarket(load_market("caiso"), {(Product.ENERGY_DA, b.interval_start): 50.0})
    log = MemoryTxLog()
    market = LoggedMarket(sim, log)
    first = market.submit("tx-1", [b, bad])
    assert first.accepted == ["b-17"] and "outside" in first.refused["b-18"]
    again = market.submit("tx-1", [b, bad])
    assert again == first and sim.submissions == 1
    # A restart after the request was logged but before the response: ask, never resend.
    log2 = MemoryTxLog()
    log2.record_request("tx-2", "caiso", "submit", {"bids": []})
    sim.submit("tx-2", [b])  # the market did receive it before the crash
    restarted = LoggedMarket(sim, log2).submit("tx-2", [b])
    assert restarted.accepted == ["b-17"] and sim.submissions == 2
    awards = market.awards("tx-3", b.interval_start, b.interval_end)
    assert [(a.bid_id, a.p_mw, a.price_per_mwh) for a in awards] == [("b-17", 1.0, 50.0)]
    assert market.awards("tx-3", b.interval_start, b.interval_end) == awards  # replayed
