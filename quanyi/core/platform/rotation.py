"""Card-key encryption key rotation: which keys rows use, re-encryption under the active key.

Every batch is one short transaction and every row moves by a conditional UPDATE
(``WHERE id = :id AND key_id = :old``), so a concurrent change is never overwritten and an
interrupted run simply leaves rows under their old key, still readable, for the next run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update

from quanyi.core.errors import CardKeyError, ConfigError, InvalidInput
from quanyi.core.models import PartnerKey, RedeemToken, StockItem
from quanyi.core.partners.accounts import secret_aad
from quanyi.core.platform.config import Settings
from quanyi.core.platform.crypto import KEY_FILE, KeyRing, add_file_key, retire_file_keys
from quanyi.core.platform.db import Database, rowcount
from quanyi.core.platform.keycheck import verify_keyring
from quanyi.core.sales.redeem import token_aad
from quanyi.core.stock.items import item_aad

# What a rotation re-encrypts, in this order; the names are what progress lines call them.
CARD_KEYS = "card keys"
LINKS = "redemption links"
API_SECRETS = "partner API secrets"

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class KeyUsage:
    key_id: str
    card_keys: int
    links: int
    api_secrets: int = 0

    @property
    def rows(self) -> int:
        return self.card_keys + self.links + self.api_secrets


@dataclass
class RotationReport:
    active: str
    done: dict[str, int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)
    # Rows a concurrent change moved first; they are left to it (and to the next run).
    skipped: int = 0
    finished: bool = False


async def key_usage(db: Database) -> dict[str, KeyUsage]:
    """Rows per key id, over card keys, redemption links and partners' API secrets (ids no row
    uses are absent)."""
    async with db.read() as session:
        items = dict((await session.execute(select(StockItem.key_id, func.count()).group_by(StockItem.key_id))).all())
        links = dict(
            (await session.execute(select(RedeemToken.key_id, func.count()).group_by(RedeemToken.key_id))).all()
        )
        secrets = dict(
            (await session.execute(select(PartnerKey.key_id, func.count()).group_by(PartnerKey.key_id))).all()
        )
    return {
        k: KeyUsage(k, int(items.get(k, 0)), int(links.get(k, 0)), int(secrets.get(k, 0)))
        for k in sorted({*items, *links, *secrets})
    }


def unfinished(usage: dict[str, KeyUsage], keyring: KeyRing) -> bool:
    """Rows still sit under a key other than the active one: a rotation to finish."""
    return any(u.rows for k, u in usage.items() if k != keyring.active)


async def reencrypt(
    db: Database,
    keyring: KeyRing,
    *,
    batch: int = 500,
    max_batches: int | None = None,
    on_progress: Progress | None = None,
) -> RotationReport:
    """Re-encrypt every card key and redemption link not under the active key.

    Stops after ``max_batches`` batches when given (``finished`` is then False if rows are left).
    """
    if batch < 1:
        raise InvalidInput("--batch must be at least 1")
    usage = await key_usage(db)
    _require_loaded(usage, keyring)
    active = keyring.active
    report = RotationReport(active=active)
    report.total[CARD_KEYS] = sum(u.card_keys for k, u in usage.items() if k != active)
    report.total[LINKS] = sum(u.links for k, u in usage.items() if k != active)
    report.total[API_SECRETS] = sum(u.api_secrets for k, u in usage.items() if k != active)
    batches = 0
    for kind, table in ((CARD_KEYS, _ITEMS), (LINKS, _LINKS), (API_SECRETS, _SECRETS)):
        report.done[kind] = 0
        after = 0
        while max_batches is None or batches < max_batches:
            moved, skipped, after = await _batch(db, keyring, table, after, batch)
            if moved + skipped == 0:
                break
            batches += 1
            report.done[kind] += moved
            report.skipped += skipped
            if on_progress:
                on_progress(kind, report.done[kind], report.total[kind])
    report.finished = not unfinished(await key_usage(db), keyring)
    return report


@dataclass
class RotateOutcome:
    report: RotationReport
    from_env: bool
    added: str | None = None  # the key this run made (key file only)
    retired: list[str] = field(default_factory=list)  # removed from the key file
    removable: list[str] = field(default_factory=list)  # environment keys no row uses any more


async def rotate(
    db: Database,
    settings: Settings,
    *,
    batch: int = 500,
    resume: bool = False,
    max_batches: int | None = None,
    on_progress: Progress | None = None,
    on_start: Callable[[str | None, str, int], None] | None = None,
) -> RotateOutcome:
    """``quanyi keys rotate``: a new active key (key file), re-encryption, retirement of idle keys.

    A run that finds rows under a non-active key finishes that rotation and adds no key, so an
    interrupted rotation is resumed by running it again. Keys from the environment are never made
    here: the operator adds the new one and makes it active; this re-encrypts and names the idle ones.
    ``on_start`` hears (key added or None, active key id, rows to re-encrypt) before the first batch.
    """
    from_env = bool(settings.card_keys or settings.lookup_key)
    path = settings.data_dir / KEY_FILE
    keyring = KeyRing.load(settings)
    usage = await key_usage(db)
    _require_loaded(usage, keyring)
    outcome = RotateOutcome(report=RotationReport(active=keyring.active), from_env=from_env)
    if not unfinished(usage, keyring):
        if from_env and not _idle(keyring, usage):
            raise ConfigError(
                "keys come from QUANYI_CARD_KEYS, and rotate does not make keys there: add a new id:key to "
                "QUANYI_CARD_KEYS, set QUANYI_CARD_KEY_ACTIVE to its id, restart quanyi, then run this again"
            )
        if not from_env and not resume:
            outcome.added = add_file_key(path)
            keyring = KeyRing.load(settings)
            await verify_keyring(db, keyring)  # the new key's check is recorded before it encrypts a row
    if on_start:
        on_start(outcome.added, keyring.active, sum(u.rows for k, u in usage.items() if k != keyring.active))
    outcome.report = await reencrypt(db, keyring, batch=batch, max_batches=max_batches, on_progress=on_progress)
    if outcome.report.finished:
        idle = _idle(keyring, await key_usage(db))
        if from_env:
            outcome.removable = idle
        else:
            outcome.retired = retire_file_keys(path, idle)
    return outcome


def _require_loaded(usage: dict[str, KeyUsage], keyring: KeyRing) -> None:
    missing = sorted(k for k, u in usage.items() if u.rows and k not in keyring.enc_keys)
    if missing:
        raise CardKeyError(f"rows use key ids that are not loaded: {', '.join(missing)}; load them before rotating")


def _idle(keyring: KeyRing, usage: dict[str, KeyUsage]) -> list[str]:
    return sorted(k for k in keyring.enc_keys if k != keyring.active and not (k in usage and usage[k].rows))


class _Table:
    def __init__(self, model: Any, ct: str, aad: Callable[[Any], bytes], extra: tuple[str, ...]) -> None:
        self.model, self.ct, self.aad, self.extra = model, ct, aad, extra


_ITEMS = _Table(StockItem, "secret_ct", lambda r: item_aad(r.product_id), ("product_id",))
_LINKS = _Table(RedeemToken, "token_ct", lambda r: token_aad(r.product_id, r.token_hash), ("product_id", "token_hash"))
_SECRETS = _Table(PartnerKey, "secret_ct", lambda r: secret_aad(r.access_key), ("access_key",))


async def _batch(db: Database, keyring: KeyRing, table: _Table, after: int, size: int) -> tuple[int, int, int]:
    """One transaction: up to ``size`` rows with id > ``after`` not under the active key.

    Returns (rows moved, rows a concurrent change got to first, last id seen).
    """
    model, active = table.model, keyring.active
    ct_col = getattr(model, table.ct)
    columns = [model.id, model.key_id, ct_col, *(getattr(model, c) for c in table.extra)]
    moved = skipped = 0
    async with db.transaction() as session:
        rows = (
            await session.execute(
                select(*columns).where(model.key_id != active, model.id > after).order_by(model.id).limit(size)
            )
        ).all()
        for row in rows:
            aad = table.aad(row)
            plaintext = keyring.decrypt(row.key_id, getattr(row, table.ct), aad)
            key_id, blob = keyring.encrypt(plaintext, aad)
            result = await session.execute(
                update(model)
                .where(model.id == row.id, model.key_id == row.key_id)
                .values({"key_id": key_id, table.ct: blob})
                .execution_options(synchronize_session=False)
            )
            if rowcount(result):
                moved += 1
            else:
                skipped += 1
    return moved, skipped, rows[-1].id if rows else after
