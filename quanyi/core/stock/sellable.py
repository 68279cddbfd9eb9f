"""The one sellable figure per product that every door shows (``stock show``, the chat stock
view, the web catalogue, the buyer's bot): what the shop's own channel can sell now, and the
units sold. Card keys count the pool's unreserved codes less other channels' quotas (or the
channel's own quota); a bundle is as many as its scarcest part allows; links and recharges are
issued on demand, capped only by a quota."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.models import BundleComponent, Order, OrderLine, OrderStatus, Product, ProductKind
from quanyi.core.stock.allocations import DEFAULT_CHANNEL, UNCAPPED, sellable_counts

# Orders whose units count as sold: paid, and not cancelled, failed or refunded since.
_SOLD = (OrderStatus.PAID, OrderStatus.DELIVERED)


@dataclass(frozen=True)
class Sellable:
    units: int  # what can be sold now; UNCAPPED when on demand
    sold: int  # units sold of a link, recharge or bundle (bundles, not their parts); 0 for card keys
    price: int = 0  # the unit price on that channel (for that buyer), in the product's currency

    @property
    def on_demand(self) -> bool:
        return self.units >= UNCAPPED


async def sellable(
    session: AsyncSession, products: Sequence[Product], *, channel: str = DEFAULT_CHANNEL, user_id: int | None = None
) -> dict[int, Sellable]:
    """Each product's figure on ``channel`` (the shop's bot by default), by product id; for
    ``user_id``, on the storefront that sells to that buyer (a referring distributor's quota)."""
    counts = await sellable_counts(session, products, channel=channel, user_id=user_id)
    # Card keys count what they sold in their pool (``stock_levels``); the rest have no pool.
    sold = await sold_units(session, [p.id for p in products if p.kind != ProductKind.CARD_KEY])
    return {p.id: Sellable(counts[p.id][0], sold.get(p.id, 0), counts[p.id][1]) for p in products}


def bundle_units() -> Select[int, int | None, int]:
    """Per order and bundle: how many bundles its lines hold. A bundle is written as one line per
    part of ``bundles × part quantity``; the quotient is taken against the parts as they are now
    (a part removed since counts its line's quantity, the smallest quotient wins)."""
    per_part = OrderLine.quantity // func.coalesce(BundleComponent.quantity, 1)
    return (
        select(
            OrderLine.order_id.label("order_id"),
            OrderLine.bundle_id.label("bundle_id"),
            func.min(per_part).label("units"),
        )
        .outerjoin(
            BundleComponent,
            (BundleComponent.bundle_id == OrderLine.bundle_id) & (BundleComponent.component_id == OrderLine.product_id),
        )
        .where(OrderLine.bundle_id.is_not(None))
        .group_by(OrderLine.order_id, OrderLine.bundle_id)
    )


async def sold_units(session: AsyncSession, product_ids: Iterable[int]) -> dict[int, int]:
    """Units sold per product, its own lines and those it was sold in as a bundle's part; a
    bundle counts bundles."""
    ids = list(product_ids)
    if not ids:
        return {}
    paid = select(Order.id).where(Order.status.in_(_SOLD))
    own = await session.execute(
        select(OrderLine.product_id, func.sum(OrderLine.quantity))
        .where(OrderLine.product_id.in_(ids), OrderLine.order_id.in_(paid))
        .group_by(OrderLine.product_id)
    )
    out = {int(pid): int(n or 0) for pid, n in own.all()}
    per_order = bundle_units().where(OrderLine.bundle_id.in_(ids), OrderLine.order_id.in_(paid)).subquery()
    bundles = await session.execute(
        select(per_order.c.bundle_id, func.sum(per_order.c.units)).group_by(per_order.c.bundle_id)
    )
    out.update({int(bid): int(n or 0) for bid, n in bundles.all()})
    return out
