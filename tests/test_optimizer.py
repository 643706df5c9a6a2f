"""The market and scenario models: hand-checkable cases, an independent reference LP,
infeasible inputs, and monotone bid curves."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.milp_reference import ReferenceBattery, solve_reference
from market.bids import Bid, validate
from market.definitions import Product, load_market
from market.prices import load_price_csv
from optimizer.curves import NOISE_MW, curve_for_interval
from optimizer.inputs import BatteryAggregate, MarketInputs, ScenarioInputs, Terminal
from optimizer.market_model import MarketModel
from optimizer.report import InfeasibleInputError
from optimizer.scenario_model import ScenarioBidModel

DATA = Path(__file__).resolve().parents[1] / "scenarios" / "data"


def battery(**kw: float) -> BatteryAggregate:
    base = {
        "e_min_mwh": 0.0,
        "e_max_mwh": 1.0,
        "e_initial_mwh": 0.0,
        "p_charge_max_mw": 1.0,
        "p_discharge_max_mw": 1.0,
        "eff_charge": 0.9,
        "eff_discharge": 0.9,
    }
    base.update(kw)
    return BatteryAggregate(**base)


def test_two_interval_arbitrage_with_efficiency() -> None:
    # Charge 1 MW for 1 h at 10 (stores 0.9 MWh), discharge it at 100 (delivers 0.81 MWh).
    model = MarketModel(2)
    sched = model.solve(
        battery(), MarketInputs(interval_h=1.0, energy_price=np.array([10.0, 100.0]))
    )
    assert sched.p_charge_mw == pytest.approx([1.0, 0.0], abs=1e-9)
    assert sched.p_discharge_mw == pytest.approx([0.0, 0.81], abs=1e-9)
    assert sched.e_mwh == pytest.approx([0.9, 0.0], abs=1e-9)
    assert sched.report is not None
    assert sched.report.objective == pytest.approx(100 * 0.81 - 10 * 1.0)
    assert sched.report.objective_split["energy"] == pytest.approx(71.0)


def test_degradation_cost_stops_unprofitable_cycles() -> None:
    model = MarketModel(2)
    inputs = MarketInputs(
        interval_h=1.0, energy_price=np.array([10.0, 100.0]), degradation_per_mwh=60.0
    )
    sched = model.solve(battery(), inputs)  # 71 gross - 60 x 1.81 MWh throughput < 0
    assert sched.p_charge_mw.sum() == pytest.approx(0.0, abs=1e-9)


def test_negative_prices_never_burn_energy_in_round_trip_losses() -> None:
    # Full battery at -100: the LP relaxation would charge and discharge at once to consume
    # 1 - 0.81 MWh and be paid for it; the exact model must stay idle.
    model = MarketModel(1)
    full = battery(e_initial_mwh=1.0)
    sched = model.solve(full, MarketInputs(interval_h=1.0, energy_price=np.array([-100.0])))
    assert sched.report is not None
    assert sched.report.integer_intervals == 1
    assert sched.report.simultaneous_intervals == 0
    assert sched.p_charge_mw[0] == pytest.approx(0.0, abs=1e-9)
    assert sched.p_discharge_mw[0] == pytest.approx(0.0, abs=1e-9)
    assert sched.report.objective == pytest.approx(0.0, abs=1e-9)
    # ... and charging into room at a negative price is still paid for.
    empty = model.solve(battery(), MarketInputs(interval_h=1.0, energy_price=np.array([-100.0])))
    assert empty.p_charge_mw[0] == pytest.approx(1.0)
    assert empty.report is not None and empty.report.objective == pytest.approx(100.0)


def test_reserve_headroom_and_sustain_duration() -> None:
    # A full 0.5 MWh battery (no room to charge first); reg up pays 10/MW/h. Sustaining R
    # for 2 h from 0.5 MWh above the floor (eff 1): R <= 0.25 MW, though 1 MW of headroom
    # is free.
    model = MarketModel(1, [Product.REG_UP])
    b = battery(e_initial_mwh=0.5, e_max_mwh=0.5, eff_charge=1.0, eff_discharge=1.0)
    inputs = MarketInputs(
        interval_h=1.0,
        energy_price=np.array([0.0]),
        reserve_price={Product.REG_UP: np.array([10.0])},
        sustain_h=2.0,
    )
    sched = model.solve(b, inputs)
    assert sched.reserves_mw[Product.REG_UP][0] == pytest.approx(0.25)
    assert sched.report is not None
    assert sched.report.objective_split["reg_up"] == pytest.approx(2.5)
    assert "sustain-up" in {x.family for x in sched.report.binding}
    # With the energy to spare, headroom binds instead: discharge + reg up <= P_dis.
    b2 = battery(e_initial_mwh=1.0, e_max_mwh=10.0, eff_charge=1.0, eff_discharge=1.0)
    inputs2 = MarketInputs(
        interval_h=1.0,
        energy_price=np.array([50.0]),
        reserve_price={Product.REG_UP: np.array([10.0])},
        sustain_h=0.5,
    )
    sched2 = model.solve(b2, inputs2)
    assert sched2.p_discharge_mw[0] + sched2.reserves_mw[Product.REG_UP][0] == pytest.approx(1.0)
    assert sched2.p_discharge_mw[0] == pytest.approx(1.0)  # energy at 50 beats reg up at 10


def test_a_charging_battery_offers_its_charge_back_and_its_stored_energy_as_regulation_up() -> None:
    """Paid 5/MWh to charge and 10/MW/h for reg up. Empty, charging at 1 MW, the battery can
    offer 1 MW up by stopping its charge (that draws nothing from store) but nothing by
    discharging (a call can come in the first minute, when it is empty): 5 + 10. With
    0.5 MWh stored it can hold 1 MW of extra discharge for the 0.1 h asked too: 2 MW, twice
    its rating (the old same-direction rule P⁺ + R↑ <= P⁺_max allowed 1 MW only): 5 + 20."""
    model = MarketModel(1, [Product.REG_UP])
    empty = model.solve(
        battery(e_initial_mwh=0.0, e_max_mwh=10.0),
        MarketInputs(
            interval_h=1.0,
            energy_price=np.array([-5.0]),
            reserve_price={Product.REG_UP: np.array([10.0])},
            sustain_h=0.1,
        ),
    )
    assert empty.p_charge_mw[0] == pytest.approx(1.0)
    assert empty.reserves_mw[Product.REG_UP][0] == pytest.approx(1.0)
    assert empty.report is not None and empty.report.objective == pytest.approx(15.0)
    b = battery(e_initial_mwh=0.5, e_max_mwh=10.0)
    sched = model.solve(
        b,
        MarketInputs(
            interval_h=1.0,
            energy_price=np.array([-5.0]),
            reserve_price={Product.REG_UP: np.array([10.0])},
            sustain_h=0.1,
        ),
    )
    assert sched.p_charge_mw[0] == pytest.approx(1.0)
    assert sched.reserves_mw[Product.REG_UP][0] == pytest.approx(2.0)
    assert sched.report is not None
    assert sched.report.objective == pytest.approx(25.0)
    assert "headroom-up" in {x.family for x in sched.report.binding}


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    e0=st.floats(0.0, 1.0),
    eta=st.floats(0.8, 1.0),
    p_ch=st.floats(0.2, 2.0),
    deploy_up=st.floats(0.0, 0.3),
    deploy_down=st.floats(0.0, 0.3),
    deg=st.floats(0.0, 5.0),
    sustain_h=st.floats(0.25, 2.0),
)
def test_energy_and_regulation_optimum_equals_the_independent_milp(
    seed: int,
    e0: float,
    eta: float,
    p_ch: float,
    deploy_up: float,
    deploy_down: float,
    deg: float,
    sustain_h: float,
) -> None:
    """Co-optimized energy, regulation up and down (net-power headroom, sustain duration,
    deployed energy settled at the energy price, degradation) against the NumPy MILP."""
    rng = np.random.default_rng(seed)
    n = 24
    price = rng.normal(40.0, 30.0, n)  # some negative: binaries where they matter
    up = rng.uniform(0.0, 20.0, n)
    down = rng.uniform(0.0, 20.0, n)
    b = battery(e_max_mwh=2.0, e_initial_mwh=2.0 * e0, eff_charge=eta, eff_discharge=eta)
    b = dataclasses.replace(b, p_charge_max_mw=p_ch)
    sched = MarketModel(n, [Product.REG_UP, Product.REG_DOWN]).solve(
        b,
        MarketInputs(
            interval_h=0.5,
            energy_price=price,
            reserve_price={Product.REG_UP: up, Product.REG_DOWN: down},
            deployment={Product.REG_UP: deploy_up, Product.REG_DOWN: deploy_down},
            sustain_h=sustain_h,
            degradation_per_mwh=deg,
        ),
    )
    ref = solve_reference(
        _ref_battery(b),
        price,
        0.5,
        up_price=up,
        down_price=down,
        deploy_up=deploy_up,
        deploy_down=deploy_down,
        sustain_h=sustain_h,
        degradation_per_mwh=deg,
    )
    assert sched.report is not None
    assert sched.report.objective == pytest.approx(ref.objective, rel=1e-6, abs=1e-6)
    assert sum(sched.report.objective_split.values()) == pytest.approx(
        ref.objective, rel=1e-6, abs=1e-6
    )


def test_reserve_deployment_moves_energy_and_is_settled_at_the_energy_price() -> None:
    model = MarketModel(1, [Product.REG_DOWN])
    b = battery(e_initial_mwh=0.0, e_max_mwh=10.0, eff_charge=1.0, eff_discharge=1.0)
    inputs = MarketInputs(
        interval_h=1.0,
        energy_price=np.array([20.0]),
        reserve_price={Product.REG_DOWN: np.array([30.0])},
        deployment={Product.REG_DOWN: 0.5},
        sustain_h=1.0,
    )
    sched = model.solve(b, inputs)
    r = sched.reserves_mw[Product.REG_DOWN][0]
    # Discharging at 1 MW leaves 2 MW of down headroom (stop, then charge at 1 MW); the
    # battery sells the deployed energy as it arrives.
    assert r == pytest.approx(2.0)
    assert sched.p_discharge_mw[0] == pytest.approx(1.0)
    assert sched.report is not None
    assert sched.report.objective_split["deployment"] == pytest.approx(-20.0)  # bought at 20
    # The balance counts the deployed half: E = E0 + 0.5 R + P⁻ − P⁺ (eff 1).
    expected = 0.5 * r + sched.p_charge_mw[0] - sched.p_discharge_mw[0]
    assert sched.e_mwh[0] == pytest.approx(expected)
    # With energy worth nothing and cycling costing 1/MWh, discharging 1 MW still pays:
    # it opens a second megawatt of down headroom worth 30.
    free = model.solve(
        b,
        MarketInputs(
            interval_h=1.0,
            energy_price=np.array([0.0]),
            reserve_price={Product.REG_DOWN: np.array([30.0])},
            deployment={Product.REG_DOWN: 0.5},
            sustain_h=1.0,
            degradation_per_mwh=1.0,
        ),
    )
    r_free = free.reserves_mw[Product.REG_DOWN][0]
    assert r_free == pytest.approx(2.0)
    assert free.e_mwh[0] == pytest.approx(
        0.5 * r_free + free.p_charge_mw[0] - free.p_discharge_mw[0]
    )


def test_soc_floor_limits_discharge() -> None:
    model = MarketModel(1)
    b = battery(e_min_mwh=0.4, e_initial_mwh=0.5)
    sched = model.solve(b, MarketInputs(interval_h=1.0, energy_price=np.array([100.0])))
    assert sched.p_discharge_mw[0] == pytest.approx(0.1 * 0.9)
    assert sched.e_mwh[0] == pytest.approx(0.4)


def test_terminal_target_and_end_value() -> None:
    model = MarketModel(2)
    prices = np.array([50.0, 50.0])
    kept = model.solve(
        battery(e_initial_mwh=1.0),
        MarketInputs(interval_h=1.0, energy_price=prices, terminal=Terminal(e_target_mwh=0.6)),
    )
    assert kept.e_mwh[-1] == pytest.approx(0.6)
    valued = model.solve(
        battery(e_initial_mwh=1.0),
        MarketInputs(interval_h=1.0, energy_price=prices, terminal=Terminal(value_per_mwh=60.0)),
    )
    assert valued.e_mwh[-1] == pytest.approx(1.0)  # 60/MWh in store beats 50 x 0.9 sold


@pytest.mark.parametrize(
    ("b", "terminal", "named"),
    [
        (battery(e_min_mwh=0.2, e_initial_mwh=0.1), Terminal(), "below the floor e_min"),
        (battery(e_initial_mwh=1.5), Terminal(), "above e_max"),
        (battery(), Terminal(e_target_mwh=0.95), "unreachable"),
        (battery(), Terminal(e_target_mwh=2.0), "above e_max"),
        (battery(eff_charge=1.2), Terminal(), "eff_charge"),
    ],
)
def test_infeasible_inputs_name_the_conflict(
    b: BatteryAggregate, terminal: Terminal, named: str
) -> None:
    model = MarketModel(1)
    with pytest.raises(InfeasibleInputError, match=named):
        model.solve(
            b, MarketInputs(interval_h=1.0, energy_price=np.array([1.0]), terminal=terminal)
        )


def test_model_is_built_once_and_resolved_with_new_prices_and_state() -> None:
    model = MarketModel(24)
    rng = np.random.default_rng(0)
    n_cols = None
    for k in range(3):
        sched = model.solve(
            battery(e_initial_mwh=0.1 * k),
            MarketInputs(interval_h=1.0, energy_price=rng.uniform(0, 100, 24)),
        )
        assert sched.report is not None and sched.report.status == "optimal"
        if n_cols is None:
            n_cols = model.solver.n_cols
        assert model.solver.n_cols == n_cols
    assert model.solves == 3


def _ref_battery(b: BatteryAggregate) -> ReferenceBattery:
    return ReferenceBattery(
        e_min_mwh=b.e_min_mwh,
        e_max_mwh=b.e_max_mwh,
        e0_mwh=b.e_initial_mwh,
        p_dis_max_mw=b.p_discharge_max_mw,
        p_ch_max_mw=b.p_charge_max_mw,
        eta_c=b.eff_charge,
        eta_d=b.eff_discharge,
    )


def _reference(prices: np.ndarray, b: BatteryAggregate, dt: float, exact: bool) -> float:
    """The independent MILP (:mod:`benchmarks.milp_reference`): every ``u_t`` binary with
    ``exact`` (no simultaneous charge and discharge), all continuous without."""
    binary = np.full(len(prices), exact)
    return solve_reference(_ref_battery(b), prices, dt, binary=binary).objective


def _de_prices() -> np.ndarray:
    series = load_price_csv(
        DATA / "entsoe_dayahead_2019_de_dk1.csv",
        time_column="time_utc_hour_beginning",
        column="DE",
        unit="EUR/MWh",
        interval="start",
        timezone="UTC",
    )
    return series.values


def test_energy_optimum_on_first_week_of_2019_de_equals_an_independent_formulation() -> None:
    prices = _de_prices()[: 7 * 24]
    assert (prices < 0).any()  # the week has negative prices: the interesting case
    b = battery(e_max_mwh=1.0, eff_charge=0.9487, eff_discharge=0.9487)
    sched = MarketModel(len(prices)).solve(b, MarketInputs(interval_h=1.0, energy_price=prices))
    assert sched.report is not None
    reference = _reference(prices, b, 1.0, exact=True)
    assert sched.report.objective == pytest.approx(reference, rel=1e-6)
    # The plain LP would earn more by burning energy in round-trip losses at negative
    # prices; the exact model needs binaries in exactly those intervals.
    relaxed = _reference(prices, b, 1.0, exact=False)
    assert relaxed > reference * 1.01
    assert 0 < sched.report.integer_intervals <= int((prices < 0).sum())
    assert sched.report.simultaneous_intervals == 0


def test_without_negative_prices_the_optimum_is_the_plain_lp() -> None:
    prices = _de_prices()[168 * 2 : 168 * 3]  # the third week of 2019
    assert (prices >= 0).all()
    b = battery(e_max_mwh=2.0, e_initial_mwh=1.0, eff_charge=0.95, eff_discharge=0.95)
    sched = MarketModel(len(prices)).solve(b, MarketInputs(interval_h=1.0, energy_price=prices))
    assert sched.report is not None and sched.report.integer_intervals == 0
    assert sched.report.objective == pytest.approx(
        _reference(prices, b, 1.0, exact=False), rel=1e-6
    )


# -- scenario bidding -------------------------------------------------------------------------


def test_scenario_model_dispatch_is_monotone_and_curves_are_valid() -> None:
    rng = np.random.default_rng(3)
    T, S = 12, 8
    base = 50 + 30 * np.sin(np.arange(T) / T * 2 * np.pi)
    prices = base[None, :] + np.sort(rng.normal(0, 25, S))[:, None]
    model = ScenarioBidModel(T, S)
    sol = model.solve(
        battery(e_max_mwh=2.0, e_initial_mwh=1.0),
        ScenarioInputs(interval_h=1.0, energy_price=prices, degradation_per_mwh=1.0),
    )
    assert (np.diff(sol.p_discharge_mw, axis=0) >= -1e-7).all()
    assert (np.diff(sol.p_charge_mw, axis=0) <= 1e-7).all()
    market = load_market("eu-day-ahead")
    curves = sol.curves(market, Product.ENERGY_DA)
    assert sum(bool(c.discharge or c.charge) for c in curves) >= T // 2
    for t, curve in enumerate(curves):
        from datetime import UTC, datetime

        if not (curve.discharge or curve.charge):
            continue  # no scenario moves the battery here: nothing to bid
        step = market.interval(Product.ENERGY_DA)  # SDAC's quarter-hours
        start = datetime(2026, 11, 21, tzinfo=UTC) + t * step
        bid = Bid(
            bid_id=f"b{t}",
            market="eu-day-ahead",
            group="g",
            product=Product.ENERGY_DA,
            interval_start=start,
            interval_end=start + step,
            curve=curve,
        )
        validate(market, bid)
        assert curve.max_discharge_mw <= 1.0 + 1e-9 and curve.max_charge_mw <= 1.0 + 1e-9


def test_scenario_prices_must_ascend() -> None:
    model = ScenarioBidModel(2, 2)
    with pytest.raises(InfeasibleInputError, match="interval 1, scenario 1"):
        model.solve(
            battery(),
            ScenarioInputs(interval_h=1.0, energy_price=np.array([[1.0, 5.0], [2.0, 4.0]])),
        )


def test_segments_rounded_up_within_the_noise_never_add_up_beyond_the_plan() -> None:
    """Found by hypothesis in CI: 0.057918 and 0.113957 MW each rounded up to the 0.001 MW
    step gave 0.172 MW on a 0.171875 MW plan; the second segment must pay the first's
    round-up back."""
    p = np.array([-150.0, 0.0])
    dis = np.array([0.057917615106553036, 0.171875])
    for market_id, product in (
        ("caiso", Product.ENERGY_DA),
        ("aemo", Product.ENERGY_RT),
        ("eu-day-ahead", Product.ENERGY_DA),
    ):
        market = load_market(market_id)
        offer = curve_for_interval(p, dis, np.zeros(2), market, product)
        assert offer.max_discharge_mw <= dis.max() + NOISE_MW + 1e-9, market_id
        bid = curve_for_interval(p, np.zeros(2), dis[::-1].copy(), market, product)
        assert bid.max_charge_mw <= dis.max() + NOISE_MW + 1e-9, market_id


@settings(max_examples=200, deadline=None)
@given(
    prices=st.lists(st.floats(-600, 5000), min_size=1, max_size=30),
    data=st.data(),
)
def test_curves_from_any_monotone_dispatch_pass_market_validation(
    prices: list[float], data: st.DataObject
) -> None:
    """Whatever the scenario prices and dispatch, the curve conforms to every market."""
    p = np.sort(np.array(prices))
    n = len(p)
    dis = np.sort(np.array(data.draw(st.lists(st.floats(0, 3), min_size=n, max_size=n))))
    ch = np.sort(np.array(data.draw(st.lists(st.floats(0, 3), min_size=n, max_size=n))))[::-1]
    from datetime import UTC, datetime, timedelta

    for market_id, product, minutes in (
        ("caiso", Product.ENERGY_DA, 60),
        ("aemo", Product.ENERGY_RT, 5),
        ("eu-day-ahead", Product.ENERGY_DA, 15),
    ):
        market = load_market(market_id)
        curve = curve_for_interval(p, dis, ch, market, product)
        start = market.trading_day_start_utc(
            market.trading_day(datetime(2026, 11, 21, 12, tzinfo=UTC))
        )
        bid = Bid(
            bid_id="x",
            market=market_id,
            group="g",
            product=product,
            interval_start=start,
            interval_end=start + timedelta(minutes=minutes),
            curve=curve,
        )
        if curve.discharge or curve.charge:
            validate(market, bid)
        # never more than planned, but for numerical noise (curves.NOISE_MW)
        assert curve.max_discharge_mw <= dis.max() + NOISE_MW + 1e-9
        assert curve.max_charge_mw <= ch.max() + NOISE_MW + 1e-9


@settings(max_examples=100, deadline=None)
@given(
    days=st.lists(
        st.tuples(st.lists(st.floats(-900, 5000), min_size=2, max_size=12), st.data()),
        min_size=1,
        max_size=24,
    )
)
def test_fixed_day_bands_keep_curves_valid_monotone_and_conservative(
    days: list[tuple[list[float], st.DataObject]],
) -> None:
    """AEMO-like: a trading day's curves snapped to ≤ 10 bands per side pass validation with
    those bands, offer exactly the same total quantities where a band exists, and only move
    offers up and charge bids down in price."""
    from datetime import UTC, datetime, timedelta

    from market.bids import Side
    from optimizer.curves import fix_day_bands

    market = load_market("aemo")
    day0 = market.trading_day_start_utc(market.trading_day(datetime(2026, 11, 21, 12, tzinfo=UTC)))
    curves = []
    for prices, data in days:
        p = np.sort(np.array(prices))
        n = len(p)
        dis = np.sort(np.array(data.draw(st.lists(st.floats(0, 3), min_size=n, max_size=n))))
        ch = np.sort(np.array(data.draw(st.lists(st.floats(0, 3), min_size=n, max_size=n))))[::-1]
        curves.append(curve_for_interval(p, dis, ch, market, Product.ENERGY_RT))
    bands, snapped = fix_day_bands(curves, market.curve.max_segments)
    assert len(bands[Side.DISCHARGE]) <= 10 and len(bands[Side.CHARGE]) <= 10
    for k, (before, after) in enumerate(zip(curves, snapped, strict=True)):
        start = day0 + timedelta(minutes=5 * k)
        bid = Bid(
            bid_id="x",
            market="aemo",
            group="g",
            product=Product.ENERGY_RT,
            interval_start=start,
            interval_end=start + timedelta(minutes=5),
            curve=after,
        )
        if after.discharge or after.charge:
            validate(market, bid, day_bands=bands)
        # the bands come from the day's own prices: nothing is dropped
        assert after.max_discharge_mw == pytest.approx(before.max_discharge_mw, abs=1e-9)
        assert after.max_charge_mw == pytest.approx(before.max_charge_mw, abs=1e-9)
        # conservative: at any clearing price the snapped curve trades no more than before
        for price in [s.price_per_mwh for s in before.discharge + before.charge + after.discharge]:
            dis_a, ch_a = after.cleared(price)
            dis_b, ch_b = before.cleared(price)
            assert dis_a <= dis_b + 1e-9 and ch_a <= ch_b + 1e-9


_REUSED: dict[int, MarketModel] = {}


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    e_max=st.floats(0.5, 4.0),
    soc0=st.floats(0.0, 1.0),
    p_dis=st.floats(0.2, 2.0),
    p_ch=st.floats(0.2, 2.0),
    eta=st.floats(0.8, 1.0),
    deg=st.floats(0.0, 5.0),
    dt=st.sampled_from([0.25, 1.0]),
    reserves=st.booleans(),
)
def test_a_reused_model_solves_like_a_fresh_one(
    seed: int,
    e_max: float,
    soc0: float,
    p_dis: float,
    p_ch: float,
    eta: float,
    deg: float,
    dt: float,
    reserves: bool,
) -> None:
    """The hot path (costs and the initial energy pushed straight to HiGHS, a full push
    only when the battery changes, binaries kept from the last solve) must not leak state:
    one model re-solved over random prices, states and batteries gives the optimum a model
    built for each gives."""
    rng = np.random.default_rng(seed)
    n = 12
    products = [Product.REG_UP, Product.REG_DOWN] if reserves else []
    key = 1 if reserves else 0
    model = _REUSED.get(key)
    if model is None:
        model = _REUSED[key] = MarketModel(n, products)
    b = battery(
        e_max_mwh=e_max,
        e_initial_mwh=e_max * soc0,
        p_discharge_max_mw=p_dis,
        p_charge_max_mw=p_ch,
        eff_charge=eta,
        eff_discharge=eta,
    )
    inputs = MarketInputs(
        interval_h=dt,
        energy_price=rng.normal(30.0, 40.0, n),
        reserve_price={p: rng.uniform(0, 15, n) for p in products},
        deployment={p: 0.1 for p in products},
        degradation_per_mwh=deg,
    )
    reused = model.solve(b, inputs)
    fresh = MarketModel(n, products).solve(b, inputs)
    assert reused.report is not None and fresh.report is not None
    assert reused.report.objective == pytest.approx(fresh.report.objective, rel=1e-6, abs=1e-6)


def test_the_pyomo_objective_at_the_solution_is_what_highs_optimized() -> None:
    """The coefficients are computed once (NumPy) and pushed to HiGHS; the Pyomo objective,
    synced on request, evaluates to the same number at the solution."""
    import pyomo.environ as pyo

    n = 24
    rng = np.random.default_rng(7)
    model = MarketModel(n, [Product.REG_UP])
    inputs = MarketInputs(
        interval_h=1.0,
        energy_price=rng.normal(40, 25, n),
        reserve_price={Product.REG_UP: rng.uniform(0, 10, n)},
        deployment={Product.REG_UP: 0.2},
        degradation_per_mwh=2.0,
        vom_per_mwh=3.0,
        terminal=Terminal(value_per_mwh=15.0),
    )
    sched = model.solve(battery(e_max_mwh=2.0), inputs)
    model.sync_objective()
    d = model.model.d
    for t in range(n):
        d.p_dis[t].set_value(float(sched.p_discharge_mw[t]))
        d.p_ch[t].set_value(float(sched.p_charge_mw[t]))
        d.e[t].set_value(float(sched.e_mwh[t]))
        d.r[Product.REG_UP.value, t].set_value(float(sched.reserves_mw[Product.REG_UP][t]))
    assert sched.report is not None
    assert pyo.value(model.model.obj) == pytest.approx(sched.report.objective, rel=1e-9)


def test_solves_from_many_threads_at_once_equal_the_sequential_ones() -> None:
    """The engine's bidders (one per market) solve from worker threads at the same moment.
    HiGHS shares one task scheduler between its instances, and concurrent runs crashed the
    process (a segfault in CI); every run now holds the solver's lock. Each thread owns its
    models, as each bidder's strategy does, and the results must equal solving in turn."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(7)
    T, S = 48, 4
    cases = []
    for _ in range(8):
        prices = np.sort(rng.normal(20.0, 40.0, size=(S, T)), axis=0)  # negatives: MILP
        cases.append(ScenarioInputs(interval_h=0.5, energy_price=prices))

    def solve_all(offset: int) -> list[float]:
        model = ScenarioBidModel(T, S)
        out = []
        for k in range(len(cases)):
            sol = model.solve(battery(e_initial_mwh=0.5), cases[(k + offset) % len(cases)])
            assert sol.report is not None
            out.append(sol.report.objective)
        return out

    sequential = [solve_all(i) for i in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(solve_all, range(4)))
    assert np.allclose(concurrent, sequential, rtol=1e-9, atol=1e-9)


