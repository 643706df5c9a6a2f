"""The ``vpp`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from vpp import logs, preflight
from vpp.cli.common import console, err_console, fail, open_database, settings, state
from vpp.config import ConfigError, Settings
from vpp.records import amount

app = typer.Typer(
    name="vpp",
    help="Virtual power plant engine: twins, optimizer, bids, dispatch.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (viewer, operator, admin).", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")


def _operator_commands() -> None:
    from vpp.cli.operator import audit_command, awards_command, bids_app

    app.add_typer(bids_app, name="bids")
    app.command("awards")(awards_command)
    app.command("audit")(audit_command)


_operator_commands()


@app.callback()
def root(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="YAML or TOML config file (environment VPP_* overrides it)",
            exists=False,
        ),
    ] = None,
) -> None:
    state.config_file = config


def _writable(path: Path | None, option: str) -> None:
    """Refuse an output file that cannot be written before the work, not after it."""
    if path is None:
        return
    if path.is_dir():
        fail(f"{option} {path}: is a directory (give a file name)", code=2)
    if not path.parent.is_dir():
        fail(f"{option} {path}: the folder {path.parent} does not exist", code=2)
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        fail(f"{option} {path}: not writable", code=2)


def _writable_folder(path: Path, option: str) -> None:
    """Refuse an output folder that cannot be made or written before the work."""
    if path.exists() and not path.is_dir():
        fail(f"{option} {path}: is a file (give a folder)", code=2)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"{option} {path}: cannot create the folder ({exc.strerror})", code=2)
    if not os.access(path, os.W_OK | os.X_OK):
        fail(f"{option} {path}: not writable", code=2)


def _overrides(**sections: dict[str, Any]) -> dict[str, Any]:
    """Nest CLI overrides into settings sections, dropping options the user did not give."""
    out: dict[str, Any] = {}
    for section, values in sections.items():
        given = {k: v for k, v in values.items() if v is not None}
        if given:
            out[section] = given
    return out


def _merge(base: Settings, overrides: dict[str, Any]) -> Settings:
    if not overrides:
        return base
    data = base.model_dump()
    for section, values in overrides.items():
        data[section] = {**data[section], **values}
    try:
        return Settings.model_validate(data)
    except Exception as exc:  # pydantic ValidationError: show it like a config error
        fail(f"invalid option: {exc}", code=2)
        raise


# What `vpp run` changes when no config file or VPP_* variable sets it: the zero-set-up demo
# closes the loop unattended and fast. `vpp config show` prints these too.
RUN_DEMO: dict[str, dict[str, Any]] = {
    "bidding": {
        "auto_approve": True,  # the engine approves its own unedited drafts before the gate
        "gate_lead_s": 300,  # a 5-minute gate instead of the real-time market's 75
        "review_window_s": 60.0,
        "submit_before_gate_s": 30.0,
    },
    # a real site learns its load profile for six hours before it is planned; the demo's
    # simulated sites plan after ten simulated minutes (a minute of the wall at x10), so
    # peak shaving shows within the demo's first two minutes
    "peak_shaving": {"min_history_s": 600.0},
}


def _demo_overrides(base: Settings) -> dict[str, dict[str, Any]]:
    """The demo settings the user did not set (a config file or VPP_* wins)."""
    if state.config_file is not None:
        return {}
    from market.definitions import Product, load_market

    bidding = base.bidding
    # A day-ahead auction has one daily gate: the demo's short lead applies to lead gates only.
    daily = (
        load_market(bidding.market).products.get(Product(bidding.product)) is not None
        and load_market(bidding.market).product(bidding.product).gate_closure.kind == "daily"
    )
    out: dict[str, dict[str, Any]] = {}
    for section, values in RUN_DEMO.items():
        for key, value in values.items():
            if key == "gate_lead_s" and daily:
                continue
            if f"VPP_{section.upper()}__{key.upper()}" not in os.environ:
                out.setdefault(section, {})[key] = value
    return out


def _scaled(cfg: Settings, speed: float) -> dict[str, dict[str, Any]]:
    """At ``speed``× the gateways and the command protocol still answer in wall time: their
    timings (seconds of engine time) scale with the speed; market and plan timings do not."""
    if speed == 1.0:
        return {}
    sim, d = cfg.simulator, cfg.dispatch
    return {
        "simulator": {"telemetry_interval_s": sim.telemetry_interval_s * speed},
        "dispatch": {
            "ack_timeout_s": d.ack_timeout_s * speed,
            "backoff_s": d.backoff_s * speed,
            "follow_grace_s": d.follow_grace_s * speed,
        },
    }


def log_as_json(base: Settings, *, live: bool) -> bool:
    """JSON lines for machines (a pipe, a file, a container's log), plain text above the
    live display for a person at a terminal, unless ``log.json_format`` is set explicitly
    (JSON objects scrolled through the demo's status display)."""
    if "json_format" in base.log.model_fields_set or not live:
        return base.log.json_format
    return False


@app.command()
def run(
    duration: Annotated[
        float | None, typer.Option(help="stop after this many (wall) seconds (default: Ctrl-C)")
    ] = None,
    sites: Annotated[int | None, typer.Option(help="simulated sites", min=1)] = None,
    port: Annotated[int | None, typer.Option(help="API port (0 = a free one)", min=0)] = None,
    speed: Annotated[
        float,
        typer.Option(
            help="simulated time runs this many times faster than the wall (1 = real time)",
            min=1.0,
            max=3600.0,
        ),
    ] = 10.0,
    quiet: Annotated[bool, typer.Option(help="no live status display")] = False,
) -> None:
    """Everything in one process: embedded bus, SQLite, simulated fleet, API (zero set-up),
    on a simulated clock (``--speed``; 1 for real time)."""
    from datetime import UTC, datetime

    from vpp.cli.status import StatusDisplay
    from vpp.clock import ScaledClock, WallClock
    from vpp.wiring import build_engine

    base = settings()
    if base.bus.kind != "embedded":
        fail("`vpp run` is the embedded demo; use `vpp serve` with bus.kind=kafka", code=2)
    cfg = _merge(base, _overrides(simulator={"sites": sites}, api={"port": port}))
    cfg = _merge(cfg, _demo_overrides(cfg))
    cfg = _merge(cfg, _scaled(cfg, speed))
    live = not quiet and console.is_terminal
    logs.configure(cfg.log.level, log_as_json(base, live=live))
    clock = WallClock() if speed == 1.0 else ScaledClock(datetime.now(UTC), speed)
    try:
        preflight.check(cfg, database=True, bus=False, api=True)
        engine = build_engine(cfg, simulate=True, auto_migrate=True, clock=clock)
    except ConfigError as exc:
        fail(str(exc), code=2)
        return
    display = StatusDisplay(console, quiet=quiet)
    try:
        with display:
            asyncio.run(engine.run(duration, on_tick=display.update))
    except KeyboardInterrupt:
        pass
    display.final(engine)


@app.command()
def serve(
    duration: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
) -> None:
    """The engine against the configured bus (Kafka) and database; no simulated fleet."""
    from vpp.store.db import SchemaOutOfDateError
    from vpp.wiring import build_engine

    cfg = settings()
    logs.configure(cfg.log.level, cfg.log.json_format)
    try:
        preflight.check(cfg, database=True, bus=True, api=True)
        engine = build_engine(cfg, simulate=False, auto_migrate=False)
    except ConfigError as exc:
        fail(str(exc), code=2)
        return
    if cfg.bus.kind == "embedded":  # after the database checks: those name the first fault
        from vpp.store.db import check_schema

        try:
            check_schema(engine.db)
        except SchemaOutOfDateError as exc:
            fail(str(exc))
        fail(
            "bus.kind is embedded: `vpp serve` runs no fleet, and nothing outside this "
            "process can publish to an in-process bus, so no site would ever report; set "
            "bus.kind: kafka (VPP_BUS__KIND=kafka) for real sites, or use `vpp run` for the "
            "simulated fleet",
            code=2,
        )
    try:
        asyncio.run(engine.run(duration))
    except SchemaOutOfDateError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass


@config_app.command("show")
def config_show(
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of YAML")] = False,
) -> None:
    """Print the effective configuration (defaults < file < environment), secrets masked,
    and what `vpp run` changes on top of it."""
    cfg = settings()
    data = cfg.masked()
    demo = _demo_overrides(cfg)
    if as_json:
        sys.stdout.write(json.dumps({**data, "vpp_run_overrides": demo}, indent=2) + "\n")
        return
    sys.stdout.write(yaml.safe_dump(data, sort_keys=False))
    if demo:
        sys.stdout.write(
            "# `vpp run` (the demo) changes, unless a config file or VPP_* sets them:\n"
            + "".join(
                f"#   {section}.{key}: {json.dumps(value)}\n"
                for section, values in demo.items()
                for key, value in values.items()
            )
            + "# and runs on a simulated clock (--speed, default 10): gateway and command\n"
            "# timings scale with it. With bidding.auto_approve the engine approves its own\n"
            "# unedited drafts; operators' edits always wait for an operator.\n"
        )


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
) -> None:
    """Apply the schema migrations to the configured database."""
    from vpp.store import db

    cfg = settings()
    try:
        preflight.check(cfg, database=True, bus=False)
    except ConfigError as exc:
        fail(str(exc), code=2)
    engine = db.create_db_engine(cfg.database)
    try:
        before = db.current_revision(engine)
        db.upgrade(engine, revision)
        after = db.current_revision(engine)
    finally:
        engine.dispose()
    console.print(f"{cfg.database.masked_url()}: {before or 'empty'} -> {after}")


@db_app.command("current")
def db_current() -> None:
    """Show the database's schema revision and the one this engine needs."""
    from vpp.store import db

    cfg = settings()
    path = db.sqlite_file(cfg.database)
    if path is not None and not path.exists():  # reading it must not create it
        console.print(f"database: none at {path} yet; engine needs: {db.head_revision()}")
        return
    engine = db.create_db_engine(cfg.database)
    try:
        current = db.current_revision(engine)
    finally:
        engine.dispose()
    console.print(f"database: {current or 'empty'}; engine needs: {db.head_revision()}")


@app.command()
def optimize(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file")],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="also write the result as JSON here")
    ] = None,
) -> None:
    """Perfect-foresight optimum of a scenario over its whole date range."""
    from rich.progress import Progress
    from rich.table import Table

    from optimizer.report import InfeasibleInputError
    from vpp.optimize import optimize as run
    from vpp.scenario import ScenarioError, load_scenario

    _writable(json_out, "--json")
    try:
        sc = load_scenario(scenario)
        with Progress(console=err_console, transient=True) as bar:
            task = bar.add_task(f"optimizing {sc.name}", total=None)
            result = run(
                sc, progress=lambda done, total: bar.update(task, completed=done, total=total)
            )
    except ScenarioError as exc:
        fail(str(exc), code=2)
        return
    except InfeasibleInputError as exc:
        fail(f"scenario {scenario}: {exc}")
        return
    data = result.to_dict()
    cur = result.currency
    table = Table(
        title=f"{result.scenario}: {result.market} {result.energy_product}, "
        f"{result.start[:10]} .. {result.end[:10]} ({result.intervals} intervals)",
        title_justify="left",
    )
    for col in (
        "group",
        *data["revenue"],
        "degradation + O&M",
        "net",
        "full cycles",
        "solve s",
        "HiGHS s",
        "binding",
    ):
        table.add_column(col, justify="left" if col in ("group", "binding") else "right")
    for g in data["groups"]:
        solve = g["solve"]
        table.add_row(
            g["group"],
            *(amount(g["revenue"].get(k, 0.0)) for k in data["revenue"]),
            amount(-g["degradation"] - g["variable_om"]),
            amount(g["net_revenue"]),
            f"{g['full_cycles']:,.1f}",
            f"{solve['solve_s']:.2f}",
            f"{solve['highs_s']:.2f}",
            ", ".join(f"{b['family']}×{b['intervals']}" for b in solve["binding"]),
        )
    console.print(table)
    console.print(
        f"net revenue: {amount(result.net_revenue)} {cur} (perfect foresight, {result.windows})"
    )
    if result.committed_classes:
        console.print(
            "not in the market bound (committed to peak shaving by their tariff): "
            + ", ".join(result.committed_classes)
        )
    console.print(
        "the bound is fault-free and settles at the clearing price: backtest.faults and "
        "backtest.imbalance apply to `vpp backtest` only",
        style="dim",
    )
    if json_out is not None:
        json_out.write_text(json.dumps(data, indent=2), encoding="utf-8")
        console.print(f"wrote {json_out}")


