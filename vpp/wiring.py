"""Assembles the engine from its components for `vpp run` and `vpp serve`."""

from __future__ import annotations

from vpp.config import Settings
from vpp.runtime import Engine


def build_engine(settings: Settings, *, simulate: bool, auto_migrate: bool) -> Engine:
    """The engine with every component that exists, upstream to downstream."""
    engine = Engine(settings, auto_migrate=auto_migrate)
    del simulate
    return engine
