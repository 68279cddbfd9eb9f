"""GET /readyz (issue 15, item 11): ready only when the database commits a write, the schema is at
head and the keyring is the one the data was written with; /healthz stays a liveness check."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from quanyi.core.platform.crypto import KeyRing
from quanyi.core.platform.db import Database
from quanyi.core.platform.migrate import upgrade
from quanyi.core.services import Core, build_core
from quanyi.webhooks import create_app
from tests.conftest import PG_URL, _pg_execute, make_keyring, make_settings


@pytest.fixture
async def database(backend: str, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """A database built by the real migrations; yields how to open it (again)."""
    if backend == "sqlite":
        spec: dict[str, Any] = {"url": f"sqlite+aiosqlite:///{tmp_path / 'ready.db'}", "server_settings": None}
    else:
        schema = "r_" + uuid.uuid4().hex[:12]
        await _pg_execute(f'CREATE SCHEMA "{schema}"')
        spec = {"url": PG_URL, "server_settings": {"search_path": schema}}
    db = open_db(spec)
    try:
        await upgrade(db.engine)
    finally:
        await db.dispose()
    try:
        yield spec
    finally:
        if spec["server_settings"] is not None:
            await _pg_execute(f'DROP SCHEMA "{spec["server_settings"]["search_path"]}" CASCADE')


def open_db(spec: dict[str, Any], *, read_only: bool = False) -> Database:
    if spec["server_settings"] is None:
        db = Database(spec["url"])
        if read_only:
            # As a read-only file or a full disk does: reads answer, every write is refused.
            event.listen(db.engine.sync_engine, "connect", _query_only)
        return db
    settings = dict(spec["server_settings"])
    if read_only:
        settings["default_transaction_read_only"] = "on"
    return Database(spec["url"], connect_args={"server_settings": settings})


def _query_only(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only = ON")
    cursor.close()


async def readyz(db: Database, keyring: KeyRing, tmp_path: Path) -> tuple[int, dict[str, Any], int]:
    """(/readyz status, its JSON, /healthz status) from an app over ``db``."""
    core: Core = build_core(make_settings(tmp_path), db=db, keyring=keyring)
    client = create_app(core).test_client()
    ready = await client.get("/readyz")
    live = await client.get("/healthz")
    return ready.status_code, await ready.get_json(), live.status_code


async def test_ready_when_the_database_takes_a_write_the_schema_is_current_and_the_keys_match(database, tmp_path):
    db = open_db(database)
    try:
        assert await readyz(db, make_keyring(), tmp_path) == (200, {"status": "ready"}, 200)
    finally:
        await db.dispose()


async def test_unready_when_the_database_refuses_writes_while_healthz_stays_ok(database, tmp_path):
    keyring = make_keyring()
    db = open_db(database)
    try:
        assert (await readyz(db, keyring, tmp_path))[0] == 200  # its key checks are recorded
    finally:
        await db.dispose()
    read_only = open_db(database, read_only=True)
    try:
        status, answer, live = await readyz(read_only, keyring, tmp_path)
    finally:
        await read_only.dispose()
    assert (status, answer) == (503, {"status": "unready", "reason": "the database refuses writes"})
    assert live == 200  # liveness: the process and the database answer


async def test_unready_when_the_schema_is_behind_or_the_keyring_is_not_the_databases(database, tmp_path):
    db = open_db(database)
    try:
        keyring = make_keyring()
        assert (await readyz(db, keyring, tmp_path))[0] == 200
        # Another card key under the same id than the one the data was written with: named, never shown.
        stranger = KeyRing({"k1": secrets.token_bytes(32)}, "k1", keyring.lookup_key, audit_key=keyring.audit_key)
        status, answer, _ = await readyz(db, stranger, tmp_path)
        assert status == 503 and answer["status"] == "unready"
        assert "card key k1" in answer["reason"]
        assert all(key.hex() not in str(answer) for key in stranger.enc_keys.values())

        async with db.transaction() as session:
            await session.execute(text("UPDATE alembic_version SET version_num = '0001'"))
        status, answer, live = await readyz(db, keyring, tmp_path)
        assert (status, answer["status"], live) == (503, "unready", 200)
        assert "quanyi db upgrade" in answer["reason"]
    finally:
        await db.dispose()
