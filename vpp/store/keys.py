"""API keys: created once, shown once, stored only as a SHA-256 hash.

A key looks like ``vpp_<key_id>_<secret>``: the id finds the row, the hash of the whole
key is compared in constant time. Keys are 256-bit random tokens, so a plain SHA-256 (not
a slow password hash) is the right tool. Verified keys are cached for ``ttl_s`` seconds,
so a revocation made from another process (``vpp keys revoke``) takes effect within that.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import sqlalchemy as sa

from vpp.store.tables import api_keys

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
RANK = {role: i for i, role in enumerate(ROLES)}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's id, its name and role."""

    key_id: str
    name: str
    role: Role

    def can(self, role: Role) -> bool:
        return RANK[self.role] >= RANK[role]

    @property
    def actor(self) -> str:
        return f"{self.name} ({self.key_id})"


SYSTEM = Principal("system", "engine", "admin")


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


_KEY_ID = re.compile(r"^[0-9a-f]{12}$")


class KeyStore:
    """API keys: only a hash is stored; verification is a constant-time compare.

    Lookups are cached for ``ttl_s`` (a revocation takes effect within it) in a bounded LRU
    of ``max_cached`` entries, and only for key ids that exist: a flood of made-up keys can
    neither grow the cache nor evict the real ones. :meth:`verify_async` answers a cache hit
    at once and moves a miss's database read off the event loop.

    The ids of every key are known too (a few dozen short strings), so a well-formed id
    that is not among them is refused without reading its row. The id list is read again
    on such a miss at most once per ``ids_refresh_s``: a flood of made-up ids costs at most
    one small read a second instead of one read each, and a key made by another process
    (``vpp keys create``) works within ``ids_refresh_s`` of its creation.
    """

    def __init__(
        self,
        engine: sa.Engine,
        ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        max_cached: int = 10_000,
        ids_refresh_s: float = 1.0,
    ) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        self.clock = clock
        self.max_cached = max_cached
        self.ids_refresh_s = ids_refresh_s
        self._cache: OrderedDict[str, tuple[float, str, Principal | None]] = OrderedDict()
        self._ids: frozenset[str] | None = None  # every key id, as last read
        self._ids_at = -math.inf
        self.id_reads = 0  # reads of the id list (for tests and metrics)

    def create(self, name: str, role: Role) -> tuple[Principal, str]:
        """A new key; the plaintext is returned once and never stored."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if not name.strip():
            raise ValueError("a key needs a name")
        bad = sorted({f"U+{ord(c):04X}" for c in name if not c.isprintable()})
        if bad:  # a name is shown in audits, logs and pages: printable text only
            raise ValueError(f"a key name must be printable text (it holds {', '.join(bad)})")
        if len(name) > 200:
            raise ValueError("a key name is at most 200 characters")
        key_id = secrets.token_hex(6)
        plaintext = f"vpp_{key_id}_{secrets.token_urlsafe(32)}"
        with self.engine.begin() as conn:
            conn.execute(
                api_keys.insert().values(
                    key_id=key_id,
                    name=name,
                    role=role,
                    key_hash=_digest(plaintext),
                    created_at=datetime.now(UTC),
                    revoked_at=None,
                )
            )
        if self._ids is not None:
            self._ids = self._ids | {key_id}
        return Principal(key_id, name, role), plaintext

    @staticmethod
    def _parse(presented: str | None) -> tuple[str, str] | None:
        """(key id, digest) of a well-formed key, else None (no lookup needed)."""
        if not presented or not presented.startswith("vpp_") or len(presented) > 200:
            return None
        parts = presented.split("_", 2)
        if len(parts) != 3 or not _KEY_ID.match(parts[1]):
            return None
        return parts[1], _digest(presented)

    def _cached(self, key_id: str) -> tuple[float, str, Principal | None] | None:
        hit = self._cache.get(key_id)
        if hit is None or self.clock() - hit[0] > self.ttl_s:
            return None
        self._cache.move_to_end(key_id)
        return hit

    def _surely_unknown(self, key_id: str) -> bool:
        """True when ``key_id`` is not a key and the id list is too fresh to read again."""
        ids = self._ids
        return (
            ids is not None
            and key_id not in ids
            and self.clock() - self._ids_at < self.ids_refresh_s
        )

    def _lookup(self, key_id: str) -> tuple[float, str, Principal | None] | None:
        """The key's row through the id list (read again if it is stale and misses)."""
        if self._surely_unknown(key_id):
            return None
        ids = self._ids
        if ids is None or key_id not in ids:
            at = self.clock()
            with self.engine.connect() as conn:
                ids = frozenset(conn.execute(sa.select(api_keys.c.key_id)).scalars())
            self._ids, self._ids_at = ids, at
            self.id_reads += 1
            if key_id not in ids:
                return None
        return self._load(key_id)

    def _load(self, key_id: str) -> tuple[float, str, Principal | None] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).first()
        if row is None:
            return None  # unknown ids are never cached
        principal = Principal(row.key_id, row.name, row.role) if row.revoked_at is None else None
        hit = (self.clock(), row.key_hash, principal)
        self._cache[key_id] = hit
        self._cache.move_to_end(key_id)
        while len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)
        return hit

    @staticmethod
    def _check(hit: tuple[float, str, Principal | None] | None, digest: str) -> Principal | None:
        if hit is None:
            hmac.compare_digest(digest, digest)  # the same work whether the id exists or not
            return None
        _, stored, principal = hit
        if not hmac.compare_digest(stored, digest) or principal is None:
            return None
        return principal

    def verify(self, presented: str | None) -> Principal | None:
        """The key's principal, or None for a missing, malformed, unknown or revoked key."""
        parsed = self._parse(presented)
        if parsed is None:
            return None
        key_id, digest = parsed
        hit = self._cached(key_id) or self._lookup(key_id)
        return self._check(hit, digest)

    async def verify_async(self, presented: str | None) -> Principal | None:
        """:meth:`verify` for the event loop: a miss reads the database in a thread."""
        parsed = self._parse(presented)
        if parsed is None:
            return None
        key_id, digest = parsed
        hit = self._cached(key_id)
        if hit is None and not self._surely_unknown(key_id):  # no thread for a made-up id
            hit = await asyncio.to_thread(self._lookup, key_id)
        return self._check(hit, digest)

    def list_keys(self) -> list[dict[str, object]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    api_keys.c.key_id,
                    api_keys.c.name,
                    api_keys.c.role,
                    api_keys.c.created_at,
                    api_keys.c.revoked_at,
                ).order_by(api_keys.c.created_at)
            ).all()
        return [dict(r._mapping) for r in rows]

    def revoke(self, key_id: str) -> bool:
        with self.engine.begin() as conn:
            done = conn.execute(
                api_keys.update()
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            ).rowcount
        self._cache.pop(key_id, None)
        return bool(done)
