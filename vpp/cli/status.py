"""The live status display of `vpp run` (rich)."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from vpp.runtime import Engine


class StatusDisplay:
    """A live status line (and tables once components report them), refreshed every tick."""

    def __init__(self, console: Console, quiet: bool = False, plain_every: int = 5) -> None:
        self.console = console
        self.live = not quiet and console.is_terminal
        self.plain = not quiet and not console.is_terminal
        self.plain_every = plain_every
        self._live: Live | None = None
        self._last: dict[str, Any] = {}
        self._ticks = 0

    def __enter__(self) -> StatusDisplay:
        if self.live:
            self._live = Live(Text("starting..."), console=self.console, refresh_per_second=2)
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    def update(self, engine: Engine) -> None:
        self._last = engine.status()
        self._ticks += 1
        if self._live is not None:
            self._live.update(self.render(self._last))
        elif self.plain and self._ticks % self.plain_every == 0:
            self.console.print(self.line(self._last), highlight=False)

    @staticmethod
    def line(status: dict[str, Any]) -> str:
        parts = [f"up {status['uptime_s']:.0f}s", f"bus={status['bus']}"]
        if status.get("clock"):
            parts.append(f"clock {status['clock']}")
        if status.get("api"):
            parts.append(f"api={status['api']}")
        for name, value in status.items():
            if isinstance(value, dict) and "line" in value:
                parts.append(f"{name}: {value['line']}")
        return " | ".join(parts)

    def render(self, status: dict[str, Any]) -> Group:
        items: list[Any] = [Text(self.line(status), style="bold")]
        for value in status.values():
            if isinstance(value, dict):
                table = value.get("table")
                if isinstance(table, Table):
                    items.append(table)
        return Group(*items)

    def final(self, engine: Engine) -> None:
        self.console.print(f"stopped cleanly after {engine.status()['uptime_s']:.0f}s")
