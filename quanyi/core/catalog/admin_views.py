"""The operators' read side of the catalogue: products, coupons, promotions, bundles and quotes as
frozen dataclasses for the operator chat and the command line (the buyer's catalogue is ``views``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.catalog import bundles, coupons, promotions
from quanyi.core.catalog.coupons import MAX_BATCH, MAX_CODES_FILE, CodeImport
from quanyi.core.catalog.pricing import Breakdown, scope_set
from quanyi.core.catalog.products import catalogue
from quanyi.core.models import Coupon, DiscountKind, Order, Product, Promotion, PromotionKind, Stacking
from quanyi.core.money import Money
from quanyi.core.platform import export
from quanyi.core.stock.allocations import DEFAULT_CHANNEL, UNCAPPED, sellable_counts

__all__ = [
    "MAX_BATCH",
    "MAX_CODES_FILE",
    "UNCAPPED",
    "BundleView",
    "CodeImport",
    "CodeView",
    "CodesFile",
    "CouponDetail",
    "CouponUseView",
    "CouponView",
    "DiscountKind",
    "PartView",
    "PriceQuote",
    "PricingOverview",
    "ProductRow",
    "ProductView",
    "PromotionKind",
    "PromotionView",
    "Stacking",
]

CODES_HEADER: list[export.Cell] = ["code", "uses", "max_uses", "coupon_id", "coupon"]


# --- products -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProductRow:
    """One line of the operators' product list."""

    sku: str
    kind: str
    price: Money
    stars_price: int | None
    available: int  # UNCAPPED for what is issued when paid
    active: bool
    category: str | None
    name: str
    id: int = 0  # for buttons: a SKU may be too long for Telegram's 64-byte callback data


@dataclass(frozen=True)
class ProductView:
    """A product as an operator set it: prices, limits and the options of its kind."""

    sku: str
    name: str
    kind: str
    price: Money
    stars_price: int | None
    active: bool
    floor_price: int | None
    ceiling_price: int | None
    entitlement: str | None
    redeem_max_uses: int | None
    redeem_valid_days: int | None
    supplier: str | None
    supplier_product_code: str | None
    account_pattern: str | None
    account_hint: str | None
    fallback_sku: str | None
    manual_deadline_minutes: int | None = None


def product_view(product: Product) -> ProductView:
    return ProductView(
        sku=product.sku,
        name=product.name,
        kind=product.kind,
        price=Money(product.price, product.currency),
        stars_price=product.stars_price,
        active=product.active,
        floor_price=product.floor_price,
        ceiling_price=product.ceiling_price,
        entitlement=product.entitlement,
        redeem_max_uses=product.redeem_max_uses,
        redeem_valid_days=product.redeem_valid_days,
        supplier=product.supplier,
        supplier_product_code=product.supplier_product_code,
        account_pattern=product.account_pattern,
        account_hint=product.account_hint,
        fallback_sku=product.fallback_sku,
        manual_deadline_minutes=product.manual_deadline_minutes,
    )


async def product_rows(session: AsyncSession) -> list[ProductRow]:
    """Every product, on sale or not, in catalogue order, with the units it can sell."""
    entries = await catalogue(session, include_inactive=True)
    found = await session.execute(select(Product.sku, Product.category))
    categories = {sku: category for sku, category in found.all()}
    return [
        ProductRow(e.sku, e.kind, e.price, e.stars_price, e.available, e.active, categories.get(e.sku), e.name, e.id)
        for e in entries
    ]


# --- coupons ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CouponView:
    """A coupon campaign: its rule, scope, window and limits, and how many codes it has."""

    id: int
    name: str
    kind: str  # DiscountKind
    value: int  # minor units, or basis points for a percentage
    currency: str
    cap: int | None
    min_spend: int
    skus: tuple[str, ...]
    categories: tuple[str, ...]
    channels: tuple[str, ...]
    starts_at: datetime | None
    ends_at: datetime | None
    max_uses: int | None
    per_buyer: int | None
    uses: int
    active: bool
    codes: int = 0
    spent: int = 0  # uses by paid orders and pending ones


def _scope(text: str) -> tuple[str, ...]:
    return tuple(sorted(scope_set(text)))


def coupon_view(coupon: Coupon, codes: int = 0) -> CouponView:
    return CouponView(
        id=coupon.id,
        name=coupon.name,
        kind=coupon.kind,
        value=coupon.value,
        currency=coupon.currency,
        cap=coupon.cap,
        min_spend=coupon.min_spend,
        skus=_scope(coupon.skus),
        categories=_scope(coupon.categories),
        channels=_scope(coupon.channels),
        starts_at=coupon.starts_at,
        ends_at=coupon.ends_at,
        max_uses=coupon.max_uses,
        per_buyer=coupon.per_buyer,
        uses=coupon.uses,
        active=coupon.active,
        codes=codes,
        spent=coupon.uses,
    )


@dataclass(frozen=True)
class CodeView:
    code: str
    max_uses: int | None  # None = as often as the campaign allows


