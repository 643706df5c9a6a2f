"""The aggregate battery's dispatch, as Pyomo building blocks — one function per family.

Notation (all per interval ``t`` of length ``Δt`` hours; MW, MWh, currency/MWh):

- ``P⁺_t, P⁻_t ≥ 0``: discharge and charge power at the grid (+ = discharge, as everywhere);
- ``E_t``: stored energy at the *end* of interval ``t`` (``E_{-1} = E₀``);
- ``R^k_t ≥ 0``: capacity offered for reserve ``k`` ∈ {reg_up, reg_down, spinning}, split by
  the side it comes from, ``R^k_t = C^k_t + D^k_t``: ``C`` is taken on the charge side
  (up: charging less; down: charging more), ``D`` on the discharge side (up: discharging
  more; down: discharging less), see :func:`add_reserve_headroom`;
- ``δ_k``: the expected deployed fraction of reserve ``k`` (energy actually delivered);
- ``u_t ∈ [0, 1]``: discharge indicator (integer only where it matters, see
  :func:`add_no_simultaneous`).

Model-level mutable parameters (``m.*``) hold the battery and economics, so a solve with
new prices or a new state changes parameter values only; the block structure is built once.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyomo.environ as pyo

from market.definitions import Product

UP = (Product.REG_UP, Product.SPINNING)  # reserves delivered by discharging more
DOWN = (Product.REG_DOWN,)  # reserves delivered by charging more
_UP = frozenset(p.value for p in UP)
_DOWN = frozenset(p.value for p in DOWN)


def add_battery_params(m: pyo.ConcreteModel, horizon: int, reserves: Sequence[Product]) -> None:
    """The shared sets and mutable parameters of one aggregate battery."""
    m.T = pyo.RangeSet(0, horizon - 1)
    m.K = pyo.Set(initialize=[k.value for k in reserves], ordered=True)
    mutable = {"mutable": True, "within": pyo.Reals}
    m.dt = pyo.Param(initialize=1.0, **mutable)
    m.e0 = pyo.Param(initialize=0.0, **mutable)
    m.e_min = pyo.Param(initialize=0.0, **mutable)
    m.e_max = pyo.Param(initialize=1.0, **mutable)
    m.p_dis_max = pyo.Param(initialize=1.0, **mutable)
    m.p_ch_max = pyo.Param(initialize=1.0, **mutable)
    m.eta_c = pyo.Param(initialize=1.0, **mutable)
    m.eta_d = pyo.Param(initialize=1.0, **mutable)
    m.sustain_h = pyo.Param(initialize=1.0, **mutable)
    m.deg_cost = pyo.Param(initialize=0.0, **mutable)
    m.e_target = pyo.Param(initialize=0.0, **mutable)
    m.end_value = pyo.Param(initialize=0.0, **mutable)
    m.deploy = pyo.Param(m.K, initialize=0.0, **mutable)
    # Derived coefficients, one parameter each so HiGHS gets them without evaluating
    # products of parameters (set together with the above by the model's solve).
    m.c_ch = pyo.Param(initialize=1.0, **mutable)  # Δt·η_c
    m.c_dis = pyo.Param(initialize=1.0, **mutable)  # Δt/η_d
    m.c_dep_c = pyo.Param(m.K, initialize=0.0, **mutable)  # Δt·η_c·δ_k (charge side)
    m.c_dep_d = pyo.Param(m.K, initialize=0.0, **mutable)  # Δt·δ_k/η_d (discharge side)
    m.s_c = pyo.Param(initialize=1.0, **mutable)  # H·η_c
    m.s_d = pyo.Param(initialize=1.0, **mutable)  # H/η_d


def add_dispatch_vars(b: pyo.Block, m: pyo.ConcreteModel) -> None:
    """``P⁺, P⁻ ∈ [0, P_max]``, ``E ∈ [E_min, E_max]``, ``u ∈ [0, 1]``, ``R, C, D ≥ 0`` with
    ``R = C + D``; with reserves, ``E_{-1}`` is a variable fixed by one row to ``E₀`` (the
    sustain rows read it, and the hot path moves ``E₀`` by that row's bounds alone)."""
    b.p_dis = pyo.Var(m.T, bounds=(0, m.p_dis_max))
    b.p_ch = pyo.Var(m.T, bounds=(0, m.p_ch_max))
    b.e = pyo.Var(m.T, bounds=(m.e_min, m.e_max))
    b.u = pyo.Var(m.T, bounds=(0, 1))
    b.r = pyo.Var(m.K, m.T, bounds=(0, None))
    if len(m.K):
        b.r_c = pyo.Var(m.K, m.T, bounds=(0, None))
        b.r_d = pyo.Var(m.K, m.T, bounds=(0, None))
        b.r_sides = pyo.Constraint(
            m.K, m.T, rule=lambda b, k, t: b.r[k, t] == b.r_c[k, t] + b.r_d[k, t]
        )
        b.e_start = pyo.Var(bounds=(None, None))
        b.start = pyo.Constraint(expr=b.e_start == m.e0)


def e_before(b: pyo.Block, m: pyo.ConcreteModel, t: int) -> object:
    """``E_{t-1}``: the stored energy at the start of interval ``t``."""
    if t > 0:
        return b.e[t - 1]
    return b.e_start if len(m.K) else m.e0


def _side(b: pyo.Block, m: pyo.ConcreteModel, t: int, names: frozenset[str], side: str) -> object:
    var = b.r_c if side == "c" else b.r_d
    return sum(var[k, t] for k in m.K if k in names)


def _sum_reserves(
    b: pyo.Block,
    m: pyo.ConcreteModel,
    t: int,
    names: frozenset[str],
    weight: dict[str, object] | None,
) -> object:
    return sum((weight[k] if weight else 1) * b.r[k, t] for k in m.K if k in names)


def _up(
    b: pyo.Block, m: pyo.ConcreteModel, t: int, weight: dict[str, object] | None = None
) -> object:
    return _sum_reserves(b, m, t, _UP, weight)


def _down(
    b: pyo.Block, m: pyo.ConcreteModel, t: int, weight: dict[str, object] | None = None
) -> object:
    return _sum_reserves(b, m, t, _DOWN, weight)


def add_soc_balance(b: pyo.Block, m: pyo.ConcreteModel) -> None:
    """``E_t = E_{t-1} + Δt·(η_c·P⁻_t − P⁺_t/η_d) + Δt·Σ_down δ_k(η_c C^k_t + D^k_t/η_d)
    − Δt·Σ_up δ_k(η_c C^k_t + D^k_t/η_d)``.

    Separate efficiencies: charging stores ``η_c`` of what is drawn, discharging draws
    ``1/η_d`` from store per MWh delivered. Expected reserve deployment moves energy on the
    side it comes from: up-regulation taken by charging less stores ``η_c`` less per MWh it
    delivers, by discharging more draws ``1/η_d`` more; down-regulation by discharging less
    keeps ``1/η_d`` in store per MWh, by charging more stores ``η_c`` (coefficients
    ``c_dep_c = Δt·η_c·δ``, ``c_dep_d = Δt·δ/η_d``). Booking all up-regulation as discharge
    (and all down as charge) would overstate what a charging battery loses when it is
    called up, and what a discharging one gains when it is called down.
    """

    def deployed(t: int, names: frozenset[str]) -> object:
        return sum(
            m.c_dep_c[k] * b.r_c[k, t] + m.c_dep_d[k] * b.r_d[k, t] for k in m.K if k in names
        )

    def rule(b: pyo.Block, t: int) -> object:
        flow = m.c_ch * b.p_ch[t] - m.c_dis * b.p_dis[t]
        if len(m.K):
            flow = flow + deployed(t, _DOWN) - deployed(t, _UP)
        return b.e[t] == e_before(b, m, t) + flow

    b.soc_balance = pyo.Constraint(m.T, rule=rule)


def add_reserve_headroom(b: pyo.Block, m: pyo.ConcreteModel) -> None:
    """Each side's share of an offer within what that side can give:

    - up: ``Σ_up C^k_t ≤ P⁻_t`` (charging can only drop to zero) and
      ``P⁺_t + Σ_up D^k_t ≤ P⁺_max``;
    - down: ``Σ_down D^k_t ≤ P⁺_t`` and ``P⁻_t + Σ_down C^k_t ≤ P⁻_max``.

    Headroom as markets count it for a battery: up-reserve is the ability to raise net
    injection, so charging less counts as well as discharging more — a 1 MW battery charging
    at 1 MW can offer 2 MW of regulation up (stop charging, then discharge). Summing the two
    sides gives the net-power headroom ``P⁺_t − P⁻_t + R^up_t ≤ P⁺_max`` (and its mirror),
    and any offer within it splits into such ``C, D`` (take ``C = min(R, P⁻)``), so the
    split changes which offers are possible not at all; it says where the deployed energy
    comes from (:func:`add_soc_balance`). Only net power and the split enter, so the
    exactness argument of :func:`add_no_simultaneous` is untouched.
    """
    names = set(m.K)
    if names & _UP:
        b.headroom_up_c = pyo.Constraint(
            m.T, rule=lambda b, t: _side(b, m, t, _UP, "c") <= b.p_ch[t]
        )
        b.headroom_up_d = pyo.Constraint(
            m.T, rule=lambda b, t: b.p_dis[t] + _side(b, m, t, _UP, "d") <= m.p_dis_max
        )
    if names & _DOWN:
        b.headroom_down_d = pyo.Constraint(
            m.T, rule=lambda b, t: _side(b, m, t, _DOWN, "d") <= b.p_dis[t]
        )
        b.headroom_down_c = pyo.Constraint(
            m.T, rule=lambda b, t: b.p_ch[t] + _side(b, m, t, _DOWN, "c") <= m.p_ch_max
        )


def add_sustain_duration(b: pyo.Block, m: pyo.ConcreteModel) -> None:
    """Energy to hold the offered reserves for ``H`` hours from the start of the interval:

    ``E_{t-1} − H·Σ_up D^k_t/η_d ≥ E_min`` and ``E_{t-1} + H·η_c·Σ_down C^k_t ≤ E_max``.

    Only the side that moves the store during a call needs room in it: up-regulation by
    discharging more draws ``1/η_d`` per MWh, while charging less only stores less (the
    stored energy never falls because a charge stopped); down-regulation by charging more
    stores ``η_c`` per MWh, while discharging less only drains less. The check belongs at
    the start: a call can come in the interval's first minute, before the schedule has moved
    the battery towards its end state (the balance bounds the end state itself).
    """
    names = set(m.K)
    if names & _UP:
        b.sustain_up = pyo.Constraint(
            m.T,
            rule=lambda b, t: e_before(b, m, t) - m.s_d * _side(b, m, t, _UP, "d") >= m.e_min,
        )
    if names & _DOWN:
        b.sustain_down = pyo.Constraint(
            m.T,
            rule=lambda b, t: e_before(b, m, t) + m.s_c * _side(b, m, t, _DOWN, "c") <= m.e_max,
        )


def add_no_simultaneous(b: pyo.Block, m: pyo.ConcreteModel) -> None:
    """``P⁺_t ≤ P⁺_max·u_t`` and ``P⁻_t ≤ P⁻_max·(1 − u_t)``.

    Why binary only at negative prices (and exact): at a price ``π_t ≥ 0`` any schedule
    that charges and discharges at once can be replaced by one with the same net power or
    better revenue, the same stored-energy trajectory and less throughput — e.g. for
    ``P⁺ ≥ P⁻``: ``P⁺' = P⁺ − P⁻ + P⁻(1 − η_cη_d)``, ``P⁻' = 0`` keeps ``E`` and earns
    ``π·P⁻(1 − η_cη_d)·Δt ≥ 0`` more. So an optimum without simultaneity exists and
    ``u_t`` can stay continuous there (the pair then only says ``P⁺/P⁺_max + P⁻/P⁻_max ≤ 1``,
    which every non-simultaneous schedule satisfies). At ``π_t < 0`` burning energy in the
    round-trip losses can pay, so ``u_t`` becomes binary there — but only in the intervals
    where the relaxation actually does it (:meth:`optimizer.base.DispatchModel.run`): an
    optimum of the relaxation that never does is optimal for the exact problem. Most solves
    stay LPs; the rest are MILPs with a handful of binaries instead of ``T``.

    The relaxation is also a model in its own right (``simultaneous: time_share``): within
    one settlement interval a battery can alternate charge and discharge, and the meter
    sees the interval's averages. The averages it can reach are the convex hull of
    "discharge only" and "charge only", ``P⁺/P⁺_max + P⁻/P⁻_max ≤ 1`` with ``P⁺, P⁻ ≥ 0`` —
    exactly what the pair above says with ``u_t ∈ [0, 1]``. Claim: every such point is
    reachable with the stored energy between the interval's start and end values (to any
    ε). Proof: split the interval into ``N`` equal slices; in each, discharge at ``P⁺_max``
    for the fraction ``a = P⁺/P⁺_max`` of it, charge at ``P⁻_max`` for ``b = P⁻/P⁻_max``
    (``a + b ≤ 1``) and idle the rest. The interval's metered energies are ``P⁺Δt`` and
    ``P⁻Δt`` and its stored-energy change ``Δt(η_c P⁻ − P⁺/η_d)`` — the model's balance. After
    each whole slice ``E`` is on the straight line from ``E_start`` to ``E_end``; inside one
    it leaves the line by at most ``(P⁺_max/η_d + η_c P⁻_max)Δt/N``, which goes to 0 as ``N``
    grows, so ``E`` stays in ``[min(E_start, E_end) − ε, max(E_start, E_end) + ε]``, inside the
    bounds the model already enforces at both ends. Only the losses are real: at a negative
    price the hull lets the battery burn energy in its round trip, which pays (and costs
    the degradation the objective charges per MWh of throughput). So ``time_share`` is
    never below ``forbid`` (a relaxation) and equal to it whenever no price is negative
    (the exactness argument above).
    """
    b.dis_if_u = pyo.Constraint(m.T, rule=lambda b, t: b.p_dis[t] <= m.p_dis_max * b.u[t])
    b.ch_if_not_u = pyo.Constraint(m.T, rule=lambda b, t: b.p_ch[t] <= m.p_ch_max * (1 - b.u[t]))


def add_terminal(b: pyo.Block, m: pyo.ConcreteModel) -> None:
    """``E_{T-1} ≥ E_target`` (set ``E_target = E_min`` for no target)."""
    last = m.T.last()
    b.terminal = pyo.Constraint(expr=b.e[last] >= m.e_target)


def add_objective_costs(b: pyo.Block, m: pyo.ConcreteModel) -> None:
    """Per-variable objective coefficients of one price path (``b.net`` = Σ cost·variable).

    With energy price ``π_t`` and reserve capacity prices ``ρ^k_t`` (per MW per hour) the
    block's net revenue is

    - energy: ``Σ_t π_t·Δt·(P⁺_t − P⁻_t)``
    - reserves: ``Σ_k Σ_t ρ^k_t·Δt·R^k_t``
    - deployment: ``Σ_t π_t·Δt·(Σ_up δ_k R^k_t − δ_down R^down_t)`` (energy settled at ``π``)
    - degradation: ``− c_deg·Σ_t Δt·(P⁺_t + P⁻_t + Σ_k δ_k R^k_t)`` (per MWh of throughput)
    - variable O&M: ``− c_vom·Σ_t Δt·P⁺_t`` (per MWh discharged, as plant O&M is quoted)
    - terminal: ``+ v_end·E_{T-1}``

    so the coefficients are ``(π_t − c_deg − c_vom)Δt`` for ``P⁺_t``, ``−(π_t + c_deg)Δt`` for
    ``P⁻_t``, ``(ρ^k_t ± δ_k π_t − c_deg δ_k)Δt`` for ``R^k_t`` (+ for up, − for down) and
    ``v_end`` for ``E_{T-1}`` — computed from the prices in NumPy by
    :func:`optimizer.base.objective_costs`, which also feeds them to HiGHS directly.
    """
    mutable = {"mutable": True, "within": pyo.Reals, "initialize": 0.0}
    b.cost_dis = pyo.Param(m.T, **mutable)
    b.cost_ch = pyo.Param(m.T, **mutable)
    b.cost_r = pyo.Param(m.K, m.T, **mutable)
    b.cost_end = pyo.Param(**mutable)
    b.net = pyo.Expression(
        expr=sum(b.cost_dis[t] * b.p_dis[t] + b.cost_ch[t] * b.p_ch[t] for t in m.T)
        + sum(b.cost_r[k, t] * b.r[k, t] for k in m.K for t in m.T)
        + b.cost_end * b.e[m.T.last()]
    )


def add_monotone_dispatch(m: pyo.ConcreteModel) -> None:
    """Scenario bidding: dispatch is a non-decreasing function of the interval's price.

    With comonotone scenarios (scenario ``s+1`` priced at or above ``s`` in every interval)
    this is, between adjacent scenarios, ``P⁺_{s+1,t} ≥ P⁺_{s,t}`` and
    ``P⁻_{s+1,t} ≤ P⁻_{s,t}``: a higher price never brings less discharge or more charge,
    which is exactly what a monotone price-quantity curve per interval can express.
    """
    m.S_pairs = pyo.RangeSet(0, len(m.S) - 2) if len(m.S) > 1 else pyo.Set(initialize=[])
    m.monotone_discharge = pyo.Constraint(
        m.S_pairs, m.T, rule=lambda m, s, t: m.scen[s + 1].p_dis[t] >= m.scen[s].p_dis[t]
    )
    m.monotone_charge = pyo.Constraint(
        m.S_pairs, m.T, rule=lambda m, s, t: m.scen[s + 1].p_ch[t] <= m.scen[s].p_ch[t]
    )


def build_dispatch_block(b: pyo.Block, m: pyo.ConcreteModel) -> None:
    """One price path's dispatch: every family above on block ``b``."""
    add_dispatch_vars(b, m)
    add_soc_balance(b, m)
    add_reserve_headroom(b, m)
    add_sustain_duration(b, m)
    add_no_simultaneous(b, m)
    add_terminal(b, m)
    add_objective_costs(b, m)
