"""The web console's read side of the stock: a product's unsold codes described without their
secrets (the serial printed beside a code, its batch, import date and expiry), read page by page
so an export of a million codes runs in constant memory."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.catalog.products import get_product
from quanyi.core.models import StockBatch, StockItem, StockStatus

UNSOLD = (StockStatus.AVAILABLE, StockStatus.RESERVED)
MAX_PAGE = 5000


@dataclass(frozen=True)
class SerialRow:
    """One unsold code, never its secret: the serial is the number printed beside a card's
    password (absent for files that carry the code alone), the id names the row on its own."""

    item_id: int
    serial: str | None
    status: str  # available | reserved
    batch_id: int | None
    source: str | None  # the imported file's name
    imported_at: datetime
    expires_at: datetime | None


async def unsold_serials(session: AsyncSession, sku: str, *, after: int = 0, limit: int = 1000) -> list[SerialRow]:
    """The product's available and reserved codes with ids above ``after``, oldest first, at most
    ``limit`` (a page); ``NotFound`` when there is no such product."""
    product = await get_product(session, sku)
    rows = await session.execute(
        select(
            StockItem.id,
            StockItem.serial,
            StockItem.status,
            StockItem.batch_id,
            StockBatch.source,
            StockItem.created_at,
            StockItem.expires_at,
        )
        .outerjoin(StockBatch, StockBatch.id == StockItem.batch_id)
        .where(StockItem.product_id == product.id, StockItem.status.in_(UNSOLD), StockItem.id > after)
        .order_by(StockItem.id)
        .limit(max(1, min(limit, MAX_PAGE)))
    )
    return [
        SerialRow(item_id, serial, str(status), batch_id, source, created_at, expires_at)
        for item_id, serial, status, batch_id, source, created_at, expires_at in rows.all()
    ]
