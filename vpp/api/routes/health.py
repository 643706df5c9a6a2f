"""Liveness, readiness and Prometheus metrics (outside /api/v1, no key needed)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from vpp.services import Services

router = APIRouter(tags=["health"])


@router.get(
    "/livez",
    summary="The process is up and its control loop runs",
    responses={503: {"description": "the control loop has not run for api.livez_max_lag_s"}},
)
async def livez(request: Request) -> JSONResponse:
    """Answered from the API's own loop; alive means the control loop beat within
    ``api.livez_max_lag_s`` (vpp.heartbeat), so a wedged engine is restarted however fast
    this answers."""
    services: Services = request.app.state.services
    beat = services.heartbeat
    if beat is not None and (age := beat.age_s()) > services.livez_max_lag_s:
        return JSONResponse(
            {"status": "stalled", "control_loop_silent_s": round(age, 1)}, status_code=503
        )
    return JSONResponse({"status": "ok"})


@router.get("/readyz", summary="The bus and the database are reachable")
async def readyz(request: Request) -> JSONResponse:
    services: Services = request.app.state.services
    checks = await services.on_control(services.readiness())  # the bus lives there
    ok = all(checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
