"""Console pages (see :mod:`vpp.console` for how and why they are built this way)."""

from __future__ import annotations

import hmac
import secrets
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from vpp.console.sessions import COOKIE, Session, SessionStore
from vpp.services import RefusedError, Services
from vpp.store.keys import Principal

T = TypeVar("T")
HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/console", include_in_schema=False)


@dataclass(frozen=True, slots=True)
class User:
    principal: Principal
    session: Session
    services: Services

    @property
    def operator(self) -> bool:
        return self.principal.can("operator")


class LoginRequiredError(Exception):
    """No valid session: the browser is sent to the sign-in page."""


async def current_user(request: Request) -> User:
    store: SessionStore = request.app.state.console_sessions
    session = store.get(request.cookies.get(COOKIE))
    if session is None:
        raise LoginRequiredError
    services: Services = request.app.state.services
    principal = await services.keys.verify_async(session.key)  # revoked keys stop here
    if principal is None:
        store.drop(request.cookies.get(COOKIE))
        raise LoginRequiredError
    return User(principal, session, services)


def current_user_sync(request: Request) -> User:
    """:func:`current_user` for a page that runs in a worker thread (every GET page: its
    queries and its rendering never hold the engine's event loop)."""
    store: SessionStore = request.app.state.console_sessions
    session = store.get(request.cookies.get(COOKIE))
    if session is None:
        raise LoginRequiredError
    services: Services = request.app.state.services
    principal = services.keys.verify(session.key)
    if principal is None:
        store.drop(request.cookies.get(COOKIE))
        raise LoginRequiredError
    return User(principal, session, services)


async def off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a page's blocking part (queries, rendering) in a worker thread: an action's
    handler stays async only for what must be awaited (the form, the dispatch service)."""
    return await run_in_threadpool(fn, *args, **kwargs)


def render(
    request: Request, name: str, user: User | None, status: int = 200, **ctx: Any
) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        name,
        {"user": user, "now": engine_now(request), **ctx},
        status_code=status,
    )


def engine_now(request: Request) -> datetime:
    services: Services = request.app.state.services
    return services.clock()


async def posted_form(request: Request, user: User | None) -> dict[str, list[str]]:
    """The posted form as lists; a bad CSRF token or a NUL anywhere is refused."""
    form = await request.form()
    data: dict[str, list[str]] = defaultdict(list)
    for k, v in form.multi_items():
        if not isinstance(v, str) or "\x00" in v or "\x00" in k:
            raise RefusedError(422, "a form value holds a NUL character or a file")
        data[k].append(v)
    if user is not None and not hmac.compare_digest(
        (data.get("csrf") or [""])[0], user.session.csrf
    ):
        raise RefusedError(403, "the form's session token is missing or stale: reload the page")
    return data


async def operator_form(request: Request, user: User, refusal: str) -> dict[str, list[str]]:
    """The posted form of an operator's action; a viewer gets ``refusal`` (403)."""
    form = await posted_form(request, user)
    if not user.operator:
        raise RefusedError(403, refusal)
    return form


# -- sign-in ------------------------------------------------------------------------------


LOGIN_COOKIE = "vpp_login"  # the sign-in form's CSRF token (double-submit: cookie = field)


def _next(path: str | None) -> str:
    """Where to go after signing in: a console page the operator asked for, else the home
    page (never another site: an open redirect would make the sign-in a phishing relay)."""
    if path and path.startswith("/console/") and "//" not in path and "\\" not in path:
        return path
    return "/console"


def secure(request: Request) -> bool:
    """Whether the console's cookies carry ``Secure`` (``api.secure_cookies``)."""
    mode = getattr(request.app.state, "secure_cookies", "auto")
    return mode == "always" or (mode == "auto" and request.url.scheme == "https")


def _login_form(request: Request, status: int = 200, error: str | None = None) -> Response:
    """The sign-in page with a fresh CSRF token in its form and in a short-lived cookie: a
    page on another site can post a key to this form but cannot read or set the cookie
    (SameSite=Strict), so a forged sign-in (login CSRF) is refused."""
    token = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        None,
        status,
        error=error,
        login_csrf=token,
        next=_next(request.query_params.get("next")),
    )
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=3600,
        httponly=True,
        samesite="strict",
        path="/console/login",
        secure=secure(request),
    )
    return response


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> Response:
    return _login_form(request)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    try:
        form = await posted_form(request, None)
    except RefusedError as exc:
        return _login_form(request, exc.status, str(exc))
    cookie = request.cookies.get(LOGIN_COOKIE) or ""
    field = (form.get("csrf") or [""])[0]
    if not cookie or not hmac.compare_digest(cookie, field):
        return _login_form(
            request, 403, "The sign-in form expired or did not come from this console: try again."
        )
    key = (form.get("api_key") or [""])[0].strip()
    services: Services = request.app.state.services
    principal = await services.keys.verify_async(key or None)
    if principal is None:
        return _login_form(request, 401, "That API key is not valid.")
    sid, _ = request.app.state.console_sessions.create(key)
    response = RedirectResponse(_next((form.get("next") or [""])[0]), status_code=303)
    response.set_cookie(
        COOKIE, sid, httponly=True, samesite="strict", path="/console", secure=secure(request)
    )
    response.delete_cookie(LOGIN_COOKIE, path="/console/login")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    request.app.state.console_sessions.drop(request.cookies.get(COOKIE))
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response
