"""Migrations on SQLite and the real PostgreSQL; the engine refuses an old schema."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import PG_BASE_URL
from vpp.config import DatabaseSettings
from vpp.store import db
from vpp.store.tables import api_keys, metadata


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        settings = DatabaseSettings(url=f"sqlite:///{tmp_path}/vpp.db")
        engine = db.create_db_engine(settings)
        yield engine
        engine.dispose()
        return
    base = request.getfixturevalue("pg_schema")
    schema = f"{base}_mig"
    admin = sa.create_engine(PG_BASE_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine = db.create_db_engine(DatabaseSettings(url=PG_BASE_URL, schema_name=schema))
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_empty_database_is_refused_with_the_fix(fresh_engine: sa.Engine) -> None:
    with pytest.raises(db.SchemaOutOfDateError, match="vpp db upgrade"):
        db.check_schema(fresh_engine)


def test_upgrade_creates_every_table_and_is_idempotent(fresh_engine: sa.Engine) -> None:
    db.upgrade(fresh_engine)
    db.upgrade(fresh_engine)
    db.check_schema(fresh_engine)
    names = set(sa.inspect(fresh_engine).get_table_names())
    assert set(metadata.tables) <= names


def test_migrated_schema_matches_the_table_definitions(fresh_engine: sa.Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    db.upgrade(fresh_engine)
    with fresh_engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == [], f"tables.py and the migrations disagree: {diff}"


def test_old_revision_is_refused(fresh_engine: sa.Engine) -> None:
    db.upgrade(fresh_engine)
    with fresh_engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0000'"))
    with pytest.raises(db.SchemaOutOfDateError, match="revision 0000"):
        db.check_schema(fresh_engine)


def test_timestamps_round_trip_aware_utc_and_naive_is_refused(fresh_engine: sa.Engine) -> None:
    db.upgrade(fresh_engine)
    ts = datetime(2026, 11, 21, 14, 5, 7, 123000, tzinfo=UTC)
    row = {"key_id": "k1", "name": "n", "role": "viewer", "key_hash": "h" * 64, "created_at": ts}
    with fresh_engine.begin() as conn:
        conn.execute(api_keys.insert().values(**row))
        back = conn.execute(sa.select(api_keys.c.created_at)).scalar_one()
    assert back == ts and back.tzinfo is not None
    naive = datetime(2026, 1, 1)  # noqa: DTZ001 - the bug under test
    bad = {**row, "key_id": "k2", "key_hash": "g" * 64, "created_at": naive}
    with pytest.raises(sa.exc.StatementError, match="naive datetime"), fresh_engine.begin() as conn:
        conn.execute(api_keys.insert().values(**bad))
