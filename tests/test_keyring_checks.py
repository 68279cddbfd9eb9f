"""Keys are never silently replaced: made only for a database without ciphertext, checked against the
database by every command and by ``serve`` before anything is served, refused with one line naming
the missing or wrong key."""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from quanyi.core.errors import ConfigError
from quanyi.core.models import KeyCheck
from quanyi.core.platform.crypto import KEY_FILE, KeyRing
from quanyi.core.platform.db import Database
from quanyi.core.platform.keycheck import init_keys, verify_keyring
from quanyi.core.services import build_core
from tests.conftest import b64key, make_keyring, make_settings
from tests.helpers import product_with_stock
from tests.test_cli import (
    Cli,
    LocalCli,
    pg_database,  # noqa: F401  (fixture)
    stock_table,
)

CODES = [f"CODE-{n:03d}-{secrets.token_hex(4)}" for n in range(6)]


@pytest.fixture(params=["sqlite", "postgresql"])
def shop(request: pytest.FixtureRequest, tmp_path: Path) -> LocalCli:
    """A database made by `quanyi db upgrade` with a product and six codes imported."""
    url = request.getfixturevalue("pg_database") if request.param == "postgresql" else None
    cli = LocalCli(tmp_path, url)
    cli.ok("db", "upgrade")
    cli.ok("product", "add", "--sku", "VIP", "--name", "VIP", "--kind", "card_key", "--price", "15.00")
    (tmp_path / "codes.txt").write_text("\n".join(CODES[:4]) + "\n")
    cli.ok("stock", "import", "VIP", str(tmp_path / "codes.txt"))
    return cli


def test_db_upgrade_makes_keys_for_a_new_database_and_the_sqlite_files_are_private(tmp_path):
    cli = LocalCli(tmp_path)
    old_umask = os.umask(0o022)
    try:
        out = cli.ok("db", "upgrade")
        cli.ok("product", "add", "--sku", "VIP", "--name", "VIP", "--kind", "card_key", "--price", "15.00")
    finally:
        os.umask(old_umask)
    assert "created the encryption keys" in out and "back it up" in out
    key_file = cli.data_dir / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    database = cli.data_dir / "quanyi.db"
    for path in (database, database.with_name("quanyi.db-wal"), database.with_name("quanyi.db-shm")):
        if path.exists() or path == database:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert "created" not in cli.ok("db", "upgrade")  # the second run uses the keys it made
    assert stat.S_IMODE(cli.data_dir.stat().st_mode) & 0o077 == 0


async def test_a_new_sqlite_database_file_is_created_0600_with_its_wal(tmp_path):
    old_umask = os.umask(0)  # the mode must not depend on a lenient umask
    try:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'fresh' / 'q.db'}")
        async with db.engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            await conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        wal = tmp_path / "fresh" / "q.db-wal"
        assert wal.exists()
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "fresh" / "q.db-shm").stat().st_mode) == 0o600
        await db.dispose()
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "fresh" / "q.db").stat().st_mode) == 0o600


def test_a_lost_key_file_is_never_recreated_and_every_command_refuses(shop):
    key_file = shop.data_dir / KEY_FILE
    key_file.unlink()
    for command in (("stock", "show"), ("product", "list"), ("order", "list"), ("keys", "status")):
        reason = shop.fails(*command)
        assert "no key file" in reason and "backup" in reason, (command, reason)
        assert not key_file.exists(), command
    reason = as_process(shop).fails("serve")
    assert "no key file" in reason and not key_file.exists()
    reason = shop.fails("db", "upgrade")
    assert "holds encrypted data" in reason and not key_file.exists()
    assert "holds encrypted data" in shop.fails("keys", "init")
    assert not key_file.exists()


def test_a_foreign_key_file_is_refused_naming_the_key_and_sold_codes_cannot_come_back(shop, tmp_path):
    key_file = shop.data_dir / KEY_FILE
    original = key_file.read_text()
    foreign = json.loads(original)
    foreign["enc_keys"]["k1"] = b64key()
    foreign["lookup_key"] = b64key()
    key_file.write_text(json.dumps(foreign))
    reason = shop.fails("stock", "show")
    assert "card key k1" in reason and "not the key this database was written with" in reason
    # The re-import of codes already stored (which a new lookup key would not see as duplicates):
    assert "card key k1" in shop.fails("stock", "import", "VIP", str(tmp_path / "codes.txt"))
    assert "card key k1" in as_process(shop).fails("serve")

    foreign["enc_keys"]["k1"] = json.loads(original)["enc_keys"]["k1"]  # the right card key, a wrong lookup key
    key_file.write_text(json.dumps(foreign))
    assert "the lookup key is not the key" in shop.fails("stock", "show")

    key_file.write_text(original)
    assert stock_table(shop.ok("stock", "show"))["VIP"]["available"] == 4
    assert "duplicate 4" in shop.ok("stock", "import", "VIP", str(tmp_path / "codes.txt"))


def test_serve_refuses_a_foreign_key_before_it_listens(tmp_path):
    cli = LocalCli(tmp_path)
    cli.ok("db", "upgrade")
    key_file = cli.data_dir / KEY_FILE
    data = json.loads(key_file.read_text())
    data["audit_key"] = b64key()
    key_file.write_text(json.dumps(data))
    port = _free_port()
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("quanyi")), "serve"],
        env={**cli.env, "QUANYI_HTTP_PORT": str(port)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "quanyi: the audit key is not the key this database was written with: restore the right keys.json "
        "(or QUANYI_CARD_KEYS / QUANYI_LOOKUP_KEY / QUANYI_AUDIT_KEY) from your backup; quanyi refuses to run"
    ]
    assert "serving" not in proc.stdout + proc.stderr


