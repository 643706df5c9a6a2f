"""Database engine and schema migrations (SQLAlchemy Core + Alembic).

SQLite is the zero-set-up default (one file, WAL journal so the API's readers do not block
the engine's writers); PostgreSQL is selected by URL, optionally inside a schema (the
connection's ``search_path``). The schema is only ever changed by Alembic migrations
shipped in ``vpp/store/migrations``: ``vpp db upgrade`` applies them and an engine started
against an older schema refuses with :class:`SchemaOutOfDateError`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from vpp.config import DatabaseSettings

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


class SchemaOutOfDateError(RuntimeError):
    """The database's schema is not the one this version of the engine needs."""


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def create_db_engine(
    settings: DatabaseSettings, *, pool_size: int = 10, pool_timeout_s: float = 30.0
) -> sa.Engine:
    """An engine on the configured database; ``pool_size`` connections and no overflow
    beyond as many again, a checkout waiting at most ``pool_timeout_s`` (then
    :class:`sqlalchemy.exc.TimeoutError`)."""
    url = sa.make_url(settings.url.get_secret_value())
    kwargs: dict[str, Any] = {
        "echo": settings.echo,
        "future": True,
        # JSON stored compact: the same text on every backend (exports carry it verbatim)
        "json_serializer": _compact_json,
    }
    memory = False
    if url.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        database = url.database
        memory = not database or database == ":memory:"
        if not memory:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)  # type: ignore[arg-type]
    else:
        kwargs["pool_pre_ping"] = True
        if settings.schema_name:
            kwargs["connect_args"] = {"options": f"-csearch_path={settings.schema_name}"}
    if not memory:  # an in-memory SQLite keeps one connection per thread: no pool to size
        kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_timeout=pool_timeout_s)
    engine = sa.create_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def sqlite_file(settings: DatabaseSettings) -> Path | None:
    """The file of a file-backed SQLite URL (None for PostgreSQL or an in-memory SQLite)."""
    url = sa.make_url(settings.url.get_secret_value())
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).expanduser()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _alembic_config(engine: sa.Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    if head is None:
        raise RuntimeError("no migrations shipped")
    return head


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Apply the shipped migrations up to ``revision`` (idempotent)."""
    cfg = _alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def check_schema(engine: sa.Engine) -> None:
    """Raise :class:`SchemaOutOfDateError` unless the database is at the shipped head."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    where = engine.url.render_as_string(hide_password=True)
    if current is None:
        raise SchemaOutOfDateError(
            f"database {where} has no engine schema yet; run `vpp db upgrade` first"
        )
    raise SchemaOutOfDateError(
        f"database {where} is at schema revision {current}, this engine needs {head}; "
        "run `vpp db upgrade`"
    )


def ping(engine: sa.Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError:
        return False
    return True
