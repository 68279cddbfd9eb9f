"""The core's wiring: settings, database, keys, payment methods, recharge suppliers and the fulfiller.

Built once by the composition root (``quanyi.app``) or by a test; nothing here is a
module-level singleton.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from quanyi.core.books import ledger
from quanyi.core.books.service import BooksService
from quanyi.core.catalog.service import CatalogService
from quanyi.core.distributors.service import DistributorService
from quanyi.core.partners.service import PartnerService
from quanyi.core.payments import build_payment_hub
from quanyi.core.payments.partner import PartnerBalance
from quanyi.core.platform.audit_chain import Chain
from quanyi.core.platform.config import Settings
from quanyi.core.platform.crypto import KeyRing
from quanyi.core.platform.db import Database
from quanyi.core.platform.service import PlatformService
from quanyi.core.risk.service import RiskService
from quanyi.core.sales.fulfilment import Fulfiller
from quanyi.core.sales.service import SalesService
from quanyi.core.staff.service import StaffService
from quanyi.core.stock.service import StockService
from quanyi.core.suppliers import build_supplier_hub
from quanyi.core.support.service import SupportService
from quanyi.core.wiring import Wiring


@dataclass
class Core(Wiring):
    """The wiring plus one service per domain: what every door is handed."""

    catalog: CatalogService = field(init=False)
    stock: StockService = field(init=False)
    sales: SalesService = field(init=False)
    books: BooksService = field(init=False)
    distributors: DistributorService = field(init=False)
    partners: PartnerService = field(init=False)
    platform: PlatformService = field(init=False)
    risk: RiskService = field(init=False)
    support: SupportService = field(init=False)
    staff: StaffService = field(init=False)

    def __post_init__(self) -> None:
        self.catalog = CatalogService(self)
        self.stock = StockService(self)
        self.sales = SalesService(self)
        self.books = BooksService(self)
        self.distributors = DistributorService(self)
        self.partners = PartnerService(self)
        self.platform = PlatformService(self)
        self.risk = RiskService(self)
        self.support = SupportService(self)
        self.staff = StaffService(self)


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
