"""The web console's read side of the catalogue: one product with everything its edit form shows
(texts, prices and limits, the options of its kind, a bundle's parts), as a frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.catalog.admin_views import PartView, part_views
from quanyi.core.catalog.bundles import parts_of
from quanyi.core.catalog.products import get_product
from quanyi.core.money import Money

__all__ = ["PartView", "ProductDetail", "product_detail"]


@dataclass(frozen=True)
class ProductDetail:
    """A product as an operator set it, with its texts and (a bundle) its parts."""

    id: int
    sku: str
    name: str
    kind: str
    price: Money
    stars_price: int | None  # None: derived from the price at order time
    active: bool
    floor_price: int | None
    ceiling_price: int | None
    description: str
    instructions: str
    category: str | None
    entitlement: str
    redeem_max_uses: int | None
    redeem_valid_days: int | None  # None: links never expire
    supplier: str | None
    supplier_product_code: str | None
    account_pattern: str | None
    account_hint: str | None
    fallback_sku: str | None
    manual_deadline_minutes: int | None
    low_stock_threshold: int
    parts: tuple[PartView, ...] = ()

    @property
    def parts_text(self) -> str:
        """The parts as ``SKU:N,SKU:N``, the form ``set_bundle_parts`` takes."""
        return ",".join(f"{p.sku}:{p.quantity}" for p in self.parts)

    @property
    def deadline_text(self) -> str:
        """A manual product's deadline as ``deadline_minutes`` reads it back (``1d``, ``2h``, ``90m``)."""
        minutes = self.manual_deadline_minutes
        if not minutes:
            return ""
        if minutes % (24 * 60) == 0:
            return f"{minutes // (24 * 60)}d"
        if minutes % 60 == 0:
            return f"{minutes // 60}h"
        return f"{minutes}m"


async def product_detail(session: AsyncSession, sku: str) -> ProductDetail:
    """``NotFound`` when there is no such product."""
    product = await get_product(session, sku)
    parts = part_views(await parts_of(session, product.id)) if product.kind == "bundle" else ()
    return ProductDetail(
        id=product.id,
        sku=product.sku,
        name=product.name,
        kind=product.kind,
        price=Money(product.price, product.currency),
        stars_price=product.stars_price,
        active=product.active,
        floor_price=product.floor_price,
        ceiling_price=product.ceiling_price,
        description=product.description or "",
        instructions=product.instructions or "",
        category=product.category,
        entitlement=product.entitlement or "",
        redeem_max_uses=product.redeem_max_uses,
        redeem_valid_days=product.redeem_valid_days,
        supplier=product.supplier,
        supplier_product_code=product.supplier_product_code,
        account_pattern=product.account_pattern,
        account_hint=product.account_hint,
        fallback_sku=product.fallback_sku,
        manual_deadline_minutes=product.manual_deadline_minutes,
        low_stock_threshold=product.low_stock_threshold,
        parts=parts,
    )