@app.command()
def bill(
    spec: Annotated[Path, typer.Argument(help="bill what-if YAML file (docs/scenarios.md)")],
    start: Annotated[
        str | None, typer.Option("--from", help="first interval start (ISO 8601, aware)")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="end of the range (exclusive)")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="also write the result as JSON here")
    ] = None,
) -> None:
    """A site's bill without and with its battery over a range, planned as one model with
    perfect foresight; nothing is dispatched."""
    from rich.table import Table

    from optimizer.report import InfeasibleInputError
    from vpp.bill import load_bill_spec, run_bill
    from vpp.scenario import ScenarioError

    _writable(json_out, "--json")
    try:
        loaded = load_bill_spec(spec)
        changes = {
            k: v for k, v in (("start", _when(start, "--from")), ("end", _when(end, "--to"))) if v
        }
        result = run_bill(loaded.model_copy(update=changes))
    except ScenarioError as exc:
        fail(
            f"bill file {spec}: {exc}" if not str(exc).startswith("scenario") else str(exc), code=2
        )
        return
    except InfeasibleInputError as exc:
        fail(f"bill file {spec}: {exc}")
        return
    table = Table(
        title=f"{result.name}: {result.start[:16]} .. {result.end[:16]} "
        f"({result.intervals} intervals)",
        title_justify="left",
    )
    for col in ("month", "energy without", "energy with", "demand without", "demand with", "saved"):
        table.add_column(col, justify="left" if col == "month" else "right")
    for m in result.months:
        saved = m["energy_before"] + m["demand_before"] - m["energy_after"] - m["demand_after"]
        table.add_row(
            m["month"],
            amount(m["energy_before"]),
            amount(m["energy_after"]),
            amount(m["demand_before"]),
            amount(m["demand_after"]),
            amount(saved),
        )
    console.print(table)
    t = result.totals()
    console.print(
        f"avoided demand charge: {amount(t['avoided_demand_charge'])}; energy charge change: "
        f"{amount(t['energy_change'])}; bill change: {amount(t['bill_change'])}"
    )
    if json_out is not None:
        json_out.write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
        console.print(f"wrote {json_out}")


