"""Promotions: spend-threshold discounts (满减 / 满折) and N-for-M unit prices, in force over a
window on some channels; the pricing engine decides which one applies to an order."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.catalog.coupons import check_scope, check_window, join_scope
from quanyi.core.catalog.pricing import BASIS_POINTS, PromotionRule, in_window, scope_set
from quanyi.core.errors import InvalidInput, NotFound
from quanyi.core.models import Product, Promotion, PromotionKind, Stacking, utcnow
from quanyi.core.money import exponent


async def add_promotion(
    session: AsyncSession,
    *,
    name: str,
    kind: str,
    threshold: int,
    value: int,
    currency: str,
    cap: int | None = None,
    skus: Sequence[str] = (),
    categories: Sequence[str] = (),
    channels: Sequence[str] = (),
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    stacking: str = Stacking.STACK,
) -> Promotion:
    """``spend_off``: spend ``threshold`` minor units, ``value`` minor units off;
    ``spend_percent``: spend ``threshold``, ``value`` basis points off (at most ``cap``);
    ``units_price``: every ``threshold`` units of a product cost ``value`` hundredths of a unit
    (3 for the price of 2.5: threshold 3, value 250)."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise InvalidInput("name: 1-100 characters", key="err_catalog.rule_name")
    exponent(currency)
    if kind == PromotionKind.SPEND_OFF:
        if value <= 0 or threshold < 0:
            raise InvalidInput("spend at least 0 and get more than 0 off", key="err_catalog.spend_off")
    elif kind == PromotionKind.SPEND_PERCENT:
        if not 0 < value < BASIS_POINTS or threshold < 0:
            raise InvalidInput("a percentage off is between 0.01 and 99.99", key="err_catalog.promotion_percent")
    elif kind == PromotionKind.UNITS_PRICE:
        if not 2 <= threshold <= 1000 or not 0 < value < threshold * 100:
            raise InvalidInput(
                "N units for the price of M: N from 2, M above 0 and below N", key="err_catalog.units_price"
            )
    else:
        raise InvalidInput("a promotion is spend_off, spend_percent or units_price", key="err_catalog.promotion_kind")
    if cap is not None and (cap <= 0 or kind != PromotionKind.SPEND_PERCENT):
        raise InvalidInput("a cap is a positive amount, for percentage promotions", key="err_catalog.promotion_cap")
    if stacking not in tuple(Stacking):
        raise InvalidInput("stacking with coupons is stack, best_of or exclusive", key="err_catalog.stacking")
    check_window(starts_at, ends_at)
    await check_scope(session, skus, channels)
    promotion = Promotion(
        name=name,
        kind=kind,
        threshold=threshold,
        value=value,
        cap=cap,
        currency=currency,
        skus=join_scope(skus),
        categories=join_scope(categories),
        channels=join_scope(channels),
        starts_at=starts_at,
        ends_at=ends_at,
        stacking=stacking,
        active=True,
        created_at=utcnow(),
    )
    session.add(promotion)
    await session.flush()
    return promotion


async def get_promotion(session: AsyncSession, promotion_id: int) -> Promotion:
    promotion = await session.get(Promotion, promotion_id)
    if promotion is None:
        raise NotFound(f"no promotion {promotion_id}", key="err_catalog.no_promotion", promotion_id=promotion_id)
    return promotion


async def list_promotions(session: AsyncSession) -> list[Promotion]:
    return list(await session.scalars(select(Promotion).order_by(Promotion.id.desc())))


async def set_active(session: AsyncSession, promotion_id: int, active: bool) -> Promotion:
    promotion = await get_promotion(session, promotion_id)
    promotion.active = active  # through the ORM: the audit trail records the old and new value
    await session.flush()
    return promotion


def rule_of(promotion: Promotion) -> PromotionRule:
    return PromotionRule(
        id=promotion.id,
        name=promotion.name,
        kind=promotion.kind,
        threshold=promotion.threshold,
        value=promotion.value,
        currency=promotion.currency,
        cap=promotion.cap,
        skus=scope_set(promotion.skus),
        categories=scope_set(promotion.categories),
        stacking=promotion.stacking,
    )


def in_force(promotion: Promotion, *, channel: str, now: datetime) -> bool:
    channels = scope_set(promotion.channels)
    return (
        promotion.active
        and in_window(promotion.starts_at, promotion.ends_at, now)
        and (not channels or channel in channels)
    )


async def rules_in_force(session: AsyncSession, *, channel: str, now: datetime | None = None) -> list[PromotionRule]:
    now = now or utcnow()
    rows = await session.scalars(select(Promotion).where(Promotion.active.is_(True)).order_by(Promotion.id))
    return [rule_of(p) for p in rows if in_force(p, channel=channel, now=now)]


async def for_product(
    session: AsyncSession, product: Product, *, channel: str, now: datetime | None = None
) -> list[PromotionRule]:
    """Promotions a buyer of ``product`` on ``channel`` can get now: shown on the product card."""
    return covering(await rules_in_force(session, channel=channel, now=now), product)


def covering(rules: Iterable[PromotionRule], product: Product) -> list[PromotionRule]:
    """The rules whose currency and scope take in ``product``."""
    return [
        r
        for r in rules
        if r.currency == product.currency
        and (
            (not r.skus and not r.categories)
            or product.sku in r.skus
            or (product.category is not None and product.category in r.categories)
        )
    ]
