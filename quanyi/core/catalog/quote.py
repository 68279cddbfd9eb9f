"""Quoting an order from the database: the sale terms, the rules in force, the breakdown.

``place_order`` prices with this, the chat shows it before payment, ``quanyi price quote``
prints it: one engine, one answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.catalog import coupons, promotions
from quanyi.core.catalog.pricing import Breakdown, CouponRule, PricedLine, PromotionRule, Skipped, compute
from quanyi.core.distributors import accounts as distributors
from quanyi.core.errors import InvalidInput
from quanyi.core.models import Distributor, Product, ProductKind, utcnow
from quanyi.core.stock import allocations as channels
from quanyi.core.stock.allocations import SaleTerms


@dataclass(frozen=True)
class Quote:
    product: Product
    quantity: int
    terms: SaleTerms
    breakdown: Breakdown
    coupon: CouponRule | None  # the coupon to take when the order is placed
    promotions: tuple[PromotionRule, ...]  # in force for this product (the product card shows them)

    @property
    def refusal(self) -> Skipped | None:
        """Why the coupon the buyer gave does not apply (None when it does or none was given)."""
        return self.breakdown.coupon_refusal


def priced_line(product: Product, quantity: int, unit_price: int) -> PricedLine:
    return PricedLine(
        sku=product.sku,
        quantity=quantity,
        unit_price=unit_price,
        floor_price=product.floor_price or 0,
        category=product.category,
        name=product.name,
    )


@dataclass(frozen=True)
class ItemsQuote:
    """Several products priced together on one channel (one line each, in order)."""

    terms: tuple[SaleTerms, ...]
    breakdown: Breakdown
    coupon: CouponRule | None  # the coupon to take when the order is placed
    rules: tuple[PromotionRule, ...]  # the promotions in force on the channel

    @property
    def refusal(self) -> Skipped | None:
        return self.breakdown.coupon_refusal


async def quote_items(
    session: AsyncSession,
    items: Sequence[tuple[Product, int]],
    *,
    channel: str = channels.DEFAULT_CHANNEL,
    user_id: int | None = None,
    coupon_code: str | None = None,
    now: datetime | None = None,
) -> ItemsQuote:
    """What these products cost this buyer on ``channel`` now, and why: the promotions and the
    coupon apply to the items together (a threshold counts them all)."""
    now = now or utcnow()
    currencies = {product.currency for product, _ in items}
    if len(currencies) != 1:
        raise InvalidInput(
            "the products of one order must share a currency", key="err_catalog.one_currency", field="items"
        )
    terms = tuple(
        [
            await channels.sale_terms(
                session, product, channel=channel, user_id=user_id, needs_allocation=product.kind != ProductKind.BUNDLE
            )
            for product, _ in items
        ]
    )
    if len({t.channel for t in terms}) != 1:
        raise InvalidInput(
            "these products are sold on different channels: order them apart",
            key="err_catalog.one_channel",
            field="items",
        )
    rules = await promotions.rules_in_force(session, channel=terms[0].channel, now=now)
    rule: CouponRule | None = None
    refused: list[Skipped] = []
    if coupon_code is not None and coupon_code.strip():
        rule, refusal = await coupons.lookup(session, coupon_code, channel=terms[0].channel, user_id=user_id, now=now)
        if refusal is not None:
            refused.append(refusal)
    lines = [priced_line(product, quantity, t.unit_price) for (product, quantity), t in zip(items, terms, strict=True)]
    breakdown = compute(lines, currencies.pop(), rules, rule, refused=refused)
    return ItemsQuote(
        terms=terms,
        breakdown=breakdown,
        coupon=rule if breakdown.coupon is not None else None,
        rules=tuple(rules),
    )


async def quote_order(
    session: AsyncSession,
    product: Product,
    quantity: int,
    *,
    channel: str = channels.DEFAULT_CHANNEL,
    user_id: int | None = None,
    coupon_code: str | None = None,
    now: datetime | None = None,
) -> Quote:
    """What ``quantity`` of ``product`` costs this buyer on ``channel`` now, and why."""
    now = now or utcnow()
    quoted = await quote_items(
        session, [(product, quantity)], channel=channel, user_id=user_id, coupon_code=coupon_code, now=now
    )
    return Quote(
        product=product,
        quantity=quantity,
        terms=quoted.terms[0],
        breakdown=quoted.breakdown,
        coupon=quoted.coupon,
        promotions=tuple(promotions.covering(quoted.rules, product)),
    )


async def quote_bulk(session: AsyncSession, distributor: Distributor, product: Product, quantity: int) -> Breakdown:
    """A distributor's own purchase: its cost price (its own, else its tier's, else the list
    price), never under the floor. Promotions and coupons are for buyers, not for stock bought in bulk."""
    cost = max(await distributors.cost_price(session, distributor, product), product.floor_price or 0)
    return compute([priced_line(product, quantity, cost)], product.currency)
