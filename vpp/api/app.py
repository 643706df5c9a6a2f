"""The FastAPI application: health endpoints at the root, resources under ``/api/v1``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

from vpp.api.routes import health

if TYPE_CHECKING:
    from vpp.runtime import Engine

API_PREFIX = "/api/v1"


def create_app(engine: Engine) -> FastAPI:
    app = FastAPI(
        title="VPP engine",
        version="0.1.0",
        summary="Fleet twins, bid review, awards and dispatch of a battery virtual power plant",
    )
    app.state.engine = engine
    app.include_router(health.router)
    return app
