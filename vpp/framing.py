"""Decoding a batch of bus messages without letting message boundaries blur.

Joining messages as ``[m1,m2,...]`` (or framing each, ``[[m1],[m2],...]``) and decoding one
array accepts what one by one would be refused: bytes of one message can complete another.
A message that opens a string or a nested array and a next one that closes it add up to
valid frames of the right count, so a reading hidden in an undecodable message is folded
(the probe's "framed-batch smuggling": 100 of 100 pairs). Each message is therefore decoded
on its own: for messages of this size msgspec decodes one at a time as fast as a joined
array (2.6-3.0 M/s against 1.0-1.2 M/s for the framed array, measured side by side on this
machine), and no message's bytes can reach another's value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec


def decode_each(decoder: msgspec.json.Decoder[Any], values: Sequence[bytes]) -> list[Any]:
    """Every message decoded on its own, or :class:`msgspec.MsgspecError` if any is not
    exactly one valid message (the caller then finds which, one by one)."""
    decode = decoder.decode
    return [decode(v) for v in values]
