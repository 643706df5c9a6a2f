"""The operator console in a real browser (Debian's Chromium, headless, driven by
Playwright; no browser download): sign-in, the review queue by gate with countdowns, one
bid's curve plot, approve and edit with errors shown, roles, fleet and dispatch pages, and
the server-side rules the pages cannot bypass."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from tests.api_support import Api, build_api, engine_for
from vpp.api.app import create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(os.environ.get("VPP_CONSOLE_SHOTS", "/tmp/vpp-console-shots"))

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Api, str]]:
    api = build_api(next(engine_for("sqlite", tmp_path, None)))  # type: ignore[arg-type]
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(api.services), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the console server did not start"
        time.sleep(0.05)
    try:
        yield api, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def _sign_in(browser: object, base: str, key: str) -> object:
    page = browser.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page.goto(f"{base}/console/bids")
    assert "/console/login?next=/console/bids" in page.url  # no session: sent to sign in
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/console/bids")
    return page


def test_an_operator_reviews_bids_in_the_browser(served: tuple[Api, str], browser: object) -> None:
    api, base = served
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = _sign_in(browser, base, api.keys["alice"])
    # the queue: bids grouped by gate, each gate with a countdown in engine time
    assert page.locator("section.gate").count() >= 1
    countdown = page.locator(".countdown").first
    page.wait_for_function("document.querySelector('.countdown').textContent.includes('closes in')")
    assert "closes in" in countdown.inner_text()
    assert api.keys["alice"] not in page.content()  # the key never reaches the page
    page.screenshot(path=str(SHOTS / "bids.png"), full_page=True)
    # bulk-approve two unedited drafts
    boxes = page.locator("input[name=bid]")
    assert boxes.count() >= 2
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.get_by_role("button", name="Approve selected (unedited drafts)").click()
    assert page.locator(".flash li", has_text="approved").count() == 2
    # one bid: the curve is drawn, the forecast outlook shown
    page.locator("td a").nth(2).click()
    page.wait_for_selector("#curve canvas")
    page.screenshot(path=str(SHOTS / "bid.png"), full_page=True)
    # an edit the market refuses is shown, nothing saved
    version = page.locator("input[name=version]").first.get_attribute("value")
    page.get_by_label("discharge segment 1 MW").fill("-3")
    page.get_by_role("button", name="Save as version").click()
    assert page.locator("div.error").count() == 1
    assert page.locator("input[name=version]").first.get_attribute("value") == version
    # the error sits next to its segment, and what was typed is still there
    assert "Segment 1: quantity_mw" in page.locator("#err-discharge-0").inner_text()
    assert page.get_by_label("discharge segment 1 MW").input_value() == "-3"
    page.screenshot(path=str(SHOTS / "bid_error.png"), full_page=True)
    # a non-monotone curve is refused by the market's rules, the error next to its segment
    page.get_by_label("discharge segment 1 MW").fill("0.2")
    page.get_by_label("discharge segment 2 price").fill("30")
    page.get_by_label("discharge segment 2 MW").fill("0.1")
    page.get_by_role("button", name="Save as version").click()
    assert "non-decreasing" in page.locator("#err-discharge-1").inner_text()
    assert page.locator("input[name=version]").first.get_attribute("value") == version
    page.screenshot(path=str(SHOTS / "bid_monotone_error.png"), full_page=True)
    # a valid edit makes a new version; approving it records who
    page.get_by_label("discharge segment 2 price").fill("")
    page.get_by_label("discharge segment 2 MW").fill("")
    page.get_by_role("button", name="Save as version").click()
    page.wait_for_selector("text=version " + str(int(version or "0") + 1))
    bid_url = page.url
    page.get_by_role("button", name="Approve version").click()
    assert "four-eyes" in page.locator("div.error").inner_text()  # its editor may not
    # a stale version (another tab edited meanwhile) is a conflict, shown, never lost
    page.locator("input[name=version]").first.evaluate("el => el.value = '1'")
    page.get_by_role("button", name="Reject").click()
    assert "Not saved" in page.locator("div.error").inner_text()
    # another operator approves the edited version; the page says who
    bob = _sign_in(browser, base, api.keys["bob"])
    bob.goto(bid_url)  # type: ignore[attr-defined]
    bob.get_by_role("button", name="Approve version").click()  # type: ignore[attr-defined]
    assert "approved by bob" in bob.content()  # type: ignore[attr-defined]
    # the versions side by side, the edited segment marked
    assert bob.locator(".version tr.changed").count() >= 1  # type: ignore[attr-defined]
    # submit it; the market accepts, and the award the engine collects shows on the page
    bob.get_by_role("button", name="Submit version").click()  # type: ignore[attr-defined]
    bob.wait_for_selector("text=accepted")  # type: ignore[attr-defined]
    _collect_awards(api)
    bob.reload()  # type: ignore[attr-defined]
    award = bob.locator("tr.award")  # type: ignore[attr-defined]
    assert award.count() == 1 and "0.200" in award.inner_text()
    bob.screenshot(path=str(SHOTS / "bid_awarded.png"), full_page=True)  # type: ignore[attr-defined]
    # fleet and dispatch pages render, each group's recorded power and energy plotted
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))  # type: ignore[attr-defined]
    _record_aggregates(api)
    page.goto(f"{base}/console/fleet")
    page.wait_for_selector("#fleet-plots canvas")
    captions = page.locator("#fleet-plots figcaption").all_inner_texts()
    assert captions == ["north", "south"]
    axis = page.locator("#fleet-plots .u-axis").first.inner_text()
    assert "AM" not in axis and "PM" not in axis  # 24-hour UTC, not 12-hour am/pm
    assert "--" not in page.locator("#fleet-plots .u-legend").first.inner_text()
    page.locator("td a").first.click()
    assert page.locator("h2", has_text="Sites of").count() == 1
    page.screenshot(path=str(SHOTS / "fleet.png"), full_page=True)
    # one site: its recent readings plotted, its state changes and commands listed
    page.locator("td a", has_text="s0").click()
    page.wait_for_selector("#site-plot canvas")
    assert page.locator("h1", has_text="Site s0").count() == 1
    page.screenshot(path=str(SHOTS / "site.png"), full_page=True)
    page.goto(f"{base}/console/dispatch")
    assert page.locator("h1", has_text="Dispatch").count() == 1
    assert page.locator("h2", has_text="Commands").count() == 1
    # the award became a dispatch row for its group, plotted against what was delivered
    awarded = page.locator("#dispatch-live tr", has_text="award")
    assert awarded.count() == 1 and "north" in awarded.inner_text()
    page.wait_for_selector("#dispatch-plots canvas")
    assert page.locator("#dispatch-plots figcaption").all_inner_texts() == ["north"]
    # the table leads with what runs now, then what ended, then what is ahead
    sections = page.locator("#dispatch-live tr.section").all_inner_texts()
    assert sections[0].startswith("Running now")
    # a manual target beyond the group's capability is refused and says why; a valid one
    # is scheduled and can be cancelled
    page.get_by_label("Group or site").fill("south")
    page.get_by_label("Target kW (+ discharge)").fill("99999")
    page.get_by_role("button", name="Schedule target").click()
    assert "Not scheduled" in page.locator(".flash").inner_text()
    assert page.get_by_label("Target kW (+ discharge)").input_value() == "99999"  # kept
    page.get_by_label("Target kW (+ discharge)").fill("100")
    page.get_by_role("button", name="Schedule target").click()
    assert "Scheduled" in page.locator(".flash").inner_text()
    manual = page.locator("#dispatch-live tr", has_text="manual")
    assert manual.count() == 1 and "100.0" in manual.inner_text()
    page.screenshot(path=str(SHOTS / "dispatch.png"), full_page=True)
    manual.get_by_role("button", name="Cancel").click()
    assert "Cancelled" in page.locator(".flash").inner_text()
    assert api.services.dispatch is not None
    assert not [d for d in api.services.dispatch.deliveries.values() if d.target.source == "manual"]
    # a stored peak-shaving plan is listed and plotted
    _store_plan(api)
    page.goto(f"{base}/console/schedules")
    page.locator("td a", has_text="s0").click()
    page.wait_for_selector("#plan canvas")
    assert "120.0 kW without → 95.0 kW with the plan" in page.content()
    page.screenshot(path=str(SHOTS / "schedule.png"), full_page=True)
    assert errors == []  # no script failed on any page


def _record_aggregates(api: Api) -> None:
    """What the history recorder keeps once a minute: each group's aggregate, an hour."""
    from vpp.store.tables import group_aggregates

    now = api.services.clock()
    rows = [
        {
            "ts": now - timedelta(minutes=m),
            "group_id": g,
            "sites": 2,
            "counts": {},
            "e_discharge_kwh": 20.0 + m / 10,
            "e_discharge_kwh_lower": 18.0,
            "e_discharge_kwh_upper": 22.0 + m / 10,
            "e_charge_kwh": 10.0,
            "e_charge_kwh_lower": 9.0,
            "e_charge_kwh_upper": 11.0,
            "p_discharge_p50_kw": 9.0,
            "p_discharge_p90_kw": 8.0,
            "p_charge_p50_kw": 9.0,
            "p_charge_p90_kw": 8.0,
            "p_net_kw": 3.0 if m % 20 < 10 else -3.0,
            "committed_sites": 0,
            "free_p_discharge_p90_kw": 8.0,
            "free_p_charge_p90_kw": 8.0,
        }
        for m in range(60)
        for g in ("north", "south")
    ]
    with api.engine.begin() as conn:
        conn.execute(group_aggregates.insert(), rows)


