"""Real load and PV profiles for simulated sites (see profiles/ATTRIBUTION.md).

Profiles are indexed by time of year, so any simulated date maps onto them; each site
scales and shifts them so no two sites look alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
YEAR_S = 365 * 86_400


@dataclass(frozen=True, slots=True)
class Profiles:
    household_kw: F64  # 15-min steps, one year
    ci_load_kw: F64  # hourly steps, one year (a ~5 MW C&I site)
    pv_per_kw: F64  # hourly steps, one year (output per rated kW)

    def sample(self, profile: F64, step_s: float, t_s: npt.NDArray[np.float64]) -> F64:
        """Linear interpolation of ``profile`` at epoch seconds ``t_s`` (wrapping yearly)."""
        pos = (np.mod(t_s, YEAR_S) / step_s) % len(profile)
        i0 = np.floor(pos).astype(np.int64)
        frac = pos - i0
        i1 = (i0 + 1) % len(profile)
        out: F64 = profile[i0] * (1 - frac) + profile[i1] * frac
        return out

    def household(self, t_s: F64) -> F64:
        return self.sample(self.household_kw, 900.0, t_s)

    def ci_load(self, t_s: F64) -> F64:
        return self.sample(self.ci_load_kw, 3600.0, t_s)

    def pv(self, t_s: F64) -> F64:
        return self.sample(self.pv_per_kw, 3600.0, t_s)


@cache
def load_profiles() -> Profiles:
    with files("vpp.sim").joinpath("profiles/profiles.npz").open("rb") as fh, np.load(fh) as data:
        return Profiles(
            household_kw=data["household_w"].astype(np.float64) / 1000.0,
            ci_load_kw=data["ci_load_kw"].astype(np.float64),
            pv_per_kw=data["pv_per_kw"].astype(np.float64),
        )
