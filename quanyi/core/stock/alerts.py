"""Low-stock alerts: once per downward crossing of a pool's or an allocation's threshold.

A level at or under its threshold raises the alert by flipping ``alerted`` from false to
true in a conditional UPDATE, and only the transaction that flipped it writes the outbox
messages: two scheduler runs (or replicas) never alert twice. A level back above its
threshold (a refill, a take-back undone, expiries returning units) re-arms it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.models import (
    Allocation,
    AllocationMode,
    Channel,
    Distributor,
    Product,
    StockItem,
    StockStatus,
    User,
    utcnow,
)
from quanyi.core.platform import outbox
from quanyi.core.platform.db import rowcount


@dataclass(frozen=True)
class StockAlert:
    sku: str
    channel: str | None  # None = the product's pool
    left: int
    threshold: int


async def check_stock(session: AsyncSession, admin_ids: list[int]) -> list[StockAlert]:
    """Raise alerts for levels that crossed their threshold since the last run; re-arm the rest."""
    raised: list[StockAlert] = []
    now = utcnow()
    products = list(await session.scalars(select(Product).where(Product.low_stock_threshold > 0)))
    if products:
        counts = dict(
            (
                await session.execute(
                    select(StockItem.product_id, func.count())
                    .where(
                        StockItem.product_id.in_([p.id for p in products]),
                        StockItem.status == StockStatus.AVAILABLE,
                        StockItem.expires_at.is_(None) | (StockItem.expires_at > now),
                    )
                    .group_by(StockItem.product_id)
                )
            ).all()
        )
        for product in products:
            left = int(counts.get(product.id, 0))
            low = left <= product.low_stock_threshold
            flipped = await session.execute(
                update(Product)
                .where(Product.id == product.id, Product.low_stock_alerted == (not low))
                .values(low_stock_alerted=low)
            )
            if low and rowcount(flipped):
                alert = StockAlert(product.sku, None, left, product.low_stock_threshold)
                await outbox.enqueue_admins(session, admin_ids, "stock_low", _payload(product, alert))
                raised.append(alert)

    rows = (
        await session.execute(
            select(Allocation, Product, Channel)
            .join(Product, Product.id == Allocation.product_id)
            .join(Channel, Channel.id == Allocation.channel_id)
            .where(Allocation.threshold > 0, Allocation.mode == AllocationMode.QUOTA)
        )
    ).all()
    for allocation, product, channel in rows:
        left = allocation.allocated - allocation.reserved - allocation.sold
        low = left <= allocation.threshold
        flipped = await session.execute(
            update(Allocation)
            .where(Allocation.id == allocation.id, Allocation.alerted == (not low))
            .values(alerted=low)
        )
        if not (low and rowcount(flipped)):
            continue
        alert = StockAlert(product.sku, channel.code, left, allocation.threshold)
        payload = _payload(product, alert)
        await outbox.enqueue_admins(session, admin_ids, "stock_low", payload)
        owner = (
            await session.execute(
                select(Distributor.user_id, User.language)
                .outerjoin(User, User.id == Distributor.user_id)
                .where(Distributor.channel_id == channel.id)
            )
        ).first()
        if owner is not None and owner[0] not in admin_ids:
            outbox.enqueue(session, chat_id=owner[0], kind="stock_low", payload=payload, language=owner[1] or "zh")
        raised.append(alert)
    return raised


def _payload(product: Product, alert: StockAlert) -> dict[str, object]:
    return {
        "sku": product.sku,
        "name": product.name,
        "channel": alert.channel,
        "left": alert.left,
        "threshold": alert.threshold,
    }