def _collect_awards(api: Api) -> None:
    """What the engine's award collector does once an interval starts (Bidder.collect_awards
    with the dispatch service as its listener): read the market's awards, store them,
    dispatch them."""
    from tests.api_support import FIRST

    assert api.services.market is not None and api.services.dispatch is not None
    for k in range(3):
        start = FIRST + timedelta(minutes=5 * k)
        awards = api.services.market.awards(f"awards-{k}", start, start + timedelta(minutes=5))
        api.services.bids.record_awards(awards)
        if awards:
            api.services.dispatch.on_awards(awards)


def _store_plan(api: Api) -> None:
    from datetime import UTC, datetime

    from vpp.store import peak_schedules
    from vpp.store.keys import Principal

    load = [80.0] * 8 + [120.0] * 4 + [80.0] * 12
    grid = [85.0] * 8 + [95.0] * 4 + [85.0] * 12
    peak_schedules.insert(
        api.engine,
        {
            "schedule_id": "plan-1",
            "site_id": "s0",
            "created_at": datetime(2026, 11, 21, 12, tzinfo=UTC),
            "created_by": "alice",
            "interval_start": datetime(2026, 11, 21, 13, tzinfo=UTC),
            "interval_s": 3600,
            "intervals": 24,
            "currency": "USD",
            "demand_charge_per_kw": 12.0,
            "peak_so_far_kw": 90.0,
            "peak_without_kw": 120.0,
            "peak_kw": 95.0,
            "cost_without": 500.0,
            "cost": 200.0,
            "solve_s": 0.01,
            "net_load_kw": load,
            "p_kw": [n - g for n, g in zip(load, grid, strict=True)],
            "grid_kw": grid,
            "import_price_per_kwh": [0.1] * 24,
            "soc": [0.5 - 0.01 * k for k in range(24)],
        },
        Principal("k", "alice", "operator"),
    )


