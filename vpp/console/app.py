"""The console on the API's app: its three page sets, its vendored assets, its sessions."""

from __future__ import annotations

import urllib.parse

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from vpp.console import bid_pages, now, operations, routes
from vpp.console.routes import LoginRequiredError
from vpp.console.sessions import SessionStore
from vpp.services import Services


def install(app: FastAPI, services: Services) -> None:
    """Serve the console from ``app``: its pages, its vendored assets, its sessions."""
    app.state.console_sessions = SessionStore()
    app.mount(
        "/console/static", StaticFiles(directory=routes.HERE / "static"), name="console-static"
    )
    for r in (routes.router, now.router, bid_pages.router, operations.router):
        app.include_router(r)

    @app.exception_handler(LoginRequiredError)
    async def _login(request: Request, exc: LoginRequiredError) -> Response:
        # back where the operator was going once signed in (a console path only)
        target = request.url.path
        query = f"?next={urllib.parse.quote(target)}" if target.startswith("/console/") else ""
        return RedirectResponse(f"/console/login{query}", status_code=303)
