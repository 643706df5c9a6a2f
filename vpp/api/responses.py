"""Documented error responses shared by the routers (so the OpenAPI schema lists them)."""

from __future__ import annotations

from typing import Any

from vpp.api.models import Conflict, Problem

Responses = dict[int | str, dict[str, Any]]

AUTH: Responses = {
    401: {"model": Problem, "description": "missing or invalid API key"},
    403: {"model": Problem, "description": "the key's role may not do this"},
}
NOT_FOUND: Responses = {404: {"model": Problem, "description": "no such resource"}}
UNAVAILABLE: Responses = {503: {"model": Problem, "description": "not available yet"}}
CONFLICT: Responses = {
    409: {"model": Conflict, "description": "stale version, gate closed or step not allowed"}
}
