"""Console sessions: an opaque id in the browser, the API key and a CSRF token on the server.

Bounded (least recently used sessions go first) and expiring; nothing is written to disk,
so a restart signs everyone out — the price of never storing a key.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

COOKIE = "vpp_console"


@dataclass(slots=True)
class Session:
    key: str
    csrf: str
    expires: float


class SessionStore:
    def __init__(self, ttl_s: float = 8 * 3600, max_sessions: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def create(self, key: str) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        session = Session(key, secrets.token_urlsafe(24), time.monotonic() + self.ttl_s)
        self._sessions[sid] = session
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        session = self._sessions.get(sid)
        if session is None:
            return None
        if session.expires < time.monotonic():
            del self._sessions[sid]
            return None
        self._sessions.move_to_end(sid)
        return session

    def drop(self, sid: str | None) -> None:
        if sid:
            self._sessions.pop(sid, None)
