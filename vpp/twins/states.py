"""The per-site state machines, as small integer codes so they live in NumPy arrays.

Connectivity (from telemetry age against the site's own reporting interval)::

    unknown ──first reading──▶ online ──age > k_stale·interval──▶ stale
                                  ▲                                  │ age > k_offline·interval
                                  └──────── fresh reading ◀── offline ◀┘

Operation (from the newest reading): unavailable when the gateway says ``available=false``,
fault when its mode is ``fault``, otherwise discharging / charging / idle by the sign of
``p_kw`` against a small dead band.

Command (driven by dispatch): none → pending (a command is out) → acked, or unresponsive
after a timeout; a site that answers again leaves unresponsive.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum


class Connectivity(IntEnum):
    UNKNOWN = 0
    ONLINE = 1
    STALE = 2
    OFFLINE = 3


class Operation(IntEnum):
    IDLE = 0
    CHARGING = 1
    DISCHARGING = 2
    FAULT = 3
    UNAVAILABLE = 4


class CommandState(IntEnum):
    NONE = 0
    PENDING = 1
    ACKED = 2
    UNRESPONSIVE = 3


STATE_FAMILIES: dict[str, type[IntEnum]] = {
    "connectivity": Connectivity,
    "operation": Operation,
    "command": CommandState,
}


def state_name(state: IntEnum) -> str:
    return state.name.lower()


# code -> name per family, for building events from array values without Enum calls
NAMES: dict[str, tuple[str, ...]] = {
    fam: tuple(state_name(m) for m in enum) for fam, enum in STATE_FAMILIES.items()
}


@dataclass(frozen=True, slots=True)
class SiteEvent:
    """A state transition of one site (went offline, came back, fault, unresponsive...)."""

    site_id: str
    ts: datetime
    family: str  # connectivity | operation | command
    from_state: str
    to_state: str

    @property
    def kind(self) -> str:
        return f"{self.family}:{self.to_state}"
