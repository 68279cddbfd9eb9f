"""What the operator console shows of one channel: its price list beside each product's list price."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.models import ChannelPrice, Product
from quanyi.core.stock import allocations
from quanyi.core.stock.views import ChannelView, channel_view


@dataclass(frozen=True)
class PriceLine:
    sku: str
    name: str
    list_price: int
    price: int | None  # None: sells at the list price
    currency: str


@dataclass(frozen=True)
class PriceList:
    channel: ChannelView
    lines: tuple[PriceLine, ...]  # every product, priced ones first


async def price_list(session: AsyncSession, holder: str) -> PriceList:
    """A channel's (code, or a distributor by reference) price for each product."""
    channel = await allocations.resolve_holder(session, holder)
    own = {
        product_id: int(price)
        for product_id, price in (
            await session.execute(
                select(ChannelPrice.product_id, ChannelPrice.price).where(ChannelPrice.channel_id == channel.id)
            )
        ).all()
    }
    products = (await session.scalars(select(Product).order_by(Product.sku))).all()
    lines = [PriceLine(p.sku, p.name, p.price, own.get(p.id), p.currency) for p in products]
    lines.sort(key=lambda line: line.price is None)
    return PriceList(channel_view(channel), tuple(lines))
