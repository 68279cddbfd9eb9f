"""The core's wiring: settings, database, keys, payment methods, recharge suppliers and the fulfiller.

Built once by the composition root (``quanyi.app``) or by a test; nothing here is a
module-level singleton.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from quanyi.core.books import ledger
from quanyi.core.payments import PaymentHub, build_payment_hub
from quanyi.core.payments.partner import PartnerBalance
from quanyi.core.platform.audit_chain import Chain
from quanyi.core.platform.config import Settings
from quanyi.core.platform.crypto import KeyRing
from quanyi.core.platform.db import Database
from quanyi.core.sales.fulfilment import Fulfiller
from quanyi.core.suppliers import SupplierHub, build_supplier_hub


@dataclass
class Core:
    settings: Settings
    db: Database
    keyring: KeyRing
    payments: PaymentHub
    fulfiller: Fulfiller
    # Set after a commit that wrote outbox messages, so the sender wakes at once.
    outbox_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    suppliers: SupplierHub = field(default_factory=lambda: SupplierHub([]))

    @property
    def reservation(self) -> timedelta:
        return timedelta(minutes=self.settings.reservation_minutes)

    async def close(self) -> None:
        await self.db.dispose()


async def open_checked(settings: Settings) -> tuple[Database, KeyRing]:
    """The database and the keyring, in the order a person can act on: the database reachable and
    at the code's schema, then the keys present and the ones it was written with."""
    from quanyi.core.platform.keycheck import verify_keyring
    from quanyi.core.platform.migrate import require_current

    db = Database(settings.resolved_database_url)
    try:
        await require_current(db.engine)
        keyring = KeyRing.load(settings)
        await verify_keyring(db, keyring)
    except BaseException:
        await db.dispose()
        raise
    return db, keyring


def build_core(settings: Settings, *, db: Database | None = None, keyring: KeyRing | None = None) -> Core:
    keyring = keyring or KeyRing.load(settings)
    db = db or Database(settings.resolved_database_url)
    db.audit_chain = Chain(keyring.audit_key)  # the trail is keyed in every session the core opens
    payments = build_payment_hub(settings, keyring)
    payments.add(PartnerBalance(db))
    wakeup = asyncio.Event()
    fulfiller = Fulfiller(
        db,
        admin_ids=settings.admin_id_list,
        keyring=keyring,
        on_commit=wakeup.set,
        fees=ledger.parse_fees(settings.provider_fees),
    )
    return Core(
        settings=settings,
        db=db,
        keyring=keyring,
        payments=payments,
        fulfiller=fulfiller,
        outbox_wakeup=wakeup,
        suppliers=build_supplier_hub(settings),
    )
