"""Decoding a batch of bus messages in one call without letting message boundaries blur.

Joining messages as ``[m1,m2,...]`` and decoding one array is fast, but it accepts what one
by one would be refused: a message split across two (``{"a":`` + ``1}``) or two objects in
one (``{...},{...}``) can still add up to a valid array of the right length. Framing each
message in its own array — ``[[m1],[m2],...]`` decoded as ``list[tuple[T]]`` — makes every
element exactly one JSON value: a split message is malformed inside its frame, a doubled
one is a frame of length two. Either fails the batch, and the caller decodes one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")


def framed_decoder(kind: type[T]) -> msgspec.json.Decoder[Any]:
    """The batch decoder for messages of ``kind`` (see the module docstring)."""
    return msgspec.json.Decoder(list[tuple[kind]])  # type: ignore[valid-type]


def decode_framed(decoder: msgspec.json.Decoder[Any], values: Sequence[bytes]) -> list[Any]:
    """Every message decoded, or :class:`msgspec.MsgspecError` if any is not exactly one
    valid message."""
    frames = decoder.decode(b"[[" + b"],[".join(values) + b"]]")
    if len(frames) != len(values):
        raise msgspec.DecodeError("message boundaries do not match the batch")
    return [f[0] for f in frames]
