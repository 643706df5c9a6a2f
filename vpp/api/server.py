"""The API's HTTP server: uvicorn with bounds on slow clients.

uvicorn times out an idle keep-alive connection, but a client that opens a connection and
sends its request line, headers or body a byte at a time holds it (and a file descriptor the
engine shares with its database and Kafka sockets) for as long as it likes: 300 of 300 such
connections stayed open for a minute in the probe. Here every request must arrive whole —
request line, headers and body — within ``api.request_timeout_s`` of the connection opening
(or of the previous response, on a kept-alive connection), or the connection is closed; and
the server holds at most ``api.max_connections`` connections and requests in flight
(uvicorn's ``limit_concurrency``: beyond it new requests get 503 at once).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request to arrive in full."""

    request_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout_s, self._expire)

    def _disarm(self) -> None:
        deadline = getattr(self, "_deadline", None)
        if deadline is not None:
            deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        """Too slow: the request has not arrived whole in time."""
        self._deadline = None
        cycle = self.cycle
        if cycle is None or cycle.response_complete or cycle.more_body:
            self.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        cycle = self.cycle
        if cycle is not None and not cycle.more_body and not cycle.response_complete:
            self._disarm()  # the whole request is in: the app answers at its own pace

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection gets the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def guarded_protocol(request_timeout_s: float) -> type[GuardedH11Protocol]:
    """The protocol class with this deadline (uvicorn takes a class, not an instance)."""
    return type(
        "GuardedH11Protocol", (GuardedH11Protocol,), {"request_timeout_s": request_timeout_s}
    )


def server_options(request_timeout_s: float, max_connections: int) -> dict[str, Any]:
    """uvicorn.Config options for the API server's bounds (see the module docstring)."""
    return {
        "http": guarded_protocol(request_timeout_s),
        "limit_concurrency": max_connections,
        "timeout_keep_alive": 5,
    }
