"""Telemetry contract v1 (topic ``vpp.telemetry``, key ``site_id``), as msgspec Structs.

One JSON object per message::

    {"v": 1, "site_id": "site-000042", "ts": "2026-11-21T14:05:02.125Z", "seq": 1834,
     "soc": 0.6123, "p_kw": -3.2, "site_load_kw": 4.1, "pv_kw": 0.0,
     "available": true, "mode": "auto"}

``ts`` is the measurement instant, ISO 8601 *with* an offset; ``seq`` increases per site
(a gateway restart may reset it, ``ts`` orders first). ``(site_id, ts, seq)`` identifies a
reading: a redelivery is an exact copy, and the engine keeps the first it folds of two
different readings that claim the same identity. ``p_kw`` is the battery's power at
the site's connection point, positive = discharge. ``site_load_kw`` and ``pv_kw`` are
optional (absent = not metered); ``available`` false means the site asked not to be
dispatched; ``mode`` is the gateway's own operating mode.

Type-level checks (missing fields, wrong types, unknown fields, naive timestamps, numbers
out of float range, unknown ``mode``) happen inside msgspec's decoder; range checks that
depend on the site or the clock happen vectorized in :mod:`vpp.telemetry.decode`.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec

SCHEMA_VERSION: Final = 1

Mode = Literal["auto", "manual", "standby", "fault", "maintenance"]
MODES: Final[tuple[str, ...]] = ("auto", "manual", "standby", "fault", "maintenance")
MODE_CODE: Final[dict[str | None, int]] = {None: 0, **{m: i + 1 for i, m in enumerate(MODES)}}

SiteId = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$")]


class Telemetry(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """One telemetry reading. Unknown fields are refused (a new field is a new version)."""

    v: Literal[1]
    site_id: str
    ts: Annotated[datetime, msgspec.Meta(tz=True)]
    seq: Annotated[int, msgspec.Meta(ge=0, le=2**62)]
    soc: float
    p_kw: float
    site_load_kw: float | None = None
    pv_kw: float | None = None
    available: bool = True
    mode: Mode | None = None


class DeadLetter(msgspec.Struct, gc=False):
    """What ``vpp.deadletter`` carries: the refused bytes, where they came from and why."""

    v: int
    source_topic: str
    partition: int
    offset: int
    reason: str
    detail: str
    key: bytes | None  # the raw bytes (base64 in JSON), exactly as received
    value: bytes | None
    refused_at: datetime


class _TelemetryOut(msgspec.Struct, omit_defaults=True, gc=False):
    v: int
    site_id: str
    ts: str
    seq: int
    soc: float
    p_kw: float
    site_load_kw: float | None = None
    pv_kw: float | None = None
    available: bool = True
    mode: str | None = None


_encoder = msgspec.json.Encoder()


def encode_telemetry_batch(
    site_ids: list[str],
    ts: datetime,
    seq: list[int],
    soc: list[float],
    p_kw: list[float],
    site_load_kw: list[float | None],
    pv_kw: list[float | None],
) -> list[bytes]:
    """Many sites' readings taken at one instant, each in the v1 wire form (what
    :func:`encode_telemetry` gives one by one; NaN loads are left out)."""
    if ts.tzinfo is None:
        raise ValueError("ts must be timezone-aware")
    iso = ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    enc = _encoder.encode
    return [
        enc(
            _TelemetryOut(
                SCHEMA_VERSION,
                sid,
                iso,
                q,
                c,
                p,
                None if load is None or load != load else load,
                None if pv is None or pv != pv else pv,
            )
        )
        for sid, q, c, p, load, pv in zip(
            site_ids, seq, soc, p_kw, site_load_kw, pv_kw, strict=True
        )
    ]


def encode_telemetry(
    site_id: str,
    ts: datetime,
    seq: int,
    soc: float,
    p_kw: float,
    *,
    site_load_kw: float | None = None,
    pv_kw: float | None = None,
    available: bool = True,
    mode: str | None = None,
) -> bytes:
    """The v1 wire form (what a gateway sends); ``ts`` must be aware."""
    if ts.tzinfo is None:
        raise ValueError("ts must be timezone-aware")
    iso = ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return _encoder.encode(
        _TelemetryOut(
            SCHEMA_VERSION,
            site_id,
            iso,
            seq,
            soc,
            p_kw,
            None if site_load_kw is None or math.isnan(site_load_kw) else site_load_kw,
            None if pv_kw is None or math.isnan(pv_kw) else pv_kw,
            available,
            mode,
        )
    )
