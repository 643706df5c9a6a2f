"""`vpp bids`, `vpp awards`, `vpp audit`: the operator's API from the terminal.

They talk to a running engine's API (``--url``, default the configured host and port) with
an API key (``--key`` or ``VPP_API_KEY``), so they need the same keys and roles as the API
and act through the engine that holds the market connection: an approval is four-eyes
checked, a submission goes through the transaction log, every change is audited.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Annotated, Any

import typer
from rich.table import Table

from vpp.cli.common import console, fail, settings

bids_app = typer.Typer(
    help="Review bids: list, show, approve, reject, submit.", no_args_is_help=True
)

Url = Annotated[
    str | None, typer.Option("--url", help="the engine's API (default: api.host:api.port)")
]
Key = Annotated[
    str | None, typer.Option("--key", help="an API key (default: $VPP_API_KEY)", show_default=False)
]


class ApiError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _base(url: str | None) -> str:
    if url:
        return url.rstrip("/")
    cfg = settings()
    host = "127.0.0.1" if cfg.api.host in ("0.0.0.0", "::") else cfg.api.host
    return f"http://{host}:{cfg.api.port}"


def call(
    method: str,
    path: str,
    *,
    url: str | None,
    key: str | None,
    params: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
) -> Any:
    """One API call; :class:`ApiError` with the API's own explanation on a refusal."""
    token = key or os.environ.get("VPP_API_KEY")
    if not token:
        raise ApiError(0, "no API key: pass --key or set VPP_API_KEY (see `vpp keys create`)")
    query = {k: v for k, v in (params or {}).items() if v is not None}
    target = f"{_base(url)}/api/v1{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(target, data=data, method=method)
    request.add_header("X-API-Key", token)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            detail = json.loads(raw).get("detail", raw.decode())
        except (ValueError, AttributeError):
            detail = raw.decode(errors="replace")
        if isinstance(detail, list):
            detail = "; ".join(str(d.get("msg", d)) for d in detail)
        raise ApiError(exc.code, f"{exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ApiError(0, f"the engine's API is not reachable at {_base(url)} ({exc})") from None


def _run(fn: Any) -> Any:
    try:
        return fn()
    except ApiError as exc:
        fail(exc.detail, code=2 if exc.status in (0, 401, 403, 422) else 1)


def _console() -> Any:
    return console


def _curve(side: list[dict[str, float]]) -> str:
    return ", ".join(f"{s['quantity_mw']:g} MW @ {s['price_per_mwh']:g}" for s in side) or "-"


@bids_app.command("list")
def bids_list(
    status: Annotated[str | None, typer.Option(help="draft, approved, submitted, ...")] = None,
    group: Annotated[str | None, typer.Option(help="a group")] = None,
    market: Annotated[str | None, typer.Option(help="a market")] = None,
    start_from: Annotated[
        str | None, typer.Option("--from", help="interval start >= (ISO 8601 with zone)")
    ] = None,
    start_to: Annotated[
        str | None, typer.Option("--to", help="interval start < (ISO 8601 with zone)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    url: Url = None,
    key: Key = None,
) -> None:
    """Bids matching the filters (one page; half-open interval range [from, to))."""
    page = _run(
        lambda: call(
            "GET",
            "/bids",
            url=url,
            key=key,
            params={
                "status": status,
                "group": group,
                "market": market,
                "start_from": start_from,
                "start_to": start_to,
                "limit": limit,
            },
        )
    )
    table = Table(title=f"{page['count']} bids", title_justify="left")
    for col in ("bid", "interval start", "gate", "status", "v", "approved by", "offers", "bids"):
        table.add_column(col)
    for b in page["data"]:
        table.add_row(
            b["bid_id"],
            b["interval_start"],
            b["gate_closure"],
            b["status"],
            str(b["version"]),
            b.get("approved_by") or "",
            _curve(b["discharge"]),
            _curve(b["charge"]),
        )
    _console().print(table)


@bids_app.command("show")
def bids_show(
    bid_id: Annotated[str, typer.Argument(help="the bid's id")], url: Url = None, key: Key = None
) -> None:
    """One bid: its curve, versions, reviews and the solve that made it."""
    d = _run(lambda: call("GET", f"/bids/{urllib.parse.quote(bid_id)}", url=url, key=key))
    b = d["bid"]
    out = _console()
    out.print(
        f"[bold]{b['bid_id']}[/bold] v{b['version']} {b['status']} — {b['market']} "
        f"{b['product']}, {b['interval_start']} .. {b['interval_end']}, gate {b['gate_closure']}"
    )
    out.print(f"offers: {_curve(b['discharge'])}\ncharge bids: {_curve(b['charge'])}")
    out.print(f"author: {b['author']}; approved by: {b.get('approved_by') or '-'}")
    reviews = Table("when", "action", "from", "to", "who", "comment", title="reviews")
    for r in d["reviews"]:
        reviews.add_row(
            r["ts"], r["action"], r["from_status"], r["to_status"], r["actor"], r["comment"] or ""
        )
    out.print(reviews)
    report = d.get("solve_report") or {}
    if report:
        out.print(
            f"solve: {report.get('status')} in {report.get('solve_s', 0):.3f} s, forecast "
            f"{report.get('forecast')}, expected revenue {report.get('expected_revenue')} "
            f"{report.get('currency', '')}"
        )


def _review(
    action: str, bid_id: str, version: int | None, comment: str | None, url: Url, key: Key
) -> None:
    quoted = urllib.parse.quote(bid_id)

    def go() -> Any:
        v = version
        if v is None:
            v = call("GET", f"/bids/{quoted}", url=url, key=key)["bid"]["version"]
        body: dict[str, Any] = {"version": v}
        if action != "submit":
            body["comment"] = comment
        return call("POST", f"/bids/{quoted}/{action}", url=url, key=key, body=body)

    result = _run(go)
    row = result.get("bid", result)
    _console().print(f"{row['bid_id']} v{row['version']}: {row['status']}")
    if result.get("refused"):
        _console().print(f"refused by the market: {result['refused']}")


Version = Annotated[
    int | None, typer.Option(help="the version you reviewed (default: the current one)")
]
Comment = Annotated[str | None, typer.Option(help="why (kept in the review record)")]


@bids_app.command("approve")
def bids_approve(
    bid_id: Annotated[str, typer.Argument()],
    version: Version = None,
    comment: Comment = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Approve a bid's version (four-eyes: not by its last editor)."""
    _review("approve", bid_id, version, comment, url, key)


@bids_app.command("reject")
def bids_reject(
    bid_id: Annotated[str, typer.Argument()],
    version: Version = None,
    comment: Comment = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Reject a bid's version."""
    _review("reject", bid_id, version, comment, url, key)


@bids_app.command("resolve")
def bids_resolve(
    bid_id: Annotated[str, typer.Argument()],
    outcome: Annotated[str, typer.Option(help="what the market says: accepted, refused or missed")],
    comment: Annotated[str, typer.Option(help="where the answer came from (audited)")],
    version: Version = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Close a bid ``unknown`` at the market with the market's own answer."""
    if outcome not in ("accepted", "refused", "missed"):
        fail(f"--outcome {outcome!r}: give accepted, refused or missed", code=2)
    quoted = urllib.parse.quote(bid_id)

    def go() -> Any:
        v = version
        if v is None:
            v = call("GET", f"/bids/{quoted}", url=url, key=key)["bid"]["version"]
        body = {"version": v, "outcome": outcome, "comment": comment}
        return call("POST", f"/bids/{quoted}/resolve", url=url, key=key, body=body)

    row = _run(go)
    console.print(f"{row['bid_id']} v{row['version']}: {row['status']}")


@bids_app.command("submit")
def bids_submit(
    bid_id: Annotated[str, typer.Argument()],
    version: Version = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Submit an approved bid to the market now."""
    _review("submit", bid_id, version, None, url, key)


def awards_command(
    group: Annotated[str | None, typer.Option(help="a group")] = None,
    start_from: Annotated[str | None, typer.Option("--from", help="interval start >=")] = None,
    start_to: Annotated[str | None, typer.Option("--to", help="interval start <")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    url: Url = None,
    key: Key = None,
) -> None:
    """What the market awarded (half-open interval range [from, to))."""
    page = _run(
        lambda: call(
            "GET",
            "/awards",
            url=url,
            key=key,
            params={"group": group, "start_from": start_from, "start_to": start_to, "limit": limit},
        )
    )
    table = Table(title=f"{page['count']} awards", title_justify="left")
    for col in ("award", "bid", "group", "interval start", "MW (+ discharge)", "price"):
        table.add_column(col)
    for a in page["data"]:
        table.add_row(
            a["award_id"],
            a["bid_id"],
            a.get("group") or a.get("group_id", ""),
            a["interval_start"],
            f"{a['p_mw']:g}",
            f"{a['price_per_mwh']:g}",
        )
    _console().print(table)


def audit_command(
    resource_type: Annotated[str | None, typer.Option(help="bid, api_key, ...")] = None,
    resource_id: Annotated[str | None, typer.Option(help="a resource's id")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    url: Url = None,
    key: Key = None,
) -> None:
    """The audit log, newest first (an admin key)."""
    page = _run(
        lambda: call(
            "GET",
            "/audit",
            url=url,
            key=key,
            params={"resource_type": resource_type, "resource_id": resource_id, "limit": limit},
        )
    )
    table = Table(title=f"{page['count']} audit records", title_justify="left")
    for col in ("when", "who", "action", "resource", "id"):
        table.add_column(col)
    for r in page["data"]:
        table.add_row(r["ts"], r["actor"], r["action"], r["resource_type"], r["resource_id"])
    _console().print(table)
