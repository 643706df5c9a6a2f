"""`vpp run` and friends as a user runs them: real processes, real sockets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from vpp.store.db import head_revision


def vpp(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vpp", *args],
        cwd=cwd,
        env={**os.environ, "XDG_DATA_HOME": str(cwd), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_run_serves_health_and_stops_after_duration(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vpp", "run", "--duration", "6", "--port", str(port)],
        cwd=tmp_path,
        env={**os.environ, "XDG_DATA_HOME": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        ready = None
        while time.monotonic() < deadline and ready is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
            except httpx.TransportError:
                time.sleep(0.2)
        assert ready is not None and ready.status_code == 200
        assert ready.json()["checks"] == {"bus": True, "database": True}
        assert httpx.get(f"http://127.0.0.1:{port}/livez").json() == {"status": "ok"}
        assert (
            "vpp_bus_published_messages_total" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
        )
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopped cleanly" in out
    # the default database lives in the user's data folder, not the working directory
    assert (tmp_path / "vpp-engine" / "vpp.db").exists()


def test_sigint_stops_cleanly(tmp_path: Path) -> None:
    import signal

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vpp", "run", "--port", str(port), "--quiet"],
        cwd=tmp_path,
        env={**os.environ, "XDG_DATA_HOME": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/livez", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopped cleanly" in out


def test_bad_setting_exits_2_naming_it(tmp_path: Path) -> None:
    res = vpp("run", "--duration", "1", cwd=tmp_path, env={"VPP_API__PORT": "nope"})
    assert res.returncode == 2
    assert "api.port (VPP_API__PORT)" in res.stderr


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    res = vpp(
        "config",
        "show",
        "--json",
        cwd=tmp_path,
        env={"VPP_DATABASE__URL": "postgresql+psycopg://u:topsecret@h/db"},
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["database"]["url"] == "postgresql+psycopg://u:***@h/db"
    assert "topsecret" not in res.stdout


def test_serve_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    res = vpp("serve", "--duration", "1", cwd=tmp_path)
    assert res.returncode == 1
    assert "vpp db upgrade" in res.stderr
    # An older schema (the first revision only) is refused too, naming both revisions.
    res = vpp("db", "upgrade", "0001", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    res = vpp("serve", "--duration", "1", cwd=tmp_path)
    assert res.returncode == 1
    assert f"revision 0001, this engine needs {head_revision()}" in res.stderr
    res = vpp("db", "upgrade", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"0001 -> {head_revision()}" in res.stdout


@pytest.mark.slow
def test_operators_review_bids_from_the_terminal(tmp_path: Path) -> None:
    """`vpp bids`, `vpp awards` and `vpp audit` against a running engine, with the same keys
    and roles as the API."""
    assert vpp("db", "upgrade", cwd=tmp_path).returncode == 0
    keys = {}
    for name, role in (("alice", "operator"), ("root", "admin"), ("val", "viewer")):
        res = vpp("keys", "create", "--role", role, "--name", name, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        keys[name] = res.stdout.strip().splitlines()[-1]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vpp", "run", "--port", str(port), "--quiet", "--duration", "90"],
        cwd=tmp_path,
        env={**os.environ, "XDG_DATA_HOME": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        page: dict[str, object] = {"count": 0}
        while time.monotonic() < deadline:
            try:
                page = httpx.get(
                    f"{url}/api/v1/bids", headers={"X-API-Key": keys["val"]}, timeout=2
                ).json()
                if page["count"]:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        assert page["count"], "no bids were made"
        listed = vpp("bids", "list", "--url", url, "--key", keys["val"], cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert "bids" in listed.stdout and "north-energy_rt-" in listed.stdout
        latest = max(page["data"], key=lambda b: b["gate_closure"])  # type: ignore[index]
        bid = latest["bid_id"]
        shown = vpp("bids", "show", bid, "--url", url, "--key", keys["val"], cwd=tmp_path)
        assert shown.returncode == 0 and bid in shown.stdout and "reviews" in shown.stdout
        # a viewer may not reject; an operator may, with a comment that lands in the review
        denied = vpp("bids", "reject", bid, "--url", url, "--key", keys["val"], cwd=tmp_path)
        assert denied.returncode == 2 and "403" in denied.stderr
        rejected = vpp(
            "bids",
            "reject",
            bid,
            "--comment",
            "too cheap",
            "--url",
            url,
            "--key",
            keys["alice"],
            cwd=tmp_path,
        )
        assert rejected.returncode == 0, rejected.stderr
        assert f"{bid} v1: rejected" in rejected.stdout
        audit = vpp(
            "audit", "--resource-id", bid, "--url", url, "--key", keys["root"], cwd=tmp_path
        )
        assert audit.returncode == 0 and "reject" in audit.stdout and "alice" in audit.stdout
        awards = vpp("awards", "--url", url, "--key", keys["val"], cwd=tmp_path)
        assert awards.returncode == 0 and "awards" in awards.stdout
        bad = vpp("bids", "list", "--url", url, "--key", "vpp_nope_nope", cwd=tmp_path)
        assert bad.returncode == 2 and "401" in bad.stderr
    finally:
        proc.kill()
        proc.communicate()
    gone = vpp("bids", "list", "--url", url, "--key", keys["val"], cwd=tmp_path)
    assert gone.returncode == 2 and "not reachable" in gone.stderr