def test_keys_init_makes_keys_once_for_an_empty_database(tmp_path):
    cli = LocalCli(tmp_path)
    cli.ok("db", "upgrade")
    (cli.data_dir / KEY_FILE).unlink()  # made by db upgrade; the database holds only its key checks
    assert "holds encrypted data" in cli.fails("keys", "init")
    (tmp_path / "other").mkdir()
    fresh = LocalCli(tmp_path / "other")
    fresh.env["QUANYI_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
    _upgrade_without_keys(fresh.env["QUANYI_DATABASE_URL"])
    assert "created the encryption keys" in fresh.ok("keys", "init")
    assert "already exists" in fresh.fails("keys", "init")
    fresh.ok("product", "add", "--sku", "VIP", "--name", "VIP", "--kind", "card_key", "--price", "15.00")


def test_keys_from_the_environment_are_checked_by_id(tmp_path):
    old, lookup = b64key(), b64key()
    cli = LocalCli(tmp_path)
    cli.env.update({"QUANYI_CARD_KEYS": f"k1:{old}", "QUANYI_LOOKUP_KEY": lookup})
    cli.ok("db", "upgrade")
    assert not (cli.data_dir / KEY_FILE).exists()  # keys from the environment write no key file
    cli.ok("product", "add", "--sku", "VIP", "--name", "VIP", "--kind", "card_key", "--price", "15.00")
    (tmp_path / "codes.txt").write_text("ENV-CODE-1\nENV-CODE-2\n")
    cli.ok("stock", "import", "VIP", str(tmp_path / "codes.txt"))

    cli.env["QUANYI_CARD_KEYS"] = f"k2:{b64key()}"  # the key in use left out
    assert "card key k1 is missing from the keyring" in cli.fails("stock", "show")
    cli.env["QUANYI_CARD_KEYS"] = f"k1:{b64key()}"  # another key under the same id
    assert "card key k1 is not the key" in cli.fails("stock", "show")
    cli.env["QUANYI_CARD_KEYS"] = f"k1:{old}"
    cli.env["QUANYI_AUDIT_KEY"] = b64key()
    assert "the audit key is not the key" in cli.fails("stock", "show")
    del cli.env["QUANYI_AUDIT_KEY"]
    assert stock_table(cli.ok("stock", "show"))["VIP"]["available"] == 2
    assert not (cli.data_dir / KEY_FILE).exists()


async def test_the_check_values_are_recorded_and_a_retired_key_may_be_dropped(db, tmp_path):
    settings = make_settings(tmp_path)
    keyring = make_keyring()
    await verify_keyring(db, keyring)
    async with db.read() as session:
        names = set((await session.scalars(select(KeyCheck.name))).all())
        values = (await session.scalars(select(KeyCheck.kcv))).all()
    assert names == {"card:k1", "lookup", "audit"}
    raw = [keyring.enc_keys["k1"], keyring.lookup_key, keyring.audit_key]
    assert not any(base64.b64encode(k).decode() in v or k.hex() in v for k in raw for v in values)

    core = build_core(settings, db=db, keyring=keyring)
    await product_with_stock(core, tmp_path, units=2)
    rotated = KeyRing({**keyring.enc_keys, "k2": secrets.token_bytes(32)}, "k2", keyring.lookup_key)
    rotated = KeyRing(rotated.enc_keys, "k2", keyring.lookup_key, keyring.sandbox_key, keyring.audit_key)
    await verify_keyring(db, rotated)  # a key new to the database is recorded
    only_new = KeyRing({"k2": rotated.enc_keys["k2"]}, "k2", keyring.lookup_key, b"", keyring.audit_key)
    with pytest.raises(ConfigError, match="card key k1 is missing"):  # rows still use k1
        await verify_keyring(db, only_new)


async def test_a_database_from_before_key_checks_is_proved_by_decrypting_before_its_checks_are_written(db, tmp_path):
    settings = make_settings(tmp_path)
    keyring = make_keyring()
    core = build_core(settings, db=db, keyring=keyring)
    await product_with_stock(core, tmp_path, units=3)
    async with db.transaction() as session:
        await session.execute(delete(KeyCheck))  # as a database upgraded from 0013 has none

    foreign = KeyRing({"k1": secrets.token_bytes(32)}, "k1", keyring.lookup_key)
    with pytest.raises(ConfigError, match="card key k1 is not the key"):
        await verify_keyring(db, foreign)
    wrong_lookup = KeyRing(keyring.enc_keys, "k1", secrets.token_bytes(32))
    with pytest.raises(ConfigError, match="the lookup key is not the key"):
        await verify_keyring(db, wrong_lookup)
    async with db.read() as session:
        assert (await session.scalars(select(KeyCheck.name))).all() == []

    await verify_keyring(db, keyring)
    async with db.read() as session:
        assert len((await session.scalars(select(KeyCheck.name))).all()) == 3


async def test_init_keys_never_writes_a_key_file_beside_ciphertext(db, tmp_path):
    settings = make_settings(tmp_path)
    core = build_core(settings, db=db, keyring=make_keyring())
    await product_with_stock(core, tmp_path, units=1)
    with pytest.raises(ConfigError, match="holds encrypted data"):
        await init_keys(settings, db)
    assert not (settings.data_dir / KEY_FILE).exists()


def as_process(cli: LocalCli) -> Cli:
    """The same command line as a real process (``serve`` configures the process's logging)."""
    proc = Cli(cli.cwd)
    proc.env = {**cli.env, "QUANYI_HTTP_PORT": str(_free_port())}
    return proc


def _upgrade_without_keys(url: str) -> None:
    import asyncio

    from quanyi.core.platform.migrate import upgrade

    async def run() -> None:
        db = Database(url)
        try:
            await upgrade(db.engine)
        finally:
            await db.dispose()

    asyncio.run(run())


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
