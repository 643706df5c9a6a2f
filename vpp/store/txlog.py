"""The market transaction log in the database (implements :class:`market.adapter.TxLog`).

One row before an exchange (phase ``request``) and one after (phase ``response``), unique
per ``(tx_id, phase)``: recording is idempotent, and a restarted engine finds what it sent
and what it got back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from vpp.store.fencing import FencedError
from vpp.store.tables import market_txlog


class DbTxLog:
    """``fence`` (the leader's :meth:`vpp.leader.Leadership.fence`): called in the
    transaction that records a request; it returns the current term, stored with the
    request and its response, or raises :class:`vpp.store.fencing.FencedError` and nothing is
    recorded, so a deposed leader's exchange never starts. ``None``: a single instance,
    no terms. ``on_fenced`` (the leader's :meth:`vpp.leader.Leadership.fenced`) is told of
    a refusal once the refused transaction has ended."""

    def __init__(
        self,
        engine: sa.Engine,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        fence: Callable[[sa.Connection], int] | None = None,
        on_fenced: Callable[[FencedError], None] | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.fence = fence
        self.on_fenced = on_fenced

    @contextlib.contextmanager
    def _telling_of_fencing(self) -> Iterator[None]:
        """Passes a refusal to ``on_fenced`` once the refused transaction has ended."""
        try:
            yield
        except FencedError as exc:
            if self.on_fenced is not None:
                self.on_fenced(exc)
            raise

    def _insert(
        self,
        tx_id: str,
        market: str,
        operation: str,
        phase: str,
        request: dict[str, Any] | None,
        response: dict[str, Any] | None,
    ) -> None:
        with self._telling_of_fencing(), self.engine.begin() as conn:
            exists = conn.execute(
                sa.select(market_txlog.c.seq).where(
                    market_txlog.c.tx_id == tx_id, market_txlog.c.phase == phase
                )
            ).first()
            if exists is None:
                generation = None
                if phase == "request" and self.fence is not None:
                    generation = self.fence(conn)
                elif phase == "response":
                    generation = conn.execute(
                        sa.select(market_txlog.c.generation).where(
                            market_txlog.c.tx_id == tx_id, market_txlog.c.phase == "request"
                        )
                    ).scalar_one_or_none()
                conn.execute(
                    market_txlog.insert().values(
                        tx_id=tx_id,
                        market=market,
                        operation=operation,
                        phase=phase,
                        request=request,
                        response=response,
                        ts=self.clock(),
                        generation=generation,
                    )
                )

    def record_request(
        self, tx_id: str, market: str, operation: str, request: dict[str, Any]
    ) -> None:
        self._insert(tx_id, market, operation, "request", request, None)

    def record_response(
        self, tx_id: str, market: str, operation: str, response: dict[str, Any]
    ) -> None:
        self._insert(tx_id, market, operation, "response", None, response)

    def recorded(self, tx_id: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    market_txlog.c.phase, market_txlog.c.request, market_txlog.c.response
                ).where(market_txlog.c.tx_id == tx_id)
            ).all()
        request = next((r.request for r in rows if r.phase == "request"), None)
        response = next((r.response for r in rows if r.phase == "response"), None)
        return request, response

    def exchanges(
        self, operation: str, since: datetime
    ) -> list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]]:
        """Every ``(tx_id, request, response)`` of ``operation`` recorded since ``since``,
        in the order the requests were made."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    market_txlog.c.tx_id,
                    market_txlog.c.phase,
                    market_txlog.c.request,
                    market_txlog.c.response,
                )
                .where(market_txlog.c.operation == operation, market_txlog.c.ts >= since)
                .order_by(market_txlog.c.seq)
            ).all()
        out: dict[str, list[Any]] = {}
        for r in rows:
            entry = out.setdefault(r.tx_id, [None, None])
            if r.phase == "request":
                entry[0] = r.request
            else:
                entry[1] = r.response
        return [(tx, req, resp) for tx, (req, resp) in out.items()]
