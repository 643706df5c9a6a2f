"""What every CLI command shares: the consoles, the ``--config`` file given, the settings
loaded from it (bad settings exit 2, each named) and the one way to fail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from vpp.config import ConfigError, Settings, load_settings

# Piped or redirected, tables keep every column whole instead of folding to 80 characters.
console = Console() if Console().is_terminal else Console(width=250)
err_console = Console(stderr=True, soft_wrap=True)


class _State:
    config_file: Path | None = None


state = _State()


def settings(**overrides: Any) -> Settings:
    """The effective settings, or exit 2 with every bad setting named."""
    try:
        return load_settings(state.config_file, **overrides)
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(2) from None


def fail(message: str, code: int = 1) -> None:
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def open_database(cfg: Settings, *, create: bool = False) -> Any:
    """The configured database at the engine's schema, or exit 1 saying why, leaving
    nothing behind: a SQLite file that does not exist yet is created (and migrated) only
    with ``create`` (what `vpp run` does with the embedded default); otherwise the command
    refuses before a file or folder is made (a refused `vpp keys list` used to leave an
    empty vpp.db that later looked like a broken install)."""
    from vpp.store import db

    path = db.sqlite_file(cfg.database)
    fresh = path is not None and not path.exists()
    if fresh and not create:
        fail(f"no database at {path} yet: `vpp run` or `vpp db upgrade` creates it")
    engine = db.create_db_engine(cfg.database)
    if fresh:
        db.upgrade(engine)
        err_console.print(f"created the database {path} (schema {db.head_revision()})")
    try:
        db.check_schema(engine)
    except db.SchemaOutOfDateError as exc:
        engine.dispose()
        fail(str(exc))
    return engine