def test_a_viewer_sees_no_edit_controls_and_the_server_refuses_anyway(
    served: tuple[Api, str], browser: object
) -> None:
    api, base = served
    page = _sign_in(browser, base, api.keys["viewer"])
    assert page.locator("input[name=bid]").count() == 0
    assert page.get_by_role("button", name="Approve selected (unedited drafts)").count() == 0
    page.locator("td a").first.click()
    assert page.get_by_role("button", name="Reject").count() == 0
    assert "Viewers cannot edit" in page.content()
    # posting anyway (a crafted form with the session's token) is refused by the server
    bid_url = page.url
    status = page.evaluate(
        """async (url) => {
            const r = await fetch(url + '/review', {method: 'POST',
              body: new URLSearchParams({action: 'approve', version: '1', csrf: 'x'})});
            return r.status; }""",
        bid_url,
    )
    assert status == 403
    # signing out ends the session
    page.get_by_role("button", name="Sign out").click()
    page.goto(f"{base}/console/bids")
    assert "/console/login" in page.url  # signed out: sent to sign in again


def _login_token(client: Any) -> str:
    """The sign-in form's CSRF token (its cookie is kept by the client)."""
    page = client.get("/console/login").text
    return page.split('name="csrf" value="')[1].split('"')[0]


def test_cookies_are_secure_over_https(served: tuple[Api, str]) -> None:
    from fastapi.testclient import TestClient

    from vpp.api.app import create_app

    api, _ = served
    c = TestClient(create_app(api.services), base_url="https://testserver")
    r = c.post(
        "/console/login",
        data={"api_key": api.keys["alice"], "csrf": _login_token(c)},
        follow_redirects=False,
    )
    assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]
    always = TestClient(create_app(api.services, secure_cookies="always"))
    assert "Secure" in always.get("/console/login").headers["set-cookie"]


