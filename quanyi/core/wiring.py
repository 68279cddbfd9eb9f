"""What every service is built with: settings, the database, keys, payment methods, suppliers.

The composition root (``quanyi.core.services.build_core``) makes one ``Wiring`` and hands it to
each service; core modules that need more than a session take a ``Wiring``, never the root."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from quanyi.core.payments import PaymentHub
from quanyi.core.platform.config import Settings
from quanyi.core.platform.crypto import KeyRing
from quanyi.core.platform.db import Database
from quanyi.core.sales.fulfilment import Fulfiller
from quanyi.core.suppliers import SupplierHub


@dataclass
class Wiring:
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
