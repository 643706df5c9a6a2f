"""API keys and the audit log (admin only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query

from vpp.api.deps import Admin
from vpp.api.models import AuditPublic, KeyCreate, KeyCreated, KeyPublic, Page
from vpp.api.responses import AUTH, NOT_FOUND
from vpp.store import audit

router = APIRouter(tags=["admin"])


@router.get("/keys", response_model=Page[KeyPublic], responses=AUTH, summary="The API keys")
def list_keys(
    caller: Admin,
    skip: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    keys = caller.services.keys.list_keys()
    return {"data": keys[skip : skip + limit], "count": len(keys)}


@router.post(
    "/keys",
    response_model=KeyCreated,
    status_code=201,
    responses=AUTH,
    summary="Create a key (shown once)",
)
def create_key(caller: Admin, body: KeyCreate) -> Any:
    principal, plaintext = caller.services.keys.create(body.name, body.role)
    with caller.services.db.begin() as conn:
        audit.record(
            conn,
            caller.principal,
            "create",
            "api_key",
            principal.key_id,
            None,
            {"name": principal.name, "role": principal.role},
        )
    return {
        "key_id": principal.key_id,
        "name": principal.name,
        "role": principal.role,
        "key": plaintext,
    }


@router.delete(
    "/keys/{key_id}",
    status_code=204,
    responses={**AUTH, **NOT_FOUND},
    summary="Revoke a key",
)
def revoke_key(caller: Admin, key_id: Annotated[str, Path(min_length=1, max_length=32)]) -> None:
    if not caller.services.keys.revoke(key_id):
        raise HTTPException(404, detail=f"no active key {key_id}")
    with caller.services.db.begin() as conn:
        audit.record(
            conn, caller.principal, "revoke", "api_key", key_id, {"active": True}, {"active": False}
        )


@router.get(
    "/audit",
    response_model=Page[AuditPublic],
    responses=AUTH,
    summary="The audit log, newest first",
)
def audit_log(
    caller: Admin,
    resource_type: Annotated[str | None, Query(max_length=32)] = None,
    resource_id: Annotated[str | None, Query(max_length=200)] = None,
    skip: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    rows, count = audit.history(caller.services.db, resource_type, resource_id, limit, skip)
    return {"data": rows, "count": count}
