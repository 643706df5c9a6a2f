"""Property tests of the dispatch split: limits, eligibility, totals, shortfall, balance."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpp.dispatch.split import SplitInput, direction_caps, split


@st.composite
def groups(draw: st.DrawFn) -> SplitInput:
    n = draw(st.integers(1, 40))
    f = lambda lo, hi: np.array(draw(st.lists(st.floats(lo, hi), min_size=n, max_size=n)))  # noqa: E731
    soc_min = f(0.0, 0.3)
    soc_max = np.minimum(soc_min + f(0.2, 0.7), 1.0)
    return SplitInput(
        eligible=np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n))),
        soc=f(0.0, 1.0),
        capacity_kwh=f(1.0, 500.0),
        soc_min=soc_min,
        soc_max=soc_max,
        p_charge_max_kw=f(0.5, 250.0),
        p_discharge_max_kw=f(0.5, 250.0),
        eff_charge=f(0.8, 1.0),
        eff_discharge=f(0.8, 1.0),
    )


@settings(max_examples=400, deadline=None)
@given(
    inp=groups(),
    target=st.floats(-3000, 3000),
    hours=st.floats(1 / 60, 1.0),
    resolution=st.sampled_from([0.0, 0.1, 1.0]),
    reserve=st.floats(0, 200),
)
def test_split_respects_limits_and_totals(
    inp: SplitInput, target: float, hours: float, resolution: float, reserve: float
) -> None:
    res = split(
        inp, target, hours, reserve_up_kw=reserve, reserve_down_kw=reserve, resolution_kw=resolution
    )
    p = res.setpoint_kw
    discharge = target >= 0
    cap, _ = direction_caps(inp, hours, discharge)
    eps = 1e-6
    # never beyond a site's power or SoC-window limit, never the wrong direction
    assert (np.abs(p) <= cap + eps).all()
    assert ((p >= -eps) if discharge else (p <= eps)).all()
    # never a setpoint for an ineligible site
    assert (p[~inp.eligible] == 0).all()
    # resolution: multiples of the step
    if resolution:
        assert np.allclose(p / resolution, np.round(p / resolution), atol=1e-6)
    # the reserve headroom stays free
    total_cap = float(cap.sum())  # a Python float, as in split() (no overflow warning)
    usable = (
        total_cap * max(0.0, 1 - reserve / total_cap) if total_cap > 0 and reserve else total_cap
    )
    if resolution:
        usable_eff = (
            np.floor(cap * (usable / total_cap if total_cap else 0) / resolution + 1e-9).sum()
            * resolution
        )
    else:
        usable_eff = usable
    assert abs(p.sum()) <= usable + eps
    # sums to the target when the group can cover it, else the shortfall is the exact gap
    want = abs(target)
    if want <= usable_eff - eps:
        assert abs(abs(res.allocated_kw) - want) <= max(resolution, 1e-6) + 1e-6
        assert res.shortfall_kw == 0
    else:
        assert abs(res.allocated_kw) == pytest.approx(usable_eff, abs=1e-6)
        assert abs(res.shortfall_kw) == pytest.approx(want - usable_eff, abs=1e-6)
    assert res.allocated_kw == pytest.approx(p.sum(), abs=1e-6)


@settings(max_examples=200, deadline=None)
@given(inp=groups(), share=st.floats(0.05, 0.95))
def test_fuller_sites_discharge_more(inp: SplitInput, share: float) -> None:
    cap, energy = direction_caps(inp, 0.25, True)
    res = split(inp, share * cap.sum(), 0.25)
    p = res.setpoint_kw
    free = (p < cap - 1e-6) & inp.eligible & (energy > 0)
    # Uncapped sites share one λ: power proportional to dischargeable energy.
    if free.sum() >= 2:
        ratio = p[free] / energy[free]
        assert np.allclose(ratio, ratio[0], rtol=1e-6)
    order = np.argsort(energy[free])
    assert (np.diff(p[free][order]) >= -1e-9).all()


def test_hand_checked_split() -> None:
    inp = SplitInput(
        eligible=np.array([True, True, False]),
        soc=np.array([0.9, 0.5, 0.9]),
        capacity_kwh=np.array([10.0, 10.0, 10.0]),
        soc_min=np.zeros(3),
        soc_max=np.ones(3),
        p_charge_max_kw=np.full(3, 5.0),
        p_discharge_max_kw=np.full(3, 5.0),
        eff_charge=np.ones(3),
        eff_discharge=np.ones(3),
    )
    # 7 kW for 1 h: energies 9 and 5 kWh -> shares 4.5 : 2.5 (both under the 5 kW cap)
    res = split(inp, 7.0, 1.0)
    assert res.setpoint_kw.tolist() == pytest.approx([4.5, 2.5, 0.0])
    # 12 kW: caps 5 + 5 = 10 -> shortfall 2
    over = split(inp, 12.0, 1.0)
    assert over.setpoint_kw.tolist() == pytest.approx([5.0, 5.0, 0.0])
    assert over.shortfall_kw == pytest.approx(2.0)
    # charging 3 kW: headroom 1 and 5 kWh -> the emptier site charges more
    chg = split(inp, -3.0, 1.0)
    assert chg.setpoint_kw.tolist() == pytest.approx([-0.5, -2.5, 0.0])
    # a 4 kW up-reserve keeps 40 % of every site's headroom free
    kept = split(inp, 7.0, 1.0, reserve_up_kw=4.0)
    assert kept.setpoint_kw.tolist() == pytest.approx([3.0, 3.0, 0.0])
    assert kept.shortfall_kw == pytest.approx(1.0)


def test_a_group_without_capacity_reports_even_a_sub_resolution_target_as_shortfall() -> None:
    """Found by the property test: the gap used to be compared with half a step, so a
    0.5 kW target on a group that can deliver nothing reported no shortfall."""
    one = np.ones(1)
    inp = SplitInput(
        eligible=np.array([False]),
        soc=np.zeros(1),
        capacity_kwh=one,
        soc_min=np.zeros(1),
        soc_max=one * 0.5,
        p_charge_max_kw=one,
        p_discharge_max_kw=one,
        eff_charge=one,
        eff_discharge=one,
    )
    res = split(inp, 0.5, 1.0, resolution_kw=1.0)
    assert res.allocated_kw == 0.0 and res.shortfall_kw == 0.5
