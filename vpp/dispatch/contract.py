"""Command and ack contracts v1 (topics ``vpp.commands`` and ``vpp.acks``, key ``site_id``).

A command asks one site to hold ``setpoint_kw`` (+ = discharge) from ``valid_from`` until
``valid_until``; after that the site falls back to its default behaviour (as IEEE 2030.5's
default control). ``command_id`` is a UUID fixed at issue: every retry carries the same id
and content with a higher ``attempt``, so a site that receives it twice applies it once.

An ack reports ``accepted`` (applying it), ``rejected`` (with a ``reason``) or
``completed`` (the validity ended with the command applied).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

AckStatus = Literal["accepted", "rejected", "completed"]


class Command(msgspec.Struct, frozen=True, gc=False):
    v: int
    command_id: str
    dispatch_id: str
    site_id: str
    setpoint_kw: float
    valid_from: datetime
    valid_until: datetime
    attempt: int
    issued_at: datetime


class Ack(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    v: Literal[1]
    command_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    site_id: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    status: AckStatus
    ts: Annotated[datetime, msgspec.Meta(tz=True)]
    reason: str | None = None


command_encoder = msgspec.json.Encoder()
command_decoder = msgspec.json.Decoder(Command)
ack_decoder = msgspec.json.Decoder(Ack)
ack_batch_decoder = msgspec.json.Decoder(list[Ack])
