"""Each site's recent telemetry, kept for operators in a fixed ring per site.

The twin holds only the newest reading; an operator looking at one site wants the last
minutes of it (state of charge, power, site load) to see a ramp, a stuck set-point or a
flapping link. Keeping every reading would cost memory in proportion to the message rate,
so the trace samples: a reading enters a site's ring only when it is at least
``every_s`` newer than the last one kept, and each ring holds ``depth`` samples. Memory is
``capacity x depth x 20 bytes`` (a float64 time and three float32 values), independent of
the telemetry rate: 48 samples every 15 s (twelve minutes) cost 960 bytes per site, about
96 MB for 100,000 sites on one instance; ``depth = 0`` turns the trace off.

The write is vectorized over a folded batch (fancy indexing into the rings, one site at
most once per batch: the fold has already kept one reading per site). The trace is a
view, not state: it is not part of a snapshot, so it starts empty after a restart or a
partition hand-over.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class SiteTrace:
    """Rings of (ts, soc, p_kw, site_load_kw) per site row, oldest overwritten first."""

    FIELDS = ("soc", "p_kw", "site_load_kw")

    def __init__(self, depth: int, every_s: float, capacity: int) -> None:
        if depth < 1:
            raise ValueError("a trace needs depth >= 1 (use no trace to turn it off)")
        if every_s < 0:
            raise ValueError("every_s must be >= 0")
        self.depth = depth
        self.every_s = every_s
        self._capacity = 0
        self.ts = np.empty((0, depth))
        self.values = {f: np.empty((0, depth), dtype=np.float32) for f in self.FIELDS}
        self.count = np.empty(0, dtype=np.int64)
        self.last = np.empty(0)
        self.grow(capacity)

    def grow(self, capacity: int) -> None:
        """Make room for ``capacity`` site rows, keeping what is recorded."""
        n = self._capacity
        if capacity <= n:
            return
        ts = np.full((capacity, self.depth), np.nan)
        ts[:n] = self.ts
        self.ts = ts
        for f, old in self.values.items():
            new = np.full((capacity, self.depth), np.nan, dtype=np.float32)
            new[:n] = old
            self.values[f] = new
        count = np.zeros(capacity, dtype=np.int64)
        count[:n] = self.count
        self.count = count
        last = np.full(capacity, -np.inf)
        last[:n] = self.last
        self.last = last
        self._capacity = capacity

    def record(self, sites: I64, ts: F64, **values: F64) -> int:
        """Keep the readings of ``sites`` (unique rows) that are due; returns how many."""
        due = ts - self.last[sites] >= self.every_s
        if not due.all():
            sites, ts = sites[due], ts[due]
            values = {f: v[due] for f, v in values.items()}
        if not sites.size:
            return 0
        pos = self.count[sites] % self.depth
        self.ts[sites, pos] = ts
        for f in self.FIELDS:
            self.values[f][sites, pos] = values[f]
        self.count[sites] += 1
        self.last[sites] = ts
        return int(sites.size)

    def series(self, row: int) -> dict[str, Any]:
        """One site's kept samples, oldest first: ``{"ts": [...], "soc": [...], ...}``."""
        k = int(self.count[row])
        n = min(k, self.depth)
        order = (np.arange(k - n, k) % self.depth) if n else np.empty(0, dtype=np.int64)
        out: dict[str, Any] = {"ts": self.ts[row, order].tolist()}
        for f in self.FIELDS:
            col = self.values[f][row, order].astype(np.float64)
            out[f] = [None if np.isnan(x) else round(float(x), 4) for x in col]
        return out
