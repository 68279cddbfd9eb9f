"""The buyer's catalogue, read for a screen: products with this buyer's price and stock, a product's
card, and the price of an order before it is placed."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.catalog import bundles
from quanyi.core.catalog.pricing import Breakdown, PromotionRule, Reason, compute
from quanyi.core.catalog.products import (
    ACCOUNT_KINDS,
    CatalogueEntry,
    catalogue,
    catalogue_entry,
    catalogue_entry_by_id,
    for_buyer,
)
from quanyi.core.catalog.quote import Quote, quote_order
from quanyi.core.errors import NotFound, QuanyiError
from quanyi.core.models import Product, ProductKind, PromotionKind, Stacking
from quanyi.core.stock.allocations import UNCAPPED

# Re-exported for the doors, which name kinds and limits without importing the models.
__all__ = [
    "UNCAPPED",
    "CatalogueEntry",
    "CouponRefusal",
    "CouponTry",
    "OrderQuote",
    "Part",
    "ProductCard",
    "ProductKind",
    "PromotionKind",
    "PromotionRule",
    "Stacking",
    "Welcome",
    "all_products",
    "buyer_catalogue",
    "buyer_entry",
    "buyer_quote",
    "product_card",
    "recharge_part",
]


@dataclass(frozen=True)
class Part:
    """One component of a bundle, as its card lists it."""

    name: str
    quantity: int


@dataclass(frozen=True)
class ProductCard:
    """A product's card for one buyer: what it is, its parts and offers, and how it is ordered."""

    entry: CatalogueEntry
    parts: tuple[Part, ...] = ()
    promotions: tuple[PromotionRule, ...] = ()
    # Set when the buyer gives an account instead of a quantity (a recharge, or a bundle with one).
    account_hint: str | None = None
    max_quantity: int = 0  # the most one order may take now: the stock and the order limit


@dataclass(frozen=True)
class CouponRefusal:
    """Why the coupon given does not apply (a ``pricing.Reason``), with what a buyer is told."""

    reason: str
    name: str  # the coupon's name; "" when no coupon of that code was found
    details: dict[str, object] = field(default_factory=dict)
    need: int = 0  # minor units missing to the coupon's minimum spend


@dataclass(frozen=True)
class OrderQuote:
    """An order before it is placed: the product as this buyer sees it, the price and why."""

    entry: CatalogueEntry
    quantity: int
    breakdown: Breakdown
    coupon: str | None  # the code that applies
    refusal: CouponRefusal | None
    methods: tuple[tuple[str, str], ...] = ()  # (method, option) this buyer may pay with
    account: str | None = None  # the recharge account, checked

    @property
    def short(self) -> bool:
        """The stock this buyer can get is less than the quantity."""
        return self.quantity > self.entry.available


@dataclass(frozen=True)
class CouponTry:
    """A code typed into the order form: applied, or refused and why; the price either way."""

    applied: str | None  # the code, as the coupon spells it, when it applies
    refusal: CouponRefusal | None  # when it does not
    quote: OrderQuote  # with the code that applies now (the one before, when this one does not)


@dataclass(frozen=True)
class Welcome:
    """What ``/start`` shows: the card of the product its link names, else the catalogue."""

    card: ProductCard | None = None
    not_for_sale: bool = False  # the link named a product that is not on sale
    catalogue: tuple[CatalogueEntry, ...] = ()


async def all_products(session: AsyncSession) -> list[CatalogueEntry]:
    """The active products at their list prices (the public page)."""
    return await catalogue(session)


async def buyer_catalogue(session: AsyncSession, user_id: int) -> list[CatalogueEntry]:
    """What this buyer would pay and can get: a referred buyer sees its distributor's prices."""
    return await catalogue(session, user_id=user_id)


async def buyer_entry(
    session: AsyncSession, user_id: int, *, product_id: int | None = None, sku: str | None = None
) -> CatalogueEntry:
    """One active product as this buyer sees it, by id or by SKU."""
    if sku is not None:
        entry = await catalogue_entry(session, sku)
    else:
        entry = await catalogue_entry_by_id(session, product_id or 0)
    [seen] = await for_buyer(session, [entry], user_id)
    return seen


async def product_card(session: AsyncSession, entry: CatalogueEntry, user_id: int, max_quantity: int) -> ProductCard:
    product = await session.get(Product, entry.id)
    parts = await bundles.parts_of(session, entry.id) if entry.kind == ProductKind.BUNDLE else []
    recharged = await recharge_part(session, product) if product is not None else None
    try:
        quote = await quote_order(session, product, 1, user_id=user_id) if product else None
    except QuanyiError:  # not on sale on this buyer's channel: the card says so
        quote = None
    # One recharge credits one account: such an order is always one unit.
    offers = _can_apply(quote, 1 if recharged is not None else max_quantity) if quote is not None else ()
    hint = (recharged.account_hint or recharged.account_pattern or "") if recharged is not None else None
    return ProductCard(
        entry=entry,
        parts=tuple(Part(p.product.name, p.quantity) for p in parts),
        promotions=offers,
        account_hint=hint,
        max_quantity=min(entry.available, max_quantity),
    )


def _can_apply(quote: Quote, most: int) -> tuple[PromotionRule, ...]:
    """The promotions in force that could take something off an order of this product on this
    buyer's channel: one whose threshold no single order can reach (more units than an order may
    hold, a recharge's one unit) or that the price's floor blocks is not advertised."""
    largest = replace(quote.breakdown.lines[0], quantity=max(most, 1))
    currency = quote.breakdown.currency
    return tuple(rule for rule in quote.promotions if compute([largest], currency, [rule]).discount_amount > 0)


async def buyer_quote(
    session: AsyncSession, user_id: int, product_id: int, quantity: int, coupon: str | None
) -> OrderQuote:
    """The price of ``quantity`` for this buyer (with ``coupon``, if it applies)."""
    entry = await buyer_entry(session, user_id, product_id=product_id)
    product = await session.get(Product, product_id)
    if product is None:
        raise NotFound(f"no product {product_id}", key="err_catalog.no_product_id", product_id=product_id)
    quote = await quote_order(session, product, quantity, user_id=user_id, coupon_code=coupon)
    return OrderQuote(
        entry=entry,
        quantity=quantity,
        breakdown=quote.breakdown,
        coupon=quote.coupon.code if quote.coupon is not None and quote.refusal is None else None,
        refusal=_refusal(quote),
    )


async def recharge_part(session: AsyncSession, product: Product) -> Product | None:
    """The product whose account the buyer gives: a recharge itself, or a bundle's recharge part."""
    if product.kind in ACCOUNT_KINDS:  # a manual product's account is asked for the same way
        return product
    if product.kind == ProductKind.BUNDLE:
        parts = await bundles.parts_of(session, product.id)
        return next((p.product for p in parts if p.product.kind == ProductKind.DIRECT_RECHARGE), None)
    return None


def _refusal(quote: Quote) -> CouponRefusal | None:
    refusal = quote.refusal
    if refusal is None:
        return None
    need = 0
    if refusal.reason == Reason.MIN_SPEND:
        # The product is in the coupon's scope (else the reason would be not_in_scope).
        need = int(str(refusal.details.get("min_spend", 0))) - quote.breakdown.list_amount
    return CouponRefusal(reason=refusal.reason, name=refusal.name, details=dict(refusal.details), need=need)