@dataclass(frozen=True)
class CodesFile:
    """Codes of one campaign on their way out: new ones (``codes``) or an export (``csv`` only)."""

    coupon_id: int
    name: str
    codes: tuple[str, ...] = ()
    max_uses: int | None = 1  # of each new code; None = as often as the campaign allows
    exported: str | None = None

    @property
    def csv(self) -> str:
        """The columns ``coupons.export_csv`` writes; new codes have no use yet."""
        if self.exported is not None:
            return self.exported
        rows: list[list[export.Cell]] = [CODES_HEADER]
        rows += [[code, 0, self.max_uses, self.coupon_id, self.name] for code in self.codes]
        return export.csv_text(rows)


@dataclass(frozen=True)
class CouponUseView:
    order: str  # the order's number
    code: str
    user_id: int | None
    discount: int
    currency: str
    status: str
    created_at: datetime


@dataclass(frozen=True)
class CouponDetail:
    coupon: CouponView
    uses: tuple[CouponUseView, ...]  # newest first


async def coupon_list(session: AsyncSession) -> list[CouponView]:
    """Every campaign, newest first."""
    return [coupon_view(s.coupon, s.codes) for s in await coupons.list_coupons(session)]


async def coupon_detail(session: AsyncSession, coupon_id: int, *, limit: int) -> CouponDetail:
    coupon = await coupons.get_coupon(session, coupon_id)
    uses = await coupons.uses_of(session, coupon.id, limit=limit)
    ids = sorted({u.order_id for u in uses})
    found = await session.execute(select(Order.id, Order.number).where(Order.id.in_(ids)))
    numbers = {order_id: number for order_id, number in found.all()}
    return CouponDetail(
        coupon=coupon_view(coupon),
        uses=tuple(
            CouponUseView(
                numbers.get(u.order_id, str(u.order_id)),
                u.code,
                u.user_id,
                u.discount,
                u.currency,
                u.status,
                u.created_at,
            )
            for u in uses
        ),
    )


# --- promotions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromotionView:
    id: int
    name: str
    kind: str  # PromotionKind
    threshold: int
    value: int
    currency: str
    cap: int | None
    skus: tuple[str, ...]
    categories: tuple[str, ...]
    channels: tuple[str, ...]
    starts_at: datetime | None
    ends_at: datetime | None
    stacking: str  # Stacking
    active: bool


def promotion_view(promotion: Promotion) -> PromotionView:
    return PromotionView(
        id=promotion.id,
        name=promotion.name,
        kind=promotion.kind,
        threshold=promotion.threshold,
        value=promotion.value,
        currency=promotion.currency,
        cap=promotion.cap,
        skus=_scope(promotion.skus),
        categories=_scope(promotion.categories),
        channels=_scope(promotion.channels),
        starts_at=promotion.starts_at,
        ends_at=promotion.ends_at,
        stacking=promotion.stacking,
        active=promotion.active,
    )


async def promotion_list(session: AsyncSession) -> list[PromotionView]:
    """Every promotion, newest first."""
    return [promotion_view(p) for p in await promotions.list_promotions(session)]


# --- bundles ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartView:
    sku: str
    quantity: int


@dataclass(frozen=True)
class BundleView:
    sku: str
    name: str
    price: Money
    active: bool
    parts: tuple[PartView, ...]
    units: int  # what the bot channel can sell now (the scarcest component decides); UNCAPPED


def part_views(parts: Sequence[bundles.Part]) -> tuple[PartView, ...]:
    return tuple(PartView(p.product.sku, p.quantity) for p in parts)


async def bundle_list(session: AsyncSession, *, sku: str | None = None) -> list[BundleView]:
    """Every bundle (or the one with ``sku``) with its parts and the units the bot can sell."""
    rows = [(b, parts) for b, parts in await bundles.list_bundles(session) if sku is None or b.sku == sku]
    counts = await sellable_counts(session, [b for b, _ in rows], channel=DEFAULT_CHANNEL)
    return [
        BundleView(
            sku=b.sku,
            name=b.name,
            price=Money(b.price, b.currency),
            active=b.active,
            parts=part_views(parts),
            units=counts[b.id][0] if b.id in counts else 0,
        )
        for b, parts in rows
    ]


# --- the pricing home and quotes ----------------------------------------------------------------


@dataclass(frozen=True)
class PricingOverview:
    coupons: tuple[CouponView, ...]
    promotions: tuple[PromotionView, ...]
    bundles: tuple[BundleView, ...]


async def pricing_overview(session: AsyncSession) -> PricingOverview:
    return PricingOverview(
        coupons=tuple(await coupon_list(session)),
        promotions=tuple(await promotion_list(session)),
        bundles=tuple(await bundle_list(session)),
    )


@dataclass(frozen=True)
class PriceQuote:
    """What an order would cost: the unit price on the channel and the breakdown with its reasons."""

    sku: str
    quantity: int
    unit_price: int
    channel: str
    breakdown: Breakdown