def test_a_solve_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    """HiGHS prints its banner as an instance is created, before logging can be turned off;
    the solver keeps it out of the CLI's reports and the benchmarks' JSON."""
    MarketModel(3).solve(battery(), MarketInputs(interval_h=1.0, energy_price=np.ones(3)))
    out, err = capfd.readouterr()
    assert "HiGHS" not in out and "HiGHS" not in err


# -- time-share: mixing charge and discharge within an interval ------------------------------


def _time_share(prices: np.ndarray, b: BatteryAggregate) -> Any:
    model = MarketModel(len(prices))
    model.simultaneous = "time_share"
    return model.solve(b, MarketInputs(interval_h=1.0, energy_price=prices))


def test_time_share_is_the_hull_relaxation_of_the_exact_model() -> None:
    """On the DE week with negative prices: time_share is the independent LP with every
    ``u_t`` continuous (the hull ``P⁺/P⁺max + P⁻/P⁻max ≤ 1``), solved without a binary, and
    earns at least the exact MILP; each interval's pair stays inside the hull."""
    prices = _de_prices()[: 7 * 24]
    b = battery(e_max_mwh=1.0, eff_charge=0.9487, eff_discharge=0.9487)
    sched = _time_share(prices, b)
    assert sched.report is not None and sched.report.integer_intervals == 0
    assert sched.report.objective == pytest.approx(
        _reference(prices, b, 1.0, exact=False), rel=1e-6
    )
    assert sched.report.objective >= _reference(prices, b, 1.0, exact=True) - 1e-6
    share = sched.p_discharge_mw / b.p_discharge_max_mw + sched.p_charge_mw / b.p_charge_max_mw
    assert (share <= 1 + 1e-6).all()
    assert sched.report.simultaneous_intervals > 0  # it does use the hull at negative prices


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    negative=st.booleans(),
    eff=st.floats(0.8, 1.0),
)
def test_time_share_equals_forbid_without_negative_prices_and_never_falls_below(
    seed: int, negative: bool, eff: float
) -> None:
    rng = np.random.default_rng(seed)
    prices = rng.normal(40, 25, 48)
    prices = prices if negative else np.abs(prices)
    b = battery(e_max_mwh=2.0, e_initial_mwh=1.0, eff_charge=eff, eff_discharge=eff)
    shared = _time_share(prices, b)
    exact = MarketModel(len(prices)).solve(b, MarketInputs(interval_h=1.0, energy_price=prices))
    assert shared.report is not None and exact.report is not None
    if (prices >= 0).all():
        assert shared.report.objective == pytest.approx(exact.report.objective, rel=1e-7, abs=1e-7)
    assert shared.report.objective >= exact.report.objective - 1e-6
    assert shared.report.objective == pytest.approx(
        _reference(prices, b, 1.0, exact=False), rel=1e-6, abs=1e-6
    )


def test_models_compile_concurrently_in_a_fresh_process() -> None:
    """Pyomo fills its compiler's scipy constructors on first use without a lock; eight
    threads building their first models at once in a fresh interpreter must all succeed
    (the engine's first-bids job and its bidding cycle raced exactly so in CI)."""
    import subprocess
    import sys

    code = (
        "import threading, numpy as np\n"
        "from optimizer.inputs import BatteryAggregate, MarketInputs\n"
        "from optimizer.market_model import MarketModel\n"
        "b = BatteryAggregate(e_min_mwh=0, e_max_mwh=1, e_initial_mwh=0.5,"
        " p_charge_max_mw=1, p_discharge_max_mw=1, eff_charge=0.95, eff_discharge=0.95)\n"
        "errors = []\n"
        "def go(k):\n"
        "    try:\n"
        "        MarketModel(24 + k).solve(b, MarketInputs(interval_h=1.0,"
        " energy_price=np.linspace(10, 90, 24 + k)))\n"
        "    except Exception as exc:\n"
        "        errors.append(repr(exc))\n"
        "ts = [threading.Thread(target=go, args=(k,)) for k in range(8)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "assert not errors, errors\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
