"""The readable single-site face of one row of the columnar store."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vpp.records import plain, utc_iso
from vpp.telemetry.contract import MODES
from vpp.twins.states import CommandState, Connectivity, Operation, state_name
from vpp.twins.store import FleetStore


@dataclass(frozen=True, slots=True)
class SiteView:
    site_id: str
    group: str
    active: bool
    capacity_kwh: float
    p_charge_max_kw: float
    p_discharge_max_kw: float
    eff_charge: float
    eff_discharge: float
    soc_min: float
    soc_max: float
    telemetry_interval_s: float
    connectivity: str
    operation: str
    command: str
    last_ts: datetime | None
    age_s: float | None
    seq: int | None
    soc: float | None
    p_kw: float | None
    site_load_kw: float | None
    pv_kw: float | None
    available: bool
    mode: str | None
    health: float

    @property
    def e_kwh(self) -> float | None:
        """Stored energy at the last reading."""
        return None if self.soc is None else self.soc * self.capacity_kwh

    def to_dict(self) -> dict[str, Any]:
        out = plain(self)
        out["last_ts"] = utc_iso(self.last_ts) if self.last_ts else None
        out["e_kwh"] = self.e_kwh
        return out


def _opt(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def site_view(store: FleetStore, site_id: str, now_s: float) -> SiteView | None:
    i = store.index.get(site_id)
    if i is None:
        return None
    seen = math.isfinite(store.ts[i])
    mode_code = int(store.mode[i])
    return SiteView(
        site_id=site_id,
        group=store.groups[int(store.group[i])],
        active=bool(store.active[i]),
        capacity_kwh=float(store.capacity_kwh[i]),
        p_charge_max_kw=float(store.p_charge_max_kw[i]),
        p_discharge_max_kw=float(store.p_discharge_max_kw[i]),
        eff_charge=float(store.eff_charge[i]),
        eff_discharge=float(store.eff_discharge[i]),
        soc_min=float(store.soc_min[i]),
        soc_max=float(store.soc_max[i]),
        telemetry_interval_s=float(store.interval_s[i]),
        connectivity=state_name(Connectivity(int(store.conn[i]))),
        operation=state_name(Operation(int(store.op[i]))),
        command=state_name(CommandState(int(store.cmd[i]))),
        last_ts=datetime.fromtimestamp(store.ts[i], UTC) if seen else None,
        age_s=float(now_s - store.ts[i]) if seen else None,
        seq=int(store.seq[i]) if seen else None,
        soc=_opt(store.soc[i]) if seen else None,
        p_kw=float(store.p_kw[i]) if seen else None,
        site_load_kw=_opt(store.site_load_kw[i]) if seen else None,
        pv_kw=_opt(store.pv_kw[i]) if seen else None,
        available=bool(store.available[i]),
        mode=MODES[mode_code - 1] if mode_code else None,
        health=float(store.health[i]),
    )
