"""An independent battery MILP, built column by column in NumPy and solved by bare highspy.

It shares no code with :mod:`optimizer` (no Pyomo, no blocks, no persistent solver), so a
test that compares the two checks the model's equations, not one implementation against
itself; :mod:`benchmarks.optimizer` uses it as the bare-solver baseline. Variables per
interval ``t``: ``P⁺, P⁻, E, u`` and, when priced, ``R↑ = C↑ + D↑`` and ``R↓ = C↓ + D↓``
(``C``: the part taken on the charge side — charging less for up, more for down; ``D``: on
the discharge side — discharging more for up, less for down)::

    max Σ_t Δt[(π_t − c_deg − c_vom)P⁺_t − (π_t + c_deg)P⁻_t
               + (ρ↑_t + δ↑π_t − c_deg δ↑)R↑_t + (ρ↓_t − δ↓π_t − c_deg δ↓)R↓_t]
    E_t = E_{t−1} + Δt(η_c P⁻_t − P⁺_t/η_d + δ↓(η_c C↓_t + D↓_t/η_d) − δ↑(η_c C↑_t + D↑_t/η_d))
    P⁺_t ≤ P⁺_max u_t,  P⁻_t ≤ P⁻_max (1 − u_t)
    C↑_t ≤ P⁻_t,  P⁺_t + D↑_t ≤ P⁺_max,  D↓_t ≤ P⁺_t,  P⁻_t + C↓_t ≤ P⁻_max    (headroom)
    E_{t−1} − H D↑_t/η_d ≥ E_min,  E_{t−1} + H η_c C↓_t ≤ E_max   (what a call moves in store)
    E_min ≤ E_t ≤ E_max,  E_{T−1} ≥ E_target,  E_{−1} = E₀

``u_t`` is binary where ``binary`` says (by default every interval: the exact problem).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import highspy
import numpy as np
import numpy.typing as npt
from scipy import sparse

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ReferenceBattery:
    e_min_mwh: float
    e_max_mwh: float
    e0_mwh: float
    p_dis_max_mw: float
    p_ch_max_mw: float
    eta_c: float
    eta_d: float
    e_target_mwh: float | None = None


@dataclass(frozen=True)
class ReferenceResult:
    objective: float
    p_dis: F64
    p_ch: F64
    e: F64
    r_up: F64
    r_down: F64
    highs_s: float
    columns: dict[str, int] = field(default_factory=dict)


def solve_reference(
    battery: ReferenceBattery,
    price: F64,
    interval_h: float,
    *,
    up_price: F64 | None = None,
    down_price: F64 | None = None,
    deploy_up: float = 0.0,
    deploy_down: float = 0.0,
    sustain_h: float = 1.0,
    degradation_per_mwh: float = 0.0,
    vom_per_mwh: float = 0.0,
    binary: npt.NDArray[np.bool_] | None = None,
    mip_rel_gap: float = 1e-9,
) -> ReferenceResult:
    """Solve the MILP above; the objective is the net revenue (maximized)."""
    price = np.asarray(price, dtype=np.float64)
    n = len(price)
    dt, b = interval_h, battery
    zeros = np.zeros(n)
    has_up, has_down = up_price is not None, down_price is not None
    names = (
        ["p_dis", "p_ch", "e", "u"]
        + (["r_up", "c_up", "d_up"] if has_up else [])
        + (["r_down", "c_down", "d_down"] if has_down else [])
    )
    col = {name: i * n for i, name in enumerate(names)}
    n_cols = n * len(names)

    cost = np.zeros(n_cols)  # HiGHS minimizes: costs are minus the revenue coefficients
    cost[col["p_dis"] : col["p_dis"] + n] = -(price - degradation_per_mwh - vom_per_mwh) * dt
    cost[col["p_ch"] : col["p_ch"] + n] = (price + degradation_per_mwh) * dt
    lower = np.zeros(n_cols)
    upper = np.full(n_cols, np.inf)
    upper[col["p_dis"] : col["p_dis"] + n] = b.p_dis_max_mw
    upper[col["p_ch"] : col["p_ch"] + n] = b.p_ch_max_mw
    lower[col["e"] : col["e"] + n] = b.e_min_mwh
    upper[col["e"] : col["e"] + n] = b.e_max_mwh
    upper[col["u"] : col["u"] + n] = 1.0
    if b.e_target_mwh is not None:
        lower[col["e"] + n - 1] = max(b.e_min_mwh, b.e_target_mwh)
    if has_up:
        assert up_price is not None
        c = (np.asarray(up_price) + deploy_up * price - degradation_per_mwh * deploy_up) * dt
        cost[col["r_up"] : col["r_up"] + n] = -c
    if has_down:
        assert down_price is not None
        c = (np.asarray(down_price) - deploy_down * price - degradation_per_mwh * deploy_down) * dt
        cost[col["r_down"] : col["r_down"] + n] = -c

    t = np.arange(n)
    rows: list[sparse.coo_matrix] = []
    lo: list[F64] = []
    hi: list[F64] = []

    def family(entries: list[tuple[str, F64, F64]], row_lo: F64, row_hi: F64) -> None:
        """One row per interval: Σ coefficient·column(t + shift)."""
        r, c, v = [], [], []
        for name, coef, shift in entries:
            tt = t + shift.astype(np.int64)
            ok = tt >= 0
            r.append(t[ok])
            c.append(col[name] + tt[ok])
            v.append(coef[ok])
        rows.append(
            sparse.coo_matrix(
                (np.concatenate(v), (np.concatenate(r), np.concatenate(c))), shape=(n, n_cols)
            )
        )
        lo.append(row_lo)
        hi.append(row_hi)

    one, same, prev = np.ones(n), zeros, -np.ones(n)
    e0_rhs = np.where(t == 0, b.e0_mwh, 0.0)
    soc: list[tuple[str, F64, F64]] = [
        ("e", one, same),
        ("e", -one, prev),
        ("p_ch", -dt * b.eta_c * one, same),
        ("p_dis", dt / b.eta_d * one, same),
    ]
    if has_up:  # up deployed: less stored, at the efficiency of its side
        soc.append(("c_up", dt * deploy_up * b.eta_c * one, same))
        soc.append(("d_up", dt * deploy_up / b.eta_d * one, same))
    if has_down:
        soc.append(("c_down", -dt * deploy_down * b.eta_c * one, same))
        soc.append(("d_down", -dt * deploy_down / b.eta_d * one, same))
    family(soc, e0_rhs, e0_rhs)
    # E_{t-1} in the sustain rows: the variable before t, or the constant E₀ at t = 0
    start = np.where(t == 0, b.e0_mwh, 0.0)
    family([("p_dis", one, same), ("u", -b.p_dis_max_mw * one, same)], np.full(n, -np.inf), zeros)
    family(
        [("p_ch", one, same), ("u", b.p_ch_max_mw * one, same)],
        np.full(n, -np.inf),
        np.full(n, b.p_ch_max_mw),
    )
    inf, ninf = np.full(n, np.inf), np.full(n, -np.inf)
    for side in (["up"] if has_up else []) + (["down"] if has_down else []):
        r, c, d = f"r_{side}", f"c_{side}", f"d_{side}"
        family([(r, one, same), (c, -one, same), (d, -one, same)], zeros, zeros)  # R = C + D
        if side == "up":
            family([(c, one, same), ("p_ch", -one, same)], ninf, zeros)
            family([("p_dis", one, same), (d, one, same)], ninf, np.full(n, b.p_dis_max_mw))
        else:
            family([(d, one, same), ("p_dis", -one, same)], ninf, zeros)
            family([("p_ch", one, same), (c, one, same)], ninf, np.full(n, b.p_ch_max_mw))
        if side == "up":  # E_{t-1} − H D↑/η_d ≥ E_min
            family(
                [("e", one, prev), (d, -sustain_h / b.eta_d * one, same)], b.e_min_mwh - start, inf
            )
        else:  # E_{t-1} + H η_c C↓ ≤ E_max
            family(
                [("e", one, prev), (c, sustain_h * b.eta_c * one, same)], ninf, b.e_max_mwh - start
            )
    a = sparse.vstack(rows).tocsr()

    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("mip_rel_gap", mip_rel_gap)
    h.addVars(n_cols, lower, upper)
    h.changeColsCost(n_cols, np.arange(n_cols, dtype=np.int32), cost)
    h.addRows(
        a.shape[0],
        np.concatenate(lo),
        np.concatenate(hi),
        a.nnz,
        a.indptr[:-1].astype(np.int32),
        a.indices.astype(np.int32),
        a.data,
    )
    wanted = np.ones(n, dtype=bool) if binary is None else np.asarray(binary, dtype=bool)
    idx = (col["u"] + np.flatnonzero(wanted)).astype(np.int32)
    if len(idx):
        h.changeColsIntegrality(
            len(idx), idx, np.full(len(idx), highspy.HighsVarType.kInteger, dtype=np.uint8)
        )
    h.run()
    status = h.getModelStatus()
    if status != highspy.HighsModelStatus.kOptimal:
        raise RuntimeError(f"reference MILP: {h.modelStatusToString(status)}")
    x = np.asarray(h.getSolution().col_value)

    def part(name: str) -> F64:
        return x[col[name] : col[name] + n] if name in col else zeros

    return ReferenceResult(
        objective=-float(h.getInfo().objective_function_value),
        p_dis=part("p_dis"),
        p_ch=part("p_ch"),
        e=part("e"),
        r_up=part("r_up"),
        r_down=part("r_down"),
        highs_s=float(h.getRunTime()),
        columns=col,
    )
