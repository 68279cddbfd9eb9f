"""Alembic migrations build the whole schema on empty SQLite and PostgreSQL, and match the models."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from quanyi.core.errors import ConfigError
from quanyi.core.models import Base
from quanyi.core.platform.db import Database
from quanyi.core.platform.migrate import require_current, upgrade
from tests.conftest import PG_URL


@pytest.fixture
async def empty_db(backend: str, tmp_path: Path) -> AsyncIterator[Database]:
    """An empty database: a new SQLite file, or a new PostgreSQL schema (no tables at all)."""
    if backend == "sqlite":
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
        yield db
        await db.dispose()
        return
    schema = "m_" + uuid.uuid4().hex[:12]
    admin = Database(PG_URL, pool_size=1, max_overflow=0)
    async with admin.engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    db = Database(PG_URL, connect_args={"server_settings": {"search_path": schema}})
    try:
        yield db
    finally:
        await db.dispose()
        async with admin.engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


async def table_names(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))


async def schema_differences(db: Database) -> list[object]:
    def compare(sync_conn: object) -> list[object]:
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True, "compare_server_default": True})  # type: ignore[arg-type]
        return list(compare_metadata(context, Base.metadata))

    async with db.engine.connect() as conn:
        return await conn.run_sync(compare)


async def test_upgrade_creates_every_table_and_matches_the_models(empty_db):
    assert await table_names(empty_db) == set()

    await upgrade(empty_db.engine)

    assert await table_names(empty_db) == set(Base.metadata.tables) | {"alembic_version"}
    assert await schema_differences(empty_db) == []
    await require_current(empty_db.engine)  # the server starts on it
    await upgrade(empty_db.engine)  # and upgrading again changes nothing
    assert await schema_differences(empty_db) == []


async def test_the_comparison_would_notice_a_schema_that_drifted(empty_db):
    await upgrade(empty_db.engine)
    async with empty_db.engine.begin() as conn:
        await conn.execute(text("DROP INDEX ix_orders_status_expires"))
        await conn.execute(text("CREATE TABLE stray (id INTEGER PRIMARY KEY)"))
    differences = await schema_differences(empty_db)
    kinds = {diff[0] for diff in differences if isinstance(diff, tuple)}
    assert {"add_index", "remove_table"} <= kinds


async def test_require_current_refuses_a_database_that_was_not_migrated(empty_db):
    with pytest.raises(ConfigError, match="quanyi db upgrade") as never:
        await require_current(empty_db.engine)
    assert "nothing" in never.value.message

    # Tables made some other way (create_all) are not a migrated database either.
    async with empty_db.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    with pytest.raises(ConfigError, match="quanyi db upgrade"):
        await require_current(empty_db.engine)

    async with empty_db.engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
    await upgrade(empty_db.engine)
    async with empty_db.engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '0000_old'"))
    with pytest.raises(ConfigError, match="0000_old"):
        await require_current(empty_db.engine)