def test_a_bad_key_is_refused_and_forms_need_the_session_token(served: tuple[Api, str]) -> None:
    api, _ = served
    c = api.client
    # a sign-in without the form's token (a forged one from another page) is refused
    r = c.post("/console/login", data={"api_key": api.keys["alice"]}, follow_redirects=False)
    assert r.status_code == 403 and "did not come from this console" in r.text
    r = c.post("/console/login", data={"api_key": "nope", "csrf": _login_token(c)})
    assert r.status_code == 401 and "not valid" in r.text
    r = c.post(
        "/console/login",
        data={"api_key": api.keys["alice"], "csrf": _login_token(c)},
        follow_redirects=False,
    )
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and api.keys["alice"] not in cookie
    assert "Secure" not in cookie  # plain HTTP here: auto leaves it off
    page = c.get("/console/bids")
    assert page.status_code == 200
    bid = page.text.split('href="/console/bids/')[1].split('"')[0]
    r = c.post(f"/console/bids/{bid}/review", data={"action": "approve", "version": "1"})
    assert r.status_code == 403 and "session token" in r.text  # no CSRF token
    r = c.post(
        f"/console/bids/{bid}/review",
        data={"action": "approve", "version": "1", "csrf": "x", "comment": "a\x00b"},
    )
    assert r.status_code == 422
    assert c.get("/console/static/htmx.min.js").status_code == 200  # shipped, no CDN


def test_keyboard_only_sign_in_and_approve(served: tuple[Api, str], browser: object) -> None:
    """Every step by keyboard (Tab, typing, Enter), with the focused element named by its
    label: the page works without a mouse."""
    api, base = served
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(f"{base}/console/login")

    def tab_to(predicate: str, limit: int = 80) -> None:
        check = f"(() => {{ const el = document.activeElement; return !!el && ({predicate}); }})()"
        for _ in range(limit):
            if page.evaluate(check):  # already there (an autofocus field)
                return
            page.keyboard.press("Tab")
        raise AssertionError(f"no focusable element matched {predicate}")

    tab_to("el.id === 'api_key'")
    page.keyboard.type(api.keys["bob"])
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/console")  # the home page: what needs the operator now
    tab_to("(el.getAttribute('href') || '').startsWith('/console/bids/')")
    page.keyboard.press("Enter")
    page.wait_for_selector("#curve canvas")
    tab_to("el.id === 'comment'")
    page.keyboard.type("checked by keyboard")
    tab_to("el.textContent.startsWith('Approve version')")
    page.keyboard.press("Enter")
    page.wait_for_selector("text=approved by bob")
    assert "checked by keyboard" in page.content()


def test_the_home_page_leads_with_the_next_gates_and_alerts(
    served: tuple[Api, str], browser: object
) -> None:
    """Signed in, the operator lands on what needs them: the next gates soonest first with
    what still awaits review (linked), a countdown coloured by urgency, and the alerts."""
    api, base = served
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page.goto(f"{base}/console")
    page.get_by_label("API key").fill(api.keys["alice"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/console")
    gates = page.locator("section[aria-label='next gates'] tbody tr")
    assert gates.count() >= 1
    first = gates.first.inner_text()
    assert "draft" in first  # the shipped bids are drafts awaiting review
    page.wait_for_function("document.querySelector('.countdown').textContent.includes('closes')")
    # 45 minutes ahead: neither amber nor red
    assert "urgent" not in (page.locator(".countdown").first.get_attribute("class") or "")
    assert page.locator("section[aria-label='alerts']").count() == 1
    page.screenshot(path=str(SHOTS / "now.png"), full_page=True)
    gates.first.locator("a").click()  # straight to the first draft of that gate
    page.wait_for_url(f"{base}/console/bids/*")
