"""Whether sites follow the setpoints they acked: dispatch's own per-site state.

The twins (:class:`vpp.twins.store.FleetStore`) hold what telemetry says; dispatch reads
them and keeps, in columns indexed by the same store rows, what it expects:

- ``setpoint_kw``: the setpoint a site acked and must now show (NaN: none to follow);
- ``setpoint_from``: the instant from which its readings must show it (the command's
  start plus a grace period for the site to ramp);
- ``follow_seen``: the timestamp of the newest reading already checked (a reading counts
  once, however many ticks see it);
- ``strikes``: how many checked readings in a row disagreed.

A site is *not following* after two disagreeing readings in a row (one could be a
reading taken mid-ramp). The check is vectorized over a group's rows.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from vpp.twins.store import FleetStore

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
STRIKES_OUT = 2


class FollowState:
    """Per-site follow columns, grown with the twins' store."""

    def __init__(self) -> None:
        self.setpoint_kw: F64 = np.full(0, np.nan)
        self.setpoint_from: F64 = np.full(0, np.inf)
        self.follow_seen: F64 = np.full(0, -np.inf)
        self.strikes: npt.NDArray[np.int16] = np.zeros(0, dtype=np.int16)

    def grow(self, n: int) -> None:
        size = self.setpoint_kw.size
        if size >= n:
            return
        new = max(n, 2 * size, 16)

        def widen(arr: npt.NDArray[np.generic], fill: float) -> npt.NDArray[np.generic]:
            out = np.full(new, fill, dtype=arr.dtype)
            out[:size] = arr
            return out

        self.setpoint_kw = widen(self.setpoint_kw, np.nan)  # type: ignore[assignment]
        self.setpoint_from = widen(self.setpoint_from, np.inf)  # type: ignore[assignment]
        self.follow_seen = widen(self.follow_seen, -np.inf)  # type: ignore[assignment]
        self.strikes = widen(self.strikes, 0)  # type: ignore[assignment]

    def expect(self, rows: I64, setpoint_kw: F64, since: F64) -> None:
        """These sites acked ``setpoint_kw``; their readings must show it from ``since``."""
        self.setpoint_kw[rows] = setpoint_kw
        self.setpoint_from[rows] = since
        self.follow_seen[rows] = -np.inf
        self.strikes[rows] = 0

    def forget(self, rows: I64) -> None:
        """Nothing to follow for these sites (a new command is pending, or none is live)."""
        self.setpoint_kw[rows] = np.nan
        self.strikes[rows] = 0

    def check(self, store: FleetStore, rows: I64, tolerance: float) -> I64:
        """Fold the sites' new readings in; the rows just found not following.

        A reading counts when it is newer than the last one checked and taken after
        ``setpoint_from``; it disagrees when ``|p − setpoint| > tolerance × rating``. A site
        found not following is checked no further (its setpoint is forgotten) until it
        acks a new command.
        """
        self.grow(store.n)
        ts = store.ts[rows]
        fresh = (
            ~np.isnan(self.setpoint_kw[rows])
            & (ts >= self.setpoint_from[rows])
            & (ts > self.follow_seen[rows])
        )
        r = rows[fresh]
        if not r.size:
            return r
        rating = np.maximum(store.p_charge_max_kw[r], store.p_discharge_max_kw[r])
        off = np.abs(store.p_kw[r] - self.setpoint_kw[r]) > tolerance * rating
        self.strikes[r] = np.where(off, self.strikes[r] + 1, 0)
        self.follow_seen[r] = ts[fresh]
        out = r[self.strikes[r] >= STRIKES_OUT]
        self.setpoint_kw[out] = np.nan
        return out
