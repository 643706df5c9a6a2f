"""The operator API on SQLite and the real PostgreSQL: every bid-review transition and every
refusal (wrong role, stale version, after gate closure, four-eyes), fleet views, keys, audit."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.api_support import FIRST, Api, build_api, engine_for
from vpp.store.tables import audit_log, market_txlog

BID = f"north-energy_rt-{FIRST:%Y%m%dT%H%MZ}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    gen = engine_for(request.param, tmp_path, request)
    engine = next(gen)
    built = build_api(engine)
    with built.client:
        yield built
    for _ in gen:
        pass


def curve(price: float = 50.0, version: int = 1) -> dict[str, object]:
    return {
        "version": version,
        "discharge": [{"price_per_mwh": price, "quantity_mw": 0.4}],
        "charge": [],
        "comment": "tighter offer",
    }


# -- authentication and roles -----------------------------------------------------------------


def test_no_or_bad_key_is_401_and_never_leaks_existence(api: Api) -> None:
    for headers in ({}, {"X-API-Key": "nope"}, {"X-API-Key": "vpp_abc_def"}):
        for path in (f"/api/v1/bids/{BID}", "/api/v1/bids/no-such-bid", "/api/v1/fleet"):
            r = api.client.get(path, headers=headers)
            assert r.status_code == 401, (path, headers)
            assert r.json() == {"detail": "missing or invalid API key (X-API-Key)"}


def test_viewer_cannot_mutate_and_gets_the_same_403_for_any_bid(api: Api) -> None:
    for bid in (BID, "no-such-bid"):
        r = api.client.put(f"/api/v1/bids/{bid}/curve", json=curve(), headers=api.h("viewer"))
        assert r.status_code == 403
        assert r.json() == {"detail": "this needs the operator role"}
    assert api.client.get("/api/v1/keys", headers=api.h("alice")).status_code == 403


def test_revoked_key_stops_working(api: Api) -> None:
    r = api.client.post(
        "/api/v1/keys", json={"name": "tmp", "role": "viewer"}, headers=api.h("admin")
    )
    assert r.status_code == 201
    created = r.json()
    hdr = {"X-API-Key": created["key"]}
    assert api.client.get("/api/v1/bids", headers=hdr).status_code == 200
    assert (
        api.client.delete(f"/api/v1/keys/{created['key_id']}", headers=api.h("admin")).status_code
        == 204
    )
    assert api.client.get("/api/v1/bids", headers=hdr).status_code == 401
    listed = api.client.get("/api/v1/keys", headers=api.h("admin")).json()
    assert listed["count"] == len(listed["data"]) >= 5
    assert all("key" not in k and "key_hash" not in k for k in listed["data"])


# -- reading ----------------------------------------------------------------------------------


def test_list_filters_and_paginates(api: Api) -> None:
    r = api.client.get("/api/v1/bids", params={"limit": 5}, headers=api.h("viewer"))
    body = r.json()
    assert r.status_code == 200 and body["count"] == 12 and len(body["data"]) == 5
    north = api.client.get(
        "/api/v1/bids", params={"group": "north", "skip": 4, "limit": 5}, headers=api.h("viewer")
    ).json()
    assert north["count"] == 6 and len(north["data"]) == 2
    assert {b["group"] for b in north["data"]} == {"north"}
    window = api.client.get(
        "/api/v1/bids",
        params={
            "start_from": (FIRST + timedelta(minutes=10)).isoformat(),
            "start_to": (FIRST + timedelta(minutes=20)).isoformat(),
            "status": "draft",
            "market": "caiso",
        },
        headers=api.h("viewer"),
    ).json()
    assert window["count"] == 4
    naive = api.client.get(
        "/api/v1/bids", params={"start_from": "2026-11-21T14:00:00"}, headers=api.h("viewer")
    )
    assert naive.status_code == 422


def test_one_bid_with_versions_reviews_and_solve_report(api: Api) -> None:
    body = api.client.get(f"/api/v1/bids/{BID}", headers=api.h("viewer")).json()
    assert body["bid"]["version"] == 1 and body["bid"]["status"] == "draft"
    assert body["bid"]["author"] == "engine (system)"
    assert [v["version"] for v in body["versions"]] == [1]
    assert body["solve_report"] == {"model": "scenario", "objective": 1.0}
    assert api.client.get("/api/v1/bids/none", headers=api.h("viewer")).status_code == 404


# -- the workflow -----------------------------------------------------------------------------


def test_every_response_writes_an_instant_the_same_way(api: Api) -> None:
    """ISO 8601 UTC ending in Z from GETs and mutations alike (a GET wrote +00:00 where
    the edit's answer wrote Z for the same bid)."""
    r = api.client.put(f"/api/v1/bids/{BID}/curve", json=curve(52.0), headers=api.h("alice"))
    assert r.status_code == 200, r.text
    got = api.client.get(f"/api/v1/bids/{BID}", headers=api.h("viewer")).json()["bid"]
    listed = api.client.get("/api/v1/bids", headers=api.h("viewer")).json()["data"]
    for key in ("interval_start", "interval_end", "gate_closure", "created_at", "updated_at"):
        assert r.json()[key].endswith("Z"), (key, r.json()[key])
        assert got[key] == r.json()[key] or key == "updated_at"
        assert all(b[key].endswith("Z") for b in listed)
        assert got[key].endswith("Z")


def test_edit_approve_submit_award_happy_path(api: Api) -> None:
    r = api.client.put(f"/api/v1/bids/{BID}/curve", json=curve(52.0), headers=api.h("alice"))
    assert r.status_code == 200, r.text
    edited = r.json()
    assert (edited["version"], edited["status"], edited["author"]) == (
        2,
        "draft",
        r.json()["author"],
    )
    assert edited["discharge"] == [{"price_per_mwh": 52.0, "quantity_mw": 0.4}]
    approved = api.client.post(
        f"/api/v1/bids/{BID}/approve", json={"version": 2}, headers=api.h("bob")
    )
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    submitted = api.client.post(
        f"/api/v1/bids/{BID}/submit", json={"version": 2}, headers=api.h("alice")
    )
    assert submitted.status_code == 200, submitted.text
    body = submitted.json()
    assert body["accepted"] == [BID] and body["bid"]["status"] == "accepted"
    # The exchange was logged before and after it happened.
    with api.engine.connect() as conn:
        phases = (
            conn.execute(
                sa.select(market_txlog.c.phase).where(market_txlog.c.tx_id == body["tx_id"])
            )
            .scalars()
            .all()
        )
    assert sorted(phases) == ["request", "response"]
    # The market clears at 45 >= 52? no: nothing awarded for the offer, charge 10 < 45.
    awards = api.services.market.awards("awards-1", FIRST, FIRST + timedelta(minutes=5))  # type: ignore[union-attr]
    assert api.services.bids.record_awards(awards) == 1
    after = api.client.get(f"/api/v1/bids/{BID}", headers=api.h("viewer")).json()
    assert after["bid"]["status"] == "awarded"
    assert [r["action"] for r in after["reviews"]] == [
        "edit",
        "approve",
        "submit",
        "accept",
        "award",
    ]
    listed = api.client.get("/api/v1/awards", headers=api.h("viewer")).json()
    assert listed["count"] == 1 and listed["data"][0]["bid_id"] == BID
    assert listed["data"][0]["p_mw"] == 0.0
    assert "group_id" not in listed["data"][0] and listed["data"][0]["group"] == "north"
    created = api.client.get(
        "/api/v1/audit", params={"resource_id": BID}, headers=api.h("admin")
    ).json()["data"]
    assert [e["action"] for e in created][-1] == "create"  # found by the bid's own id


def test_reject_then_edit_back_to_draft(api: Api) -> None:
    r = api.client.post(
        f"/api/v1/bids/{BID}/reject",
        json={"version": 1, "comment": "too low"},
        headers=api.h("alice"),
    )
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    r = api.client.put(f"/api/v1/bids/{BID}/curve", json=curve(version=1), headers=api.h("alice"))
    assert r.status_code == 200 and r.json()["status"] == "draft" and r.json()["version"] == 2


def test_stale_version_is_409_with_the_current_bid(api: Api) -> None:
    api.client.put(f"/api/v1/bids/{BID}/curve", json=curve(), headers=api.h("alice"))
    for path, body in (
        (f"/api/v1/bids/{BID}/curve", curve(55.0, version=1)),
        (f"/api/v1/bids/{BID}/approve", {"version": 1}),
    ):
        r = api.client.request(
            "PUT" if path.endswith("curve") else "POST", path, json=body, headers=api.h("bob")
        )
        assert r.status_code == 409
        assert "version 1 is not current (current: v2" in r.json()["detail"]
        assert r.json()["current"]["version"] == 2


def test_four_eyes_approver_must_differ_from_the_last_editor(api: Api) -> None:
    api.client.put(f"/api/v1/bids/{BID}/curve", json=curve(), headers=api.h("alice"))
    r = api.client.post(f"/api/v1/bids/{BID}/approve", json={"version": 2}, headers=api.h("alice"))
    assert r.status_code == 403 and "four-eyes" in r.json()["detail"]
    assert (
        api.client.post(
            f"/api/v1/bids/{BID}/approve", json={"version": 2}, headers=api.h("bob")
        ).status_code
        == 200
    )


def test_after_gate_closure_edit_approve_submit_are_409_naming_the_gate(api: Api) -> None:
    api.client.post(f"/api/v1/bids/{BID}/approve", json={"version": 1}, headers=api.h("bob"))
    api.clock.now = FIRST - timedelta(minutes=75)  # CAISO real-time gate: 75 min before
    gate = (FIRST - timedelta(minutes=75)).isoformat()
    for method, path, body in (
        ("PUT", f"/api/v1/bids/{BID}/curve", curve()),
        ("POST", f"/api/v1/bids/{BID}/approve", {"version": 1}),
        ("POST", f"/api/v1/bids/{BID}/submit", {"version": 1}),
    ):
        r = api.client.request(method, path, json=body, headers=api.h("alice"))
        assert r.status_code == 409, (path, r.text)
        assert f"gate closed at {gate}" in r.json()["detail"]


def test_lifecycle_refusals(api: Api) -> None:
    r = api.client.post(f"/api/v1/bids/{BID}/submit", json={"version": 1}, headers=api.h("alice"))
    assert r.status_code == 409 and "a draft, so it cannot be submitted" in r.json()["detail"]


def test_edit_is_revalidated_against_market_rules(api: Api) -> None:
    bad = {
        "version": 1,
        "discharge": [
            {"price_per_mwh": 90, "quantity_mw": 1},
            {"price_per_mwh": 85, "quantity_mw": 1},
        ],
    }
    r = api.client.put(f"/api/v1/bids/{BID}/curve", json=bad, headers=api.h("alice"))
    assert r.status_code == 422
    msgs = [d["msg"] for d in r.json()["detail"]]
    assert any("discharge segment 2: price 85.0 < segment 1 price 90.0" in m for m in msgs)
    too_many = {
        "version": 1,
        "discharge": [{"price_per_mwh": p, "quantity_mw": 0.1} for p in range(11)],
    }
    r = api.client.put(f"/api/v1/bids/{BID}/curve", json=too_many, headers=api.h("alice"))
    assert any("11 segments, the market allows 10" in d["msg"] for d in r.json()["detail"])
    assert (
        api.client.get(f"/api/v1/bids/{BID}", headers=api.h("viewer")).json()["bid"]["version"] == 1
    )


def test_every_mutation_is_audited_with_before_and_after(api: Api) -> None:
    api.client.put(f"/api/v1/bids/{BID}/curve", json=curve(), headers=api.h("alice"))
    api.client.post(f"/api/v1/bids/{BID}/approve", json={"version": 2}, headers=api.h("bob"))
    with api.engine.connect() as conn:
        rows = conn.execute(
            sa.select(audit_log)
            .where(audit_log.c.resource_id == BID, audit_log.c.action != "create")
            .order_by(audit_log.c.audit_id)
        ).all()
    assert [(r.action, r.role) for r in rows] == [("edit", "operator"), ("approve", "operator")]
    assert rows[0].before["version"] == 1 and rows[0].after["version"] == 2
    assert rows[1].before["status"] == "draft" and rows[1].after["status"] == "approved"
    assert rows[0].actor.startswith("alice") and rows[1].actor.startswith("bob")
    audit = api.client.get(
        "/api/v1/audit", params={"resource_id": BID}, headers=api.h("admin")
    ).json()
    # and the bid's creation (by the engine's bidder) before them, under the bid's own id
    assert audit["count"] == 3
    assert [a["action"] for a in audit["data"]] == ["approve", "edit", "create"]


# -- fleet and sites --------------------------------------------------------------------------


def test_fleet_groups_sites_navigation(api: Api) -> None:
    fleet = api.client.get("/api/v1/fleet", headers=api.h("viewer")).json()
    assert fleet["fleet"]["sites"] == 6 and [g["node_id"] for g in fleet["groups"]] == [
        "north",
        "south",
    ]
    assert fleet["fleet"]["e_discharge_kwh"]["expected"] == pytest.approx(6 * (500 - 100) * 0.95)
    assert fleet["fleet"]["free"]["sites"] == 6 and fleet["fleet"]["committed"]["sites"] == 0
    group = api.client.get(
        "/api/v1/fleet/groups/north", params={"limit": 2}, headers=api.h("viewer")
    ).json()
    assert group["parent"] == "fleet" and group["sites"]["count"] == 3
    assert [s["node_id"] for s in group["sites"]["data"]] == ["s0", "s1"]
    assert group["sites"]["data"][0]["parent"] == "north"
    site = api.client.get("/api/v1/sites/s4", headers=api.h("viewer")).json()
    assert site["group"] == "south" and site["connectivity"] == "online"
    assert site["aggregate"]["parent"] == "south"
    listed = api.client.get(
        "/api/v1/sites",
        params={"group": "south", "connectivity": "online"},
        headers=api.h("viewer"),
    ).json()
    assert listed["count"] == 3
    events = api.client.get("/api/v1/sites/s4/events", headers=api.h("viewer")).json()
    assert events == {"data": [], "count": 0}
    assert api.client.get("/api/v1/sites/nope", headers=api.h("viewer")).status_code == 404
    assert api.client.get("/api/v1/fleet/groups/nope", headers=api.h("viewer")).status_code == 404


def test_health_and_metrics(api: Api) -> None:
    assert api.client.get("/livez").json() == {"status": "ok"}
    assert api.client.get("/readyz").status_code == 200
    api.client.get("/api/v1/bids", headers=api.h("viewer"))
    text = api.client.get("/metrics").text
    assert 'vpp_api_request_duration_seconds_count{method="GET",route="/api/v1/bids"' in text


def test_manual_target_is_scheduled_listed_and_audited(api: Api) -> None:
    start = api.clock() + timedelta(minutes=10)
    body = {
        "group": "north",
        "interval_start": start.isoformat(),
        "duration_s": 300,
        "target_kw": -40.0,
    }
    r = api.client.post("/api/v1/dispatch/targets", json=body, headers=api.h("alice"))
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["status"] == "scheduled" and created["target_kw"] == -40.0
    assert created["source"] == "manual"
    # Idempotent for the same target; a different one for the same interval is a conflict.
    again = api.client.post("/api/v1/dispatch/targets", json=body, headers=api.h("alice"))
    assert again.status_code == 201 and again.json()["dispatch_id"] == created["dispatch_id"]
    other = {**body, "target_kw": 10.0}
    assert (
        api.client.post("/api/v1/dispatch/targets", json=other, headers=api.h("alice")).status_code
        == 409
    )
    listed = api.client.get(
        "/api/v1/dispatch", params={"group": "north"}, headers=api.h("viewer")
    ).json()
    assert [row["dispatch_id"] for row in listed["data"]] == [created["dispatch_id"]]
    assert listed["data"][0]["interval_end"] == (start + timedelta(minutes=5)).isoformat().replace(
        "+00:00", "Z"
    )
    with api.engine.connect() as conn:
        rows = conn.execute(
            sa.select(audit_log.c.actor, audit_log.c.action).where(
                audit_log.c.resource_type == "dispatch_target"
            )
        ).all()
    assert len(rows) == 1  # the idempotent repeat changed nothing, so it is not audited
    assert rows[0].actor.startswith("alice") and rows[0].action == "create"


def test_manual_target_refusals(api: Api) -> None:
    now = api.clock()

    def post(who: str, **over: object) -> int:
        body = {
            "group": "north",
            "interval_start": (now + timedelta(minutes=5)).isoformat(),
            "duration_s": 300,
            "target_kw": 10.0,
            **over,
        }
        r = api.client.post("/api/v1/dispatch/targets", json=body, headers=api.h(who))
        return r.status_code

    assert post("viewer") == 403
    assert post("alice", interval_start=(now - timedelta(hours=1)).isoformat()) == 409
    assert post("alice", interval_start=(now + timedelta(days=8)).isoformat()) == 409
    assert post("alice", interval_start="2026-11-21T15:00:00") == 422  # naive time
    assert post("alice", duration_s=0) == 422
    assert post("alice", target_kw=float("1e9")) == 422
    assert post("alice", group="no spaces allowed") == 422


def test_non_finite_numbers_in_a_body_are_a_422_not_a_500(api: Api) -> None:
    # Python's json writes and reads `Infinity`; the validation error echoes the input,
    # which JSON cannot carry — the handler must still answer 422 with a readable error.
    raw = (
        '{"group": "north", "interval_start": "'
        + (api.clock() + timedelta(minutes=5)).isoformat()
        + '", "duration_s": 300, "target_kw": Infinity}'
    )
    r = api.client.post(
        "/api/v1/dispatch/targets",
        content=raw,
        headers={**api.h("alice"), "Content-Type": "application/json"},
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "target_kw"]
    assert r.json()["detail"][0]["input"] == "inf"


def test_every_list_endpoint_is_paged_the_same_way(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    lists = []
    for path, ops in spec["paths"].items():
        get = ops.get("get")
        if get is None or "200" not in get["responses"]:
            continue
        schema = get["responses"]["200"].get("content", {}).get("application/json", {})
        schema = schema.get("schema", {})
        assert schema.get("type") != "array", f"{path} returns a bare list"
        ref = schema.get("$ref", "")
        if ref.startswith("#/components/schemas/Page"):
            lists.append(path)
            params = {p["name"] for p in get.get("parameters", [])}
            assert {"skip", "limit"} <= params, path
    assert len(lists) >= 10


def test_docs_work_offline(api: Api) -> None:
    page = api.client.get("/docs")
    assert page.status_code == 200
    assert "/docs-assets/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text and "https://" not in page.text
    assert api.client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200


def test_numbers_are_rounded_and_never_negative_zero() -> None:
    from vpp.api.routes.bids import encode

    assert encode({"a": -0.0, "b": 0.1 + 0.2, "c": [-1e-9, 2.5]}) == (
        b'{"a":0.0,"b":0.3,"c":[0.0,2.5]}'
    )


def test_site_telemetry_is_the_recent_trace_oldest_first(api: Api) -> None:
    r = api.client.get("/api/v1/sites/s0/telemetry", headers=api.h("viewer"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["site_id"] == "s0" and body["depth"] == 16
    assert body["p_kw"] == [-200.0, 150.0, 300.0, 1.0]
    assert body["ts"] == sorted(body["ts"]) and len(body["soc"]) == 4
    r = api.client.get("/api/v1/sites/nope/telemetry", headers=api.h("viewer"))
    assert r.status_code == 404


def test_a_bid_unknown_at_the_market_is_resolved_by_an_operator(api: Api) -> None:
    """Sent, no answer, and the market cannot say: ``unknown`` until an operator records
    the market's answer through the API (audited; viewers may not, a comment is needed)."""

    def lost(*_: object) -> object:
        raise ConnectionError("the market's endpoint went away")

    r = api.client.post(f"/api/v1/bids/{BID}/approve", json={"version": 1}, headers=api.h("bob"))
    assert r.status_code == 200
    api.sim.submit = lost  # type: ignore[method-assign]
    r = api.client.post(f"/api/v1/bids/{BID}/submit", json={"version": 1}, headers=api.h("alice"))
    assert r.status_code == 502 and "stays submitted" in r.json()["detail"]
    api.sim.lookup = lost  # type: ignore[method-assign]
    market = api.services.market
    assert market is not None
    assert api.services.bids.reconcile_submitted(market, api.clock(), include_unknown=True) == {
        "lose": 1
    }
    body = {"version": 1, "outcome": "accepted", "comment": "market desk by phone, 13:02"}
    r = api.client.post(f"/api/v1/bids/{BID}/resolve", json=body, headers=api.h("viewer"))
    assert r.status_code == 403
    r = api.client.post(
        f"/api/v1/bids/{BID}/resolve", json={**body, "comment": ""}, headers=api.h("alice")
    )
    assert r.status_code == 422
    r = api.client.post(f"/api/v1/bids/{BID}/resolve", json=body, headers=api.h("alice"))
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    r = api.client.post(f"/api/v1/bids/{BID}/resolve", json=body, headers=api.h("alice"))
    assert r.status_code == 409 and "nothing to resolve" in r.json()["detail"]
    with api.engine.connect() as conn:
        audited = conn.execute(
            sa.select(audit_log.c.action, audit_log.c.actor).where(
                audit_log.c.resource_id == BID, audit_log.c.action == "accept"
            )
        ).all()
    assert len(audited) == 1 and audited[0].actor.startswith("alice")


def test_every_read_route_writes_instants_with_z_and_numbers_rounded(api: Api) -> None:
    """One API style across every GET route without path parameters (and one of each
    resource's pages): instants are UTC ISO 8601 ending in Z, numbers have at most six
    decimals, and no record names one thing twice (group and group_id)."""
    import re

    api.client.put(f"/api/v1/bids/{BID}/curve", json=curve(52.0), headers=api.h("alice"))
    api.client.post(f"/api/v1/bids/{BID}/approve", json={"version": 2}, headers=api.h("bob"))
    instant = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$")
    spec = api.client.get("/openapi.json").json()
    paths = [
        p
        for p, ops in spec["paths"].items()
        if "get" in ops and "{" not in p and p.startswith("/api/v1") and "history" not in p
    ]
    paths += [f"/api/v1/bids/{BID}", "/api/v1/sites/s0", "/api/v1/fleet/groups/north"]
    bad: list[str] = []

    def walk(where: str, node: Any) -> None:
        if isinstance(node, dict):
            if "group" in node and "group_id" in node:
                bad.append(f"{where}: both group and group_id")
            for k, v in node.items():
                walk(f"{where}.{k}", v)
        elif isinstance(node, list):
            for i, v in enumerate(node[:20]):
                walk(f"{where}[{i}]", v)
        elif isinstance(node, str) and instant.match(node) and not node.endswith("Z"):
            bad.append(f"{where}: {node}")
        elif isinstance(node, float) and node != round(node, 6):
            bad.append(f"{where}: {node!r}")

    for path in paths:
        r = api.client.get(path, headers=api.h("admin"))
        if r.status_code == 200 and r.headers["content-type"].startswith("application/json"):
            walk(path, r.json())
    assert bad == [], sorted({b.split(": ")[0] for b in bad})
