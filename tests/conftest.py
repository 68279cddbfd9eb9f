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
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from quanyi.core.config import Settings
from quanyi.core.crypto import KeyRing
from quanyi.core.db import Database
from quanyi.core.models import Base
from quanyi.core.services import Core, build_core

PG_URL = os.environ.get("QUANYI_TEST_DATABASE_URL", "postgresql+asyncpg://root@127.0.0.1:5432/test")


def make_keyring() -> KeyRing:
    return KeyRing({"k1": secrets.token_bytes(32)}, "k1", secrets.token_bytes(32), sandbox_key=secrets.token_bytes(32))


async def create_database(backend: str, tmp_path: Path) -> tuple[Database, str | None]:
    """A fresh, empty database with the schema created from the models."""
    if backend == "sqlite":
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'test.db'}")
        schema = None
    else:
        schema = "t_" + uuid.uuid4().hex[:12]
        admin = Database(PG_URL, pool_size=1, max_overflow=0)
        async with admin.engine.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await admin.dispose()
        db = Database(PG_URL, connect_args={"server_settings": {"search_path": schema}})
    async with db.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    return db, schema


async def drop_database(db: Database, schema: str | None) -> None:
    await db.dispose()
    if schema is not None:
        admin = Database(PG_URL, pool_size=1, max_overflow=0)
        async with admin.engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def db(backend: str, tmp_path: Path) -> AsyncIterator[Database]:
    database, schema = await create_database(backend, tmp_path)
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
