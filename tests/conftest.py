"""Shared fixtures. Database tests run twice: on SQLite and on PostgreSQL.

PostgreSQL comes from QUANYI_TEST_DATABASE_URL (default: the local server on
127.0.0.1:5432, user root, database test). It is never skipped: an unreachable server
fails the run, so a green suite always means both databases passed. Each test gets
its own PostgreSQL schema, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event

from quanyi.core.models import Base
from quanyi.core.platform.config import Settings
from quanyi.core.platform.crypto import KeyRing
from quanyi.core.platform.db import Database
from quanyi.core.services import Core, build_core

PG_URL = os.environ.get("QUANYI_TEST_DATABASE_URL", "postgresql+asyncpg://root@127.0.0.1:5432/test")


def make_keyring() -> KeyRing:
    return KeyRing({"k1": secrets.token_bytes(32)}, "k1", secrets.token_bytes(32), sandbox_key=secrets.token_bytes(32))


async def create_database(
    backend: str, tmp_path: Path, template_dir: Path | None = None
) -> tuple[Database, str | None]:
    """A fresh, empty database with the schema created from the models.

    With ``template_dir`` the schema is built by ``create_all`` once per worker and then
    reproduced per test: SQLite copies the template file, PostgreSQL replays the captured DDL
    into a new schema in one round trip. Each test still has its own file or schema.
    """
    if backend == "sqlite":
        path = tmp_path / "test.db"
        if template_dir is not None:
            shutil.copyfile(await _sqlite_template(template_dir), path)
            return Database(f"sqlite+aiosqlite:///{path}"), None
        db = Database(f"sqlite+aiosqlite:///{path}")
        schema = None
    else:
        schema = "t_" + uuid.uuid4().hex[:12]
        if template_dir is not None:
            await _pg_execute(f'CREATE SCHEMA "{schema}"; SET search_path TO "{schema}";\n{await _pg_schema_ddl()}')
            return Database(PG_URL, connect_args={"server_settings": {"search_path": schema}}), schema
        await _pg_execute(f'CREATE SCHEMA "{schema}"')
        db = Database(PG_URL, connect_args={"server_settings": {"search_path": schema}})
    async with db.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    return db, schema


async def drop_database(db: Database, schema: str | None) -> None:
    await db.dispose()
    if schema is not None:
        await _pg_execute(f'DROP SCHEMA "{schema}" CASCADE')


async def _pg_execute(sql: str) -> None:
    """One simple-protocol round trip (several statements run as one transaction)."""
    conn = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


_templates: dict[str, Any] = {}  # per worker process: the SQLite template file, the PostgreSQL DDL


async def _sqlite_template(template_dir: Path) -> Path:
    path: Path | None = _templates.get("sqlite")
    if path is None:
        path = template_dir / "template.db"
        db = Database(f"sqlite+aiosqlite:///{path}")
        async with db.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        await db.dispose()
        # Closing the last connection checkpoints the WAL into the file; a copy must be whole.
        assert not path.with_name(path.name + "-wal").exists()
        _templates["sqlite"] = path
    return path


async def _pg_schema_ddl() -> str:
    """The statements ``create_all`` runs on an empty PostgreSQL schema, captured once."""
    ddl: str | None = _templates.get("postgresql")
    if ddl is None:
        schema = "tpl_" + uuid.uuid4().hex[:12]
        statements: list[str] = []

        def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
            assert not parameters, statement  # plain DDL only, or the replay would differ
            statements.append(statement)

        await _pg_execute(f'CREATE SCHEMA "{schema}"')
        db = Database(PG_URL, pool_size=1, max_overflow=0, connect_args={"server_settings": {"search_path": schema}})
        try:
            event.listen(db.engine.sync_engine, "before_cursor_execute", record)
            async with db.engine.begin() as conn:
                await conn.run_sync(Base.metadata.create_all, checkfirst=False)  # empty: nothing to check
        finally:
            await drop_database(db, schema)
        assert statements and not any(schema in s for s in statements)
        ddl = ";\n".join(statements)
        _templates["postgresql"] = ddl
    return ddl


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def db_template_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("db-template")


@pytest.fixture
async def db(backend: str, tmp_path: Path, db_template_dir: Path) -> AsyncIterator[Database]:
    database, schema = await create_database(backend, tmp_path, db_template_dir)
    try:
        yield database
    finally:
        await drop_database(database, schema)


@pytest.fixture
def keyring() -> KeyRing:
    return make_keyring()


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "sandbox_pay": True,
        "public_url": "http://127.0.0.1:8080",
        "admin_ids": "9000",
        "support_contact": "@quanyi_support",
        # A test user clicks faster than a person; the limits themselves are test_limits' subject.
        "chat_events_per_window": 1000,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def core(db: Database, keyring: KeyRing, settings: Settings) -> AsyncIterator[Core]:
    built = build_core(settings, db=db, keyring=keyring)
    yield built


def b64key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture(scope="session", autouse=True)
def _require_postgres() -> None:
    """Fail the run, not skip, when PostgreSQL is unreachable."""
    import asyncpg

    async def probe() -> None:
        dsn = PG_URL.replace("postgresql+asyncpg://", "postgresql://")
        conn = await asyncio.wait_for(asyncpg.connect(dsn), timeout=10)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:  # noqa: BLE001 - any failure here must stop the suite
        pytest.exit(f"PostgreSQL at {PG_URL} is unreachable ({type(exc).__name__}); the suite needs it", returncode=3)
