"""Frozen records as plain data for JSON responses.

``dataclasses.asdict`` deep-copies every leaf; for API pages of 50 bids or 100 site
aggregates that copy was three quarters of the request (8 ms of 10 per bid page). The
records served are frozen and their leaves immutable (numbers, strings, datetimes), so a
walk that rebuilds only the containers gives the same data without the copies.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

_LEAVES = (float, int, str, bool, type(None))


def plain(value: Any) -> Any:
    """``value`` with every dataclass a dict, lists and tuples lists, dicts new dicts."""
    kind = type(value)
    if kind in _LEAVES:
        return value
    fields = getattr(kind, "__dataclass_fields__", None)
    if fields is not None:
        return {name: plain(getattr(value, name)) for name in fields}
    if kind is list or kind is tuple:
        return [plain(v) for v in value]
    if kind is dict:
        return {k: plain(v) for k, v in value.items()}
    return value  # datetimes, enums, numpy scalars: immutable, left to the encoder


def amount(x: float, digits: int = 2) -> str:
    """``x`` with thousands separators and ``digits`` decimals, never ``-0.00``: a value
    that rounds to zero prints as zero (a cost of -0.001 is no cost)."""
    text = f"{x:,.{digits}f}"
    return text[1:] if text.startswith("-") and float(text[1:].replace(",", "")) == 0 else text


def utc_iso(t: datetime) -> str:
    """An instant as every response writes it: ISO 8601 in UTC ending in ``Z`` (what
    msgspec and pydantic write; ``isoformat`` alone gave ``+00:00`` on some routes)."""
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def tidy_float(value: float) -> float:
    """A number at the resolution a response shows: rounded to 6 decimals (kW to the mW,
    prices to a millionth), so binary noise (``-70.00000000000001``, ``0.30000000000000004``)
    and negative zero never reach a client, in JSON or in CSV."""
    r = round(value, 6)
    return 0.0 if r == 0 else r