@app.command("export")
def export_history(
    start: Annotated[str, typer.Option("--from", help="first instant (ISO 8601, aware)")],
    end: Annotated[str, typer.Option("--to", help="end of the range (exclusive)")],
    out: Annotated[Path, typer.Option("--out", help="folder to write Parquet into")],
    kinds: Annotated[
        str,
        typer.Option("--kinds", help="comma-separated: dispatch,awards,bids,telemetry-aggregates"),
    ] = "dispatch,awards,bids,telemetry-aggregates",
) -> None:
    """Interval history as Parquet partitioned by day (out/<kind>/date=YYYY-MM-DD/)."""
    from rich.table import Table

    from vpp.store.history import KINDS, export

    chosen = [k.strip() for k in kinds.split(",") if k.strip()]
    unknown = [k for k in chosen if k not in KINDS]
    if unknown or not chosen:
        fail(f"--kinds {kinds!r}: unknown {unknown}; choose from {', '.join(KINDS)}", code=2)
    lo, hi = _when(start, "--from"), _when(end, "--to")
    if hi <= lo:
        fail("--to must be after --from", code=2)
    engine = open_database(settings())
    try:
        _writable_folder(out, "--out")  # made here: nothing is left behind by a bad database
        with console.status("exporting") as status:

            def progress(kind: str, day: Any) -> None:
                status.update(f"exporting {kind} {day:%Y-%m-%d}")

            summary = export(engine, chosen, lo, hi, out, progress)  # type: ignore[arg-type]
    finally:
        engine.dispose()
    table = Table(title=f"history {lo.isoformat()} .. {hi.isoformat()} -> {out}")
    for col in ("kind", "rows", "day files"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for kind, s in summary.items():
        table.add_row(kind, f"{s['rows']:,}", f"{s['files']:,}")
    console.print(table)


def _when(value: str | None, option: str) -> Any:
    """An aware instant from the command line (a plain date is UTC midnight)."""
    from datetime import UTC, date, datetime

    if value is None:
        return None
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{option} {value!r}: not an ISO 8601 date or time", code=2)
    if parsed.tzinfo is None:
        fail(f"{option} {value!r}: give the time zone (e.g. {value}Z)", code=2)
    return parsed


@app.command()
def backtest(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file")],
    out: Annotated[
        Path | None, typer.Option("--out", help="output folder (default: backtest-<name>)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (overrides backtest.seed)")] = None,
    strategy: Annotated[
        str | None,
        typer.Option(help="strategies to run, comma-separated (overrides strategy.forecast)"),
    ] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="first interval (ISO 8601, UTC if a date)")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="end of the period (exclusive)")] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            help="worker processes for the bound and the strategies (default: the machine's "
            "cores; 1 runs them in this process); the result is the same either way"
        ),
    ] = None,
) -> None:
    """Replay the engine's bidding, dispatch and settlement on a scenario's real prices in
    simulated time; score each strategy against perfect foresight."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from optimizer.report import InfeasibleInputError
    from vpp.backtest.pool import default_jobs
    from vpp.backtest.report import (
        HEADERS,
        comparison_rows,
        gap_text,
        warning_lines,
        write_outputs,
    )
    from vpp.backtest.runner import prepare, run_backtest
    from vpp.bidding.strategies import STRATEGIES
    from vpp.scenario import ScenarioError, load_scenario

    t0, t1 = _when(start, "--from"), _when(end, "--to")
    if jobs is not None and jobs < 1:
        fail(f"--jobs {jobs}: must be 1 or more", code=2)
    try:
        sc = load_scenario(scenario)
        names: list[Any] = list(sc.strategy.names)
        if strategy is not None:
            names = [n.strip() for n in strategy.split(",") if n.strip()]
            unknown = [n for n in names if n not in STRATEGIES]
            if unknown or not names:
                fail(
                    f"--strategy {strategy!r}: unknown {unknown or 'empty'}; known: "
                    f"{', '.join(STRATEGIES)}",
                    code=2,
                )
        if seed is not None:
            if seed < 0:
                fail(f"--seed {seed}: must be >= 0", code=2)
            sc = sc.model_copy(update={"backtest": sc.backtest.model_copy(update={"seed": seed})})
        inputs = prepare(sc, start=t0, end=t1)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} decisions"),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        ) as bar:
            tasks: dict[str, Any] = {
                n: bar.add_task(f"{sc.name}: {n}", total=len(inputs.decisions)) for n in names
            }
            result = run_backtest(
                inputs,
                names,
                progress=lambda n, done, total: bar.update(tasks[n], completed=done),
                jobs=default_jobs() if jobs is None else jobs,
            )
    except ScenarioError as exc:
        fail(str(exc), code=2)
        return
    except InfeasibleInputError as exc:
        fail(f"scenario {scenario}: {exc}")
        return
    folder = out or Path(f"backtest-{sc.name}")
    paths = write_outputs(result, folder)
    summary = result.summary()
    cur = summary["currency"]
    table = Table(
        title=f"{sc.name}: {summary['market']} {summary['product']}, {summary['start'][:10]} .. "
        f"{summary['end'][:10]} ({summary['intervals']} intervals), seed {summary['seed']}",
        title_justify="left",
    )
    for h in HEADERS:
        table.add_column(h, justify="left" if h == "strategy" else "right")
    for row in comparison_rows(result):
        table.add_row(*row)
    console.print(table)
    console.print(
        f"perfect foresight (whole period, one model): {result.bound['net']:,.2f} {cur}; "
        "money in " + cur
    )
    from rich.markup import escape

    gap = gap_text(result)
    if gap:
        console.print(gap)
    for line in warning_lines(result):
        console.print(f"[bold red]warning[/] {escape(line)}")
    for path in paths.values():
        console.print(f"wrote {path}")


def _key_store(create: bool = False) -> Any:
    from vpp.store.keys import KeyStore

    return KeyStore(open_database(settings(), create=create))


def _cli_audit(store: Any, action: str, key_id: str, after: dict[str, Any] | None) -> None:
    from vpp.store import audit
    from vpp.store.keys import Principal

    cli = Principal("cli", f"cli:{os.environ.get('USER', 'unknown')}", "admin")
    with store.engine.begin() as conn:
        audit.record(conn, cli, action, "api_key", key_id, None, after)


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="viewer, operator or admin")],
    name: Annotated[str, typer.Option(help="who or what the key is for")],
) -> None:
    """Create a key; it is printed once and only its hash is stored (on a fresh install
    the embedded database is created first, as `vpp run` would)."""
    store = _key_store(create=True)
    try:
        principal, plaintext = store.create(name, role)
    except ValueError as exc:
        fail(str(exc), code=2)
        return
    _cli_audit(store, "create", principal.key_id, {"name": name, "role": role})
    store.engine.dispose()
    console.print(f"key {principal.key_id} ({role}, {name}) - shown once, store it now:")
    sys.stdout.write(plaintext + "\n")


@keys_app.command("list")
def keys_list() -> None:
    """Every key (id, name, role, created, revoked) - never the key itself."""
    from rich.table import Table

    store = _key_store()
    table = Table("key id", "name", "role", "created", "revoked")
    for k in store.list_keys():
        revoked = k["revoked_at"].isoformat() if k["revoked_at"] else ""
        table.add_row(
            str(k["key_id"]), str(k["name"]), str(k["role"]), k["created_at"].isoformat(), revoked
        )
    store.engine.dispose()
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="the key's id")]) -> None:
    """Revoke a key (takes effect within seconds in a running engine)."""
    store = _key_store()
    if not store.revoke(key_id):
        store.engine.dispose()
        fail(f"no active key {key_id}")
    _cli_audit(store, "revoke", key_id, {"active": False})
    store.engine.dispose()
    console.print(f"revoked {key_id}")


@app.command()
def simulate(
    sites: Annotated[int | None, typer.Option(help="simulated site gateways", min=1)] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    duration: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
) -> None:
    """Simulated site gateways against the configured bus (Kafka): registry, telemetry with
    the configured faults, and answers to commands."""
    from vpp.bus import make_bus
    from vpp.sim.gateway import Simulator

    cfg = _merge(settings(), _overrides(simulator={"sites": sites, "seed": seed}))
    logs.configure(cfg.log.level, cfg.log.json_format)
    try:
        preflight.check(cfg, database=False, bus=True)
    except ConfigError as exc:
        fail(str(exc), code=2)

    async def main() -> None:
        import signal

        bus = make_bus(cfg.bus)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await bus.start()
        await bus.ensure_topics(cfg.bus.topics.all())
        sim = Simulator(bus, cfg.bus.topics, cfg.simulator)
        try:
            await sim.start()
            console.print(f"simulating {len(sim.fleet.sites)} sites on {cfg.bus.kind}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), duration)
        finally:
            await sim.stop()
            await bus.stop()
        console.print(sim.status()["line"])

    asyncio.run(main())


def describe(exc: BaseException) -> str:
    """One line for an error no command handled itself: what failed and where."""
    import sqlalchemy as sa
    from alembic.util import CommandError

    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        first = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        return f"the database is not reachable or refused the request: {first}"
    if isinstance(exc, sa.exc.SQLAlchemyError):
        return f"database error: {str(exc).splitlines()[0]}"
    if isinstance(exc, CommandError):
        return f"schema migration: {exc}"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


def main() -> None:
    """The ``vpp`` command: every failure a command did not report itself is one line on
    stderr naming what failed, and exit code 1 (``VPP_DEBUG=1`` shows the traceback)."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("VPP_DEBUG"):
            raise
        err_console.print(f"[red]error:[/red] {describe(exc)}", highlight=False)
        sys.exit(1)
