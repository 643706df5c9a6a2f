"""An operator's first minutes on a fresh `vpp run`, in the browser, end to end.

A fresh install (no database yet), two operator keys, the README's `vpp run` on its
embedded default (bus, SQLite, simulated fleet, the API and console). Alice edits a draft
bid in the console, Bob approves the edited version (four eyes) and submits it, the
simulated market awards it at its interval, dispatch commands the fleet, and the dispatch
page shows the interval with its delivery as the meter counted it; a peak-shaving plan is
listed. The screenshots go to ``$VPP_CONSOLE_SHOTS`` (``/tmp/vpp-console-shots``).

The engine runs at ×30 instead of the demo's ×10 so the walk takes about two minutes of
the suite, not five: the gates, the award and the interval come three times sooner, the
steps an operator takes are the same.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.test_console import CHROMIUM, SHOTS, browser  # noqa: F401  (the fixture)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium"),
]
SPEED = 30


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path)}
    keys = {}
    for name in ("alice", "bob"):
        made = subprocess.run(
            [sys.executable, "-m", "vpp", "keys", "create", "--role", "operator", "--name", name],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert made.returncode == 0, made.stderr
        keys[name] = made.stdout.strip().splitlines()[-1]
    port = free_port()
    log = (tmp_path / "engine.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vpp", "run", "--quiet", "--speed", str(SPEED), "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "engine.log").read_text()[-2000:]
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the engine did not get ready"
            time.sleep(0.3)
        yield base, keys
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()
    errors = [ln for ln in (tmp_path / "engine.log").read_text().splitlines() if '"ERROR"' in ln]
    assert errors == [], errors[:3]  # nothing in the walk, nor the stop, is an error


def _sign_in(browser: Any, base: str, key: str) -> Any:  # noqa: F811
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{base}/console/login?next=/console")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/console")
    return page


def _until(what: str, check: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"waited {timeout_s:g} s for {what}"
        time.sleep(1.0)


def _a_draft_to_review(base: str, key: str) -> dict[str, Any]:
    """A draft whose gate is 20 to 40 engine minutes away: time to edit, approve and
    submit, and an award soon after."""

    def pick() -> dict[str, Any] | None:
        r = httpx.get(
            f"{base}/api/v1/bids",
            params={"status": "draft", "limit": 200},
            headers={"X-API-Key": key},
            timeout=10,
        )
        fleet = httpx.get(f"{base}/api/v1/fleet", headers={"X-API-Key": key}, timeout=10)
        if fleet.status_code != 200:
            return None  # no aggregate yet
        now = datetime.fromisoformat(fleet.json()["fleet"]["as_of"])  # engine time
        for bid in sorted(r.json()["data"], key=lambda b: b["gate_closure"]):
            gate = datetime.fromisoformat(bid["gate_closure"])
            if timedelta(minutes=20) <= gate - now <= timedelta(minutes=40) and (
                bid["discharge"] or bid["charge"]
            ):
                return dict(bid)
        return None

    found: dict[str, Any] = _until("a draft bid to review", pick, 90)
    return found


def test_an_operators_first_minutes_on_a_fresh_vpp_run(
    demo: tuple[str, dict[str, str]],
    browser: Any,  # noqa: F811
) -> None:
    base, keys = demo
    SHOTS.mkdir(parents=True, exist_ok=True)
    bid = _a_draft_to_review(base, keys["alice"])
    side = "discharge" if bid["discharge"] else "charge"
    mw = float(bid[side][0]["quantity_mw"])
    # Alice edits the draft: half its first segment (the market's step is 0.001 MW)
    alice = _sign_in(browser, base, keys["alice"])
    alice.screenshot(path=str(SHOTS / "walk-now.png"), full_page=True)
    alice.goto(f"{base}/console/bids/{bid['bid_id']}")
    alice.wait_for_selector("#curve canvas")
    alice.get_by_label(f"{side} segment 1 MW").fill(f"{max(0.001, round(mw / 2, 3)):g}")
    alice.get_by_role("button", name="Save as version").click()
    alice.wait_for_selector(f"text=version {bid['version'] + 1}")
    alice.screenshot(path=str(SHOTS / "walk-edited.png"), full_page=True)
    # Bob approves the edited version (its editor may not) and submits it
    bob = _sign_in(browser, base, keys["bob"])
    bob.goto(f"{base}/console/bids/{bid['bid_id']}")
    bob.get_by_role("button", name="Approve version").click()
    assert "approved by bob" in bob.content()
    bob.get_by_role("button", name="Submit version").click()
    bob.wait_for_selector("text=accepted")

    # the simulated market awards it at its interval; the page shows the award
    def awarded() -> bool:
        bob.reload()
        return bool(bob.locator("tr.award").count())

    _until("the award", awarded, 240 * 10 / SPEED)
    bob.screenshot(path=str(SHOTS / "walk-awarded.png"), full_page=True)
    # dispatch commands the fleet; once the interval ends the meter's verdict is shown
    start = datetime.fromisoformat(bid["interval_start"]).astimezone(UTC)
    label = f"{start:%m-%d %H:%M}"

    def closed() -> str | None:
        bob.goto(f"{base}/console/dispatch")
        row = bob.locator("#dispatch-live tr", has_text=label).filter(has_text="award")
        row = row.filter(has_text=bid["group"])
        if not row.count():
            return None
        text: str = row.first.inner_text()
        return text if ("delivered" in text or "short" in text) else None

    verdict = _until("the interval's delivery", closed, 180 * 10 / SPEED)
    assert bid["group"] in verdict
    bob.wait_for_selector("#dispatch-plots canvas")
    bob.screenshot(path=str(SHOTS / "walk-dispatch.png"), full_page=True)

    # and a site's peak-shaving plan is listed
    def planned() -> bool:
        bob.goto(f"{base}/console/schedules")
        return bool(bob.locator("td a").count())

    _until("a peak-shaving plan", planned, 120 * 10 / SPEED)
    bob.screenshot(path=str(SHOTS / "walk-schedules.png"), full_page=True)
    # the planned site's page: its tariff, the month's peak so far and the plan
    site = bob.locator("td a").first.inner_text().strip()
    bob.goto(f"{base}/console/sites/{site}")
    card = bob.locator("section", has_text="Peak shaving").inner_text()
    assert "per kW of the month's peak" in card and "kW import" in card, card
    assert "kW without →" in card, card  # the plan, linked
    assert "hours 0–15, 21–23 on weekdays" in card  # the simulated C&I tariff's off-peak
    bob.wait_for_selector("#site-plot canvas")
    bob.screenshot(path=str(SHOTS / "walk-site.png"), full_page=True)
