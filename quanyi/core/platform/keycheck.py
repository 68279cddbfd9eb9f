"""The keyring must be the one the database was written with: key-check values, and where keys come from.

A key-check value is an HMAC of a fixed label under the key: it proves which key wrote the data
without revealing it. ``verify_keyring`` runs before any command or ``serve`` touches stored data;
a missing or foreign key is refused with one line naming the key id, never papered over with a
new key (that would mark orders delivered whose codes nobody can read, and let codes already sold
be imported again as new, since the duplicate check hashes with the lookup key).

Keys are made only for a database that holds no ciphertext (``init_keys``: ``quanyi db upgrade``
on a new database, ``quanyi keys init``).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.errors import CardKeyError, ConfigError
from quanyi.core.models import KeyCheck, PartnerKey, RedeemToken, StockItem
from quanyi.core.partners.accounts import secret_aad
from quanyi.core.platform.config import Settings
from quanyi.core.platform.crypto import KEY_FILE, KeyRing, create_key_file
from quanyi.core.platform.db import Database, upsert
from quanyi.core.sales.redeem import token_aad
from quanyi.core.stock.items import item_aad

_LABEL = b"quanyi key check v1"
_RESTORE = "restore the right keys.json (or QUANYI_CARD_KEYS / QUANYI_LOOKUP_KEY / QUANYI_AUDIT_KEY) from your backup"


def kcv(key: bytes) -> str:
    return hmac.new(key, _LABEL, hashlib.sha256).hexdigest()[:32]


def expected_checks(keyring: KeyRing) -> dict[str, str]:
    checks = {f"card:{key_id}": kcv(key) for key_id, key in keyring.enc_keys.items()}
    checks["lookup"] = kcv(keyring.lookup_key)
    checks["audit"] = kcv(keyring.audit_key)
    return checks


def _describe(name: str) -> str:
    if name.startswith("card:"):
        return f"card key {name.removeprefix('card:')}"
    return f"the {name} key"


async def verify_keyring(db: Database, keyring: KeyRing) -> None:
    """Refuse (``ConfigError`` naming the key id) a keyring that does not match the database's
    key checks; record the checks of keys new to the database.

    A database from before key checks that already holds ciphertext is proved by decrypting one
    row per key id in use (and re-hashing a code with the lookup key) before its checks are written.
    """
    want = expected_checks(keyring)
    async with db.read() as session:
        stored = await _stored(session)
        _compare(stored, want)
        await _require_unused(session, [n for n in stored if n not in want])
        new = {name: value for name, value in want.items() if name not in stored}
        if new and not stored:
            await _prove_by_trial(session, keyring)
    if not new:
        return
    async with db.transaction() as session:
        for name, value in new.items():
            await session.execute(upsert(session, KeyCheck).values(name=name, kcv=value).on_conflict_do_nothing())
    # Two processes starting at once with different keys: the first write wins, the other is refused.
    async with db.read() as session:
        _compare(await _stored(session), want)


async def holds_key_material(db: Database) -> bool:
    """Anything a lost key would make unreadable or unverifiable: ciphertext, or recorded key checks."""
    async with db.read() as session:
        found = await session.scalar(
            select(
                exists(select(KeyCheck.name))
                | exists(select(StockItem.id))
                | exists(select(RedeemToken.id))
                | exists(select(PartnerKey.id))
            )
        )
    return bool(found)


@dataclass(frozen=True)
class KeysReady:
    keyring: KeyRing
    created: bool  # a new key file was written
    source: str  # "environment" or the key file's path


async def init_keys(settings: Settings, db: Database, *, explicit: bool = False) -> KeysReady:
    """The keys of ``db``: the configured ones, checked; or, for a database that holds no
    ciphertext and no key checks, a new key file (0600). ``explicit`` (``quanyi keys init``)
    refuses an existing key file instead of using it."""
    path = settings.data_dir / KEY_FILE
    if settings.card_keys or settings.lookup_key:
        keyring = KeyRing.load(settings)
        await verify_keyring(db, keyring)
        return KeysReady(keyring, False, "environment")
    created = False
    if path.exists():
        if explicit:
            raise ConfigError(f"a key file already exists at {path}; quanyi uses it as it is")
    else:
        if await holds_key_material(db):
            raise ConfigError(
                f"the database holds encrypted data but there is no key file at {path}: restore keys.json from "
                "your backup (new keys could never read what is stored)"
            )
        created = create_key_file(path)
    keyring = KeyRing.load(settings)
    await verify_keyring(db, keyring)
    return KeysReady(keyring, created, str(path))


async def init_keys_at(settings: Settings) -> KeysReady:
    """``quanyi keys init``: ``init_keys`` on the database at the code's schema. It opens its own
    database because no core can be built before the keys exist."""
    from quanyi.core.platform.migrate import require_current

    db = Database(settings.resolved_database_url)
    try:
        await require_current(db.engine)
        return await init_keys(settings, db, explicit=True)
    finally:
        await db.dispose()


async def _stored(session: AsyncSession) -> dict[str, str]:
    return {name: value for name, value in (await session.execute(select(KeyCheck.name, KeyCheck.kcv))).all()}


def _compare(stored: dict[str, str], want: dict[str, str]) -> None:
    for name in sorted(stored):
        if name in want and not hmac.compare_digest(stored[name], want[name]):
            raise ConfigError(
                f"{_describe(name)} is not the key this database was written with: {_RESTORE}; quanyi refuses to run"
            )


def _missing(key_id: str) -> str:
    return f"card key {key_id} is missing from the keyring and data is encrypted with it: {_RESTORE}"


async def _require_unused(session: AsyncSession, names: list[str]) -> None:
    """A key id the database knows but the keyring lacks is fine once no row uses it (retired)."""
    for name in sorted(names):
        if not name.startswith("card:"):
            raise ConfigError(f"{_describe(name)} is missing from the keyring: {_RESTORE}")
        key_id = name.removeprefix("card:")
        in_use = await session.scalar(
            select(
                exists(select(StockItem.id).where(StockItem.key_id == key_id))
                | exists(select(RedeemToken.id).where(RedeemToken.key_id == key_id))
                | exists(select(PartnerKey.id).where(PartnerKey.key_id == key_id))
            )
        )
        if in_use:
            raise ConfigError(_missing(key_id))


async def _prove_by_trial(session: AsyncSession, keyring: KeyRing) -> None:
    """Before the first key checks of a database that already has ciphertext: every key id in use
    must decrypt a row of its own, and the lookup key must re-hash a decrypted code to its stored hash."""
    tables: tuple[type[StockItem] | type[RedeemToken] | type[PartnerKey], ...] = (StockItem, RedeemToken, PartnerKey)
    for table in tables:
        column = table.key_id
        for key_id in (await session.scalars(select(column).distinct())).all():
            if key_id not in keyring.enc_keys:
                raise ConfigError(_missing(key_id))
            row: StockItem | RedeemToken | PartnerKey = await session.scalar(
                select(table).where(column == key_id).limit(1)
            )
            plaintext, digest = _open(keyring, row)
            if plaintext is None:
                raise ConfigError(f"card key {key_id} is not the key this database was written with: {_RESTORE}")
            if digest is not None and not hmac.compare_digest(keyring.lookup_hash(plaintext), digest):
                raise ConfigError(f"the lookup key is not the key this database was written with: {_RESTORE}")


def _open(keyring: KeyRing, row: StockItem | RedeemToken | PartnerKey) -> tuple[str | None, bytes | None]:
    """A row's plaintext (None when the key does not open it) and the lookup hash it must have."""
    try:
        if isinstance(row, StockItem):
            return keyring.decrypt(row.key_id, row.secret_ct, item_aad(row.product_id)), row.secret_hash
        if isinstance(row, RedeemToken):
            aad = token_aad(row.product_id, row.token_hash)
            return keyring.decrypt(row.key_id, row.token_ct, aad), row.token_hash
        return keyring.decrypt(row.key_id, row.secret_ct, secret_aad(row.access_key)), None
    except CardKeyError:
        return None, None
