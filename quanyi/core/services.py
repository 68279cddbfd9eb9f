"""The core's wiring: settings, database, keys, payment methods, recharge suppliers and the fulfiller.

Built once by the composition root (``quanyi.app``) or by a test; nothing here is a
module-level singleton.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from quanyi.core import ledger
from quanyi.core.config import Settings
from quanyi.core.crypto import KeyRing
from quanyi.core.db import Database
from quanyi.core.fulfilment import Fulfiller
from quanyi.core.payments import PaymentHub, build_payment_hub
from quanyi.core.payments.partner import PartnerBalance
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


def build_core(settings: Settings, *, db: Database | None = None, keyring: KeyRing | None = None) -> Core:
    keyring = keyring or KeyRing.load(settings)
    db = db or Database(settings.resolved_database_url)
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
