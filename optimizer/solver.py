"""Pyomo's persistent HiGHS interface, with a vectorized fast path for re-solves.

The Pyomo model is handed to HiGHS once (``set_instance``). A re-solve then changes only
numbers, in one of two ways:

- *hot path* — the changes every re-solve makes (prices, hence objective coefficients; the
  initial energy, one row bound): pushed to the HiGHS model directly as whole vectors
  (``changeColsCost``, ``changeRowBounds``), then HiGHS runs warm from its last basis and
  the solution is read back as an array. This is what keeps a 288-interval re-solve at a
  few milliseconds of overhead instead of re-evaluating every mutable expression.
- *full path* — anything else (efficiencies, limits, interval length, deployment
  fractions): Pyomo's ``update_parameters()`` re-evaluates every mutable expression and
  pushes it. Rare in operation; always correct.

Every call into Pyomo's solver interface or a HiGHS run in the process holds one lock.
HiGHS keeps a process-wide task scheduler that all its instances share, and two instances
running at once from different threads can crash the process (ERGO-Code/HiGHS#810, #1005,
#3141; seen here as a segfault when the engine's bidders for two markets solved at the
same moment). Pyomo's interface redirects the process's ``sys.stdout`` while it hands a
model over, which is not safe from two threads either (a "TeeStream deadlock" error).
Solves are serialized: on a machine of a few cores HiGHS's own threads use them anyway,
and a bidding cycle waits at most for one other solve.

Integrality changes (:meth:`optimizer.base.DispatchModel.set_integer`) go through Pyomo's
``update_variables``. The automatic scans for structural changes are switched off: these
models never change structure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import highspy
import numpy as np
import numpy.typing as npt
import pyomo.environ as pyo
from pyomo.contrib.solver.solvers.highs import Highs

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_STATUS = {
    highspy.HighsModelStatus.kOptimal: "optimal",
    highspy.HighsModelStatus.kInfeasible: "infeasible",
    highspy.HighsModelStatus.kUnboundedOrInfeasible: "infeasible_or_unbounded",
    highspy.HighsModelStatus.kUnbounded: "unbounded",
    highspy.HighsModelStatus.kTimeLimit: "time_limit",
    highspy.HighsModelStatus.kIterationLimit: "iteration_limit",
}


@dataclass(frozen=True, slots=True)
class RunResult:
    status: str
    objective: float
    values: F64  # every column's primal value, indexed by HiGHS column
    highs_s: float  # HiGHS's own run time for this solve
    solve_s: float  # wall time of the run call

    @property
    def optimal(self) -> bool:
        return self.status == "optimal"


class _BulkHighs(Highs):
    """Adds every variable in one call before the constraints (Pyomo adds them one
    constraint at a time otherwise: an ``addVars`` and an integrality call per row)."""

    def add_block(self, block: pyo.Block) -> None:
        variables = list(block.component_data_objects(pyo.Var, descend_into=True))
        self.add_variables(variables)
        super().add_block(block)

    def _add_variables(self, variables: list[Any]) -> None:
        if variables:  # the per-constraint calls that follow find nothing new
            super()._add_variables(variables)


# HiGHS stops a MILP at a relative gap of 1e-4 by default: on a year of prices that is
# tens of currency units off the optimum, so results would not equal an independent MILP to
# 1e-6. The price: a 24-hour window of 5-minute prices with ~150 negative intervals takes
# ~4 s to close to 1e-6 against ~0.5 s at 1e-4 (June 2019 US real-time prices); a scenario
# can trade exactness for speed (``strategy.mip_rel_gap``).
MIP_REL_GAP = 1e-6


# One hand-over or HiGHS run at a time in this process (see the module docstring).
_LOCK = threading.RLock()


class PersistentHighs:
    def __init__(
        self,
        model: pyo.ConcreteModel,
        *,
        time_limit_s: float | None = None,
        mip_rel_gap: float = MIP_REL_GAP,
    ) -> None:
        self.model = model
        self.opt = _BulkHighs()
        cfg = self.opt.config
        cfg.load_solutions = False
        cfg.raise_exception_on_nonoptimal_result = False
        auto = cfg.auto_updates
        for flag in (
            "check_for_new_or_removed_constraints",
            "check_for_new_or_removed_vars",
            "check_for_new_or_removed_params",
            "check_for_new_objective",
            "update_constraints",
            "update_vars",
            "update_named_expressions",
            "update_objective",
            "update_parameters",
        ):
            setattr(auto, flag, False)
        with _LOCK:
            self.opt.set_instance(model)
        self.highs: highspy.Highs = self.opt._solver_model
        self.highs.setOptionValue("output_flag", False)
        self.highs.setOptionValue("log_to_console", False)
        # A cold first solve gains from presolve; after it, presolve would throw away the
        # basis that a parameter change leaves valid, so warm re-solves run without it.
        self._warm = False
        self.highs.setOptionValue("mip_rel_gap", float(mip_rel_gap))
        if time_limit_s is not None:
            self.highs.setOptionValue("time_limit", float(time_limit_s))
        self._col_map: dict[int, int] = self.opt._pyomo_var_to_solver_var_map
        self._row_map: dict[Any, int] = self.opt._pyomo_con_to_solver_con_map
        self.n_cols = len(self._col_map)
        self.integer = False  # any integer column now (set by the model)

    # -- structure lookups -----------------------------------------------------------------

    def cols(self, variables: Sequence[Any]) -> I64:
        """HiGHS column index of each variable."""
        return np.fromiter((self._col_map[id(v)] for v in variables), np.int64, len(variables))

    def row(self, constraint: Any) -> int:
        return int(self._row_map[constraint])

    # -- changes ---------------------------------------------------------------------------

    def update_all_parameters(self) -> None:
        """Full path: re-evaluate every mutable expression and push it."""
        with _LOCK:
            self.opt.update_parameters()

    def update_variables(self, variables: Iterable[Any]) -> None:
        changed = list(variables)
        if changed:
            with _LOCK:
                self.opt.update_variables(changed)

    def set_costs(self, costs: F64) -> None:
        """Hot path: the whole objective coefficient vector at once."""
        idx = np.arange(self.n_cols, dtype=np.int32)
        self.highs.changeColsCost(self.n_cols, idx, np.ascontiguousarray(costs, dtype=np.float64))

    def set_row_bounds(self, row: int, lower: float, upper: float) -> None:
        self.highs.changeRowBounds(row, lower, upper)

    # -- solve -----------------------------------------------------------------------------

    def run(self) -> RunResult:
        highs = self.highs
        # A cold first solve gains from presolve, and so does every MILP (branch and bound
        # on the presolved model); a warm LP re-solve does better from its last basis.
        highs.setOptionValue("presolve", "off" if self._warm and not self.integer else "choose")
        self._warm = True
        with _LOCK:
            before = highs.getRunTime()
            started = time.perf_counter()
            highs.run()
            solve_s = time.perf_counter() - started
            highs_s = highs.getRunTime() - before
            status = _STATUS.get(highs.getModelStatus(), str(highs.getModelStatus()))
            values = np.asarray(highs.getSolution().col_value, dtype=np.float64)
            objective = float(highs.getInfo().objective_function_value)
        return RunResult(status, objective, values, highs_s, solve_s)
