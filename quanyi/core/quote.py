"""Quoting an order from the database: the sale terms, the rules in force, the breakdown.

``place_order`` prices with this, the chat shows it before payment, ``quanyi price quote``
prints it: one engine, one answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core import channels, coupons, distributors, promotions
from quanyi.core.channels import SaleTerms
from quanyi.core.models import Distributor, Product, ProductKind, utcnow
from quanyi.core.pricing import Breakdown, CouponRule, PricedLine, PromotionRule, Skipped, compute


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
    terms = await channels.sale_terms(
        session, product, channel=channel, user_id=user_id, needs_allocation=product.kind != ProductKind.BUNDLE
    )
    rules = await promotions.rules_in_force(session, channel=terms.channel, now=now)
    mine = tuple(promotions.covering(rules, product))
    rule: CouponRule | None = None
    refused: list[Skipped] = []
    if coupon_code is not None and coupon_code.strip():
        rule, refusal = await coupons.lookup(session, coupon_code, channel=terms.channel, user_id=user_id, now=now)
        if refusal is not None:
            refused.append(refusal)
    breakdown = compute(
        [priced_line(product, quantity, terms.unit_price)], product.currency, rules, rule, refused=refused
    )
    applied = breakdown.coupon
    return Quote(
        product=product,
        quantity=quantity,
        terms=terms,
        breakdown=breakdown,
        coupon=rule if applied is not None else None,
        promotions=mine,
    )


async def quote_bulk(session: AsyncSession, distributor: Distributor, product: Product, quantity: int) -> Breakdown:
    """A distributor's own purchase: its cost price (its own, else its tier's, else the list
    price), never under the floor. Promotions and coupons are for buyers, not for stock bought in bulk."""
    cost = max(await distributors.cost_price(session, distributor, product), product.floor_price or 0)
    return compute([priced_line(product, quantity, cost)], product.currency)
