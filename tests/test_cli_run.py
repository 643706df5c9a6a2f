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
    # a free API port unless the test picks one: the README's own demo may hold 8000
    # (4 tests failed on "port in use" while a `vpp run` was open, whatever they asserted)
    base = {**os.environ, "XDG_DATA_HOME": str(cwd), "VPP_API__PORT": str(free_port())}
    return subprocess.run(
        [sys.executable, "-m", "vpp", *args],
        cwd=cwd,
        env={**base, **(env or {})},
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


def _one_line_error(res: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    text = " ".join(res.stderr.split())
    for needle in needles:
        assert needle in text, (needle, res.stderr)


@pytest.mark.parametrize(
    ("args", "env", "needles"),
    [
        (
            ["serve", "--duration", "1"],
            {"VPP_DATABASE__URL": "postgresql+psycopg://postgres@127.0.0.1:1/test"},
            ["database.url", "cannot connect"],
        ),
        (
            ["db", "upgrade"],
            {"VPP_DATABASE__URL": "postgresql+psycopg://postgres@127.0.0.1:1/test"},
            ["database.url", "cannot connect"],
        ),
        (
            ["serve", "--duration", "1"],
            {"VPP_BUS__KIND": "kafka", "VPP_BUS__KAFKA__BOOTSTRAP_SERVERS": "no-such.invalid:9092"},
            ["bus.kafka.bootstrap_servers", "unknown host 'no-such.invalid'"],
        ),
        (
            ["simulate", "--duration", "1"],
            {"VPP_BUS__KIND": "kafka", "VPP_BUS__KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"},
            ["bus.kafka.bootstrap_servers", "unreachable"],
        ),
        (
            ["serve", "--duration", "1"],
            {"VPP_INGEST__REGISTRY_FILE": "/no/such/registry.yaml"},
            ["registry_file", "/no/such/registry.yaml"],
        ),
        (
            ["serve", "--duration", "1"],
            {
                "VPP_BUS__KIND": "kafka",
                "VPP_BUS__KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "VPP_BUS__KAFKA__SASL_MECHANISM": "PLAIN",
            },
            ["sasl_plain_username"],
        ),
        (
            ["serve", "--duration", "1"],
            {"VPP_BUS__KIND": "kafka", "VPP_BUS__KAFKA__SSL_CAFILE": "/no/such/ca.pem"},
            ["ssl_cafile", "/no/such/ca.pem"],
        ),
        (
            ["run", "--duration", "1", "--quiet"],
            {"VPP_API__HOST": "203.0.113.7"},  # TEST-NET-3: not an address of this machine
            ["api.host", "cannot listen"],
        ),
    ],
    ids=[
        "postgres-unreachable",
        "db-upgrade-unreachable",
        "kafka-unknown-host",
        "kafka-unreachable",
        "registry-file-missing",
        "sasl-without-username",
        "ca-file-missing",
        "unbindable-host",
    ],
)
def test_a_failure_to_start_is_one_line_naming_the_setting(
    tmp_path: Path, args: list[str], env: dict[str, str], needles: list[str]
) -> None:
    res = vpp(*args, cwd=tmp_path, env=env)
    _one_line_error(res, *needles)
    assert not (tmp_path / "vpp-engine" / "vpp.db").exists() or args[0] != "run"


def test_a_fresh_install_creates_its_database_only_when_a_command_writes(tmp_path: Path) -> None:
    """`vpp keys create` on a fresh install said "run `vpp db upgrade` first" and left an
    empty vpp.db; commands that only read refuse without creating anything."""
    db_file = tmp_path / "vpp-engine" / "vpp.db"
    for args in (
        ("keys", "list"),
        ("keys", "revoke", "0123456789ab"),
        ("export", "--from", "2026-11-20", "--to", "2026-11-21", "--out", "x"),
    ):
        res = vpp(*args, cwd=tmp_path)
        assert res.returncode == 1, res.stderr
        assert f"no database at {db_file} yet" in " ".join(res.stderr.split())
        assert not db_file.parent.exists() and not (tmp_path / "x").exists()
    res = vpp("db", "current", cwd=tmp_path)
    assert res.returncode == 0 and "none at" in res.stdout and not db_file.exists()
    res = vpp("keys", "create", "--role", "operator", "--name", "alice", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "created the database" in res.stderr
    key = res.stdout.strip().splitlines()[-1]
    assert key.startswith("vpp_")
    listed = vpp("keys", "list", cwd=tmp_path)
    assert listed.returncode == 0 and "alice" in listed.stdout
    assert f"engine needs: {head_revision()}" in vpp("db", "current", cwd=tmp_path).stdout


def test_serve_on_the_embedded_bus_is_refused_naming_the_setting(tmp_path: Path) -> None:
    """`vpp serve` has no simulated fleet and no other process can reach an in-process
    bus: it used to start and wait for sites that could never report."""
    assert vpp("db", "upgrade", cwd=tmp_path).returncode == 0
    res = vpp("serve", "--duration", "1", cwd=tmp_path)
    _one_line_error(res, "bus.kind is embedded", "VPP_BUS__KIND=kafka", "vpp run")


@pytest.mark.postgres
def test_a_missing_postgres_database_is_named(tmp_path: Path) -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:5432/vpp_no_such_database"
    res = vpp("serve", "--duration", "1", cwd=tmp_path, env={"VPP_DATABASE__URL": url})
    _one_line_error(res, "database.url", "does not exist")


def test_the_api_port_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = vpp("run", "--duration", "1", "--quiet", "--port", str(port), cwd=tmp_path)
    _one_line_error(res, "api.port", f"{port}: already in use")
    assert not (tmp_path / "vpp-engine" / "vpp.db").exists()  # nothing started


@pytest.mark.parametrize("case", ["empty", "folder", "end-before-start"])
def test_optimize_refuses_bad_price_files_and_periods(tmp_path: Path, case: str) -> None:
    import yaml

    root = Path(__file__).resolve().parents[1] / "scenarios"
    data = yaml.safe_load((root / "de-2019-arbitrage.yaml").read_text())
    if case == "empty":
        (tmp_path / "p.csv").write_text("")
        data["prices"]["file"] = str(tmp_path / "p.csv")
        needles = ["the file is empty"]
    elif case == "folder":
        (tmp_path / "p.csv").mkdir()
        data["prices"]["file"] = str(tmp_path / "p.csv")
        needles = ["is a folder"]
    else:
        data["prices"]["file"] = str(root / "data" / "entsoe_dayahead_2019_de_dk1.csv")
        data["prices"]["start"], data["prices"]["end"] = (
            "2019-03-02T00:00:00Z",
            "2019-03-01T00:00:00Z",
        )
        needles = ["prices", "must be after start"]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    _one_line_error(vpp("optimize", str(path), cwd=tmp_path), *needles)


def test_the_live_demo_logs_text_unless_json_is_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At a terminal `vpp run` prints log lines as text above its status display (JSON
    objects scrolled through it); piped, or with log.json_format set, it logs JSON."""
    from vpp.cli.main import log_as_json
    from vpp.config import load_settings

    monkeypatch.delenv("VPP_LOG__JSON_FORMAT", raising=False)
    assert log_as_json(load_settings(None), live=True) is False
    assert log_as_json(load_settings(None), live=False) is True
    monkeypatch.setenv("VPP_LOG__JSON_FORMAT", "true")
    assert log_as_json(load_settings(None), live=True) is True
