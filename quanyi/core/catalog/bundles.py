"""Bundles: a ``bundle`` product made of other products, sold as one and delivered as each.

A bundle has its own price (and floor, category, channel prices); its order is written as one
line per component, the bundle's payable split over them in proportion to their list prices,
so that fulfilment, refunds and commissions treat each component as the product it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.catalog.products import add_product, get_product
from quanyi.core.errors import InvalidInput, NotFound
from quanyi.core.models import BundleComponent, Product, ProductKind
from quanyi.core.money import Money
from quanyi.core.platform import audit

MAX_PARTS = 10
MAX_PART_QUANTITY = 100


@dataclass(frozen=True)
class Part:
    product: Product
    quantity: int


def parse_parts(text: str) -> list[tuple[str, int]]:
    """``VIP-1M:1,MUSIC-1M:2`` (``:1`` may be left out)."""
    parts: list[tuple[str, int]] = []
    for chunk in (text or "").split(","):
        chunk = chunk.strip()
        if not chunk:
            continue
        sku, _, qty = chunk.partition(":")
        qty = qty.strip() or "1"
        if not qty.isdecimal():
            raise InvalidInput(f"not a part: {chunk!r} (write SKU:QUANTITY)", key="err_catalog.bad_part", part=chunk)
        parts.append((sku.strip(), int(qty)))
    return parts


async def _check(session: AsyncSession, bundle: Product, parts: Sequence[tuple[str, int]]) -> list[Part]:
    if not parts:
        raise InvalidInput("a bundle needs at least one component", key="err_catalog.bundle_empty")
    if len(parts) > MAX_PARTS:
        raise InvalidInput(
            f"a bundle has at most {MAX_PARTS} components", key="err_catalog.bundle_too_many", most=MAX_PARTS
        )
    seen: set[str] = set()
    out: list[Part] = []
    for sku, quantity in parts:
        if sku in seen:
            raise InvalidInput(f"{sku} is named twice", key="err_catalog.part_twice", part=sku)
        seen.add(sku)
        if not 1 <= quantity <= MAX_PART_QUANTITY:
            raise InvalidInput(
                f"quantity of {sku}: 1-{MAX_PART_QUANTITY}",
                key="err_catalog.part_quantity",
                part=sku,
                most=MAX_PART_QUANTITY,
            )
        product = await get_product(session, sku)
        if product.kind == ProductKind.BUNDLE:
            raise InvalidInput(
                f"{sku} is a bundle itself; bundles are made of products", key="err_catalog.part_is_bundle", part=sku
            )
        if product.kind == ProductKind.MANUAL:
            raise InvalidInput(
                f"{sku} is fulfilled by hand; it is sold on its own, not in a bundle",
                key="err_catalog.part_is_manual",
                part=sku,
            )
        if product.currency != bundle.currency:
            raise InvalidInput(
                f"{sku} is priced in {product.currency}, the bundle in {bundle.currency}",
                key="err_catalog.part_currency",
                part=sku,
                part_currency=product.currency,
                bundle_currency=bundle.currency,
            )
        if product.kind == ProductKind.DIRECT_RECHARGE and quantity != 1:
            raise InvalidInput(
                f"{sku} recharges one account: quantity 1", key="err_catalog.part_recharge_one", part=sku
            )
        out.append(Part(product, quantity))
    if sum(1 for p in out if p.product.kind == ProductKind.DIRECT_RECHARGE) > 1:
        raise InvalidInput(
            "a bundle may hold one direct recharge (the buyer gives one account)",
            key="err_catalog.bundle_two_recharges",
        )
    return out


async def create_bundle(
    session: AsyncSession,
    *,
    sku: str,
    name: str,
    price: Money,
    parts: Sequence[tuple[str, int]],
    description: str = "",
    category: str | None = None,
) -> Product:
    """A new ``bundle`` product with its components, in one transaction."""
    bundle = await add_product(
        session, sku=sku, name=name, kind=ProductKind.BUNDLE, price=price, description=description, category=category
    )
    await set_parts(session, sku, parts)
    return bundle


async def set_parts(session: AsyncSession, sku: str, parts: Sequence[tuple[str, int]]) -> list[Part]:
    """Replace a bundle's components. Orders placed already keep what they were sold."""
    bundle = await get_product(session, sku)
    if bundle.kind != ProductKind.BUNDLE:
        raise InvalidInput(f"{sku} is not a bundle product", key="err_catalog.not_a_bundle", bundle=sku)
    checked = await _check(session, bundle, parts)
    before = await parts_of(session, bundle.id)
    audit.note(
        session,
        "set bundle parts",
        "product",
        sku,
        {"parts": [[p.product.sku, p.quantity] for p in before]},
        {"parts": [[p.product.sku, p.quantity] for p in checked]},
    )
    await session.execute(delete(BundleComponent).where(BundleComponent.bundle_id == bundle.id))
    session.add_all(
        [
            BundleComponent(bundle_id=bundle.id, component_id=p.product.id, quantity=p.quantity, position=i)
            for i, p in enumerate(checked)
        ]
    )
    await session.flush()
    return checked


async def parts_of(session: AsyncSession, bundle_id: int) -> list[Part]:
    rows = await session.execute(
        select(Product, BundleComponent.quantity)
        .join(BundleComponent, BundleComponent.component_id == Product.id)
        .where(BundleComponent.bundle_id == bundle_id)
        .order_by(BundleComponent.position, BundleComponent.id)
    )
    return [Part(product, quantity) for product, quantity in rows.all()]


async def sellable_parts(session: AsyncSession, bundle: Product) -> list[Part]:
    """The components, or ``NotForSale``-style refusal as ``NotFound`` when one is missing."""
    parts = await parts_of(session, bundle.id)
    if not parts:
        raise NotFound(f"{bundle.name} has no components yet", key="err_catalog.bundle_no_parts", bundle=bundle.name)
    for part in parts:
        if not part.product.active:
            raise NotFound(
                f"{part.product.name} in {bundle.name} is not on sale",
                key="err_catalog.part_off_sale",
                part=part.product.name,
                bundle=bundle.name,
            )
    return parts


async def list_bundles(session: AsyncSession) -> list[tuple[Product, list[Part]]]:
    bundles = await session.scalars(select(Product).where(Product.kind == ProductKind.BUNDLE).order_by(Product.sku))
    return [(b, await parts_of(session, b.id)) for b in bundles]
