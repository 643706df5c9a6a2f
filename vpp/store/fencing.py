"""The error a write raises when its instance no longer leads the role it acts for (the
store checks the term; :mod:`vpp.leader` elects)."""

from __future__ import annotations


class FencedError(RuntimeError):
    """An instance that no longer leads tried to act for the role; ``term`` is the term it
    believed it led (None: it knew it led none)."""

    def __init__(self, message: str, term: int | None = None) -> None:
        super().__init__(message)
        self.term = term
