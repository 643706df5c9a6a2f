"""API dependencies as typed aliases: a route's signature says what it needs.

``Viewer``, ``Operator`` and ``Admin`` each resolve to a :class:`Caller` — the verified
principal and the services — in one async dependency (the key lookup is a cached hash
compare): FastAPI runs plain ``def`` dependencies in a thread pool, which on a hot read
path costs more than the request itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from vpp.services import Services
from vpp.store.keys import Principal, Role

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key")


@dataclass(frozen=True, slots=True)
class Caller:
    principal: Principal
    services: Services


def require(role: Role) -> Any:
    async def caller(
        request: Request, key: Annotated[str | None, Security(api_key_header)]
    ) -> Caller:
        services: Services = request.app.state.services
        principal = await services.keys.verify_async(key)
        if principal is None:
            raise HTTPException(
                status_code=401,
                detail="missing or invalid API key (X-API-Key)",
                headers={"WWW-Authenticate": "APIKey"},
            )
        if not principal.can(role):
            raise HTTPException(status_code=403, detail=f"this needs the {role} role")
        return Caller(principal, services)

    return Depends(caller)


Viewer = Annotated[Caller, require("viewer")]
Operator = Annotated[Caller, require("operator")]
Admin = Annotated[Caller, require("admin")]
