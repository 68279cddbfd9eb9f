"""Products: adding them and reading the catalogue with live stock levels."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.channels import sellable_counts
from quanyi.core.errors import AlreadyExists, InvalidInput, NotFound
from quanyi.core.models import Product, ProductKind
from quanyi.core.money import Money, exponent
from quanyi.core.stock import available_counts

_SKU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# Kinds that this build can sell end to end; the others can be catalogued ahead of time.
SELLABLE_KINDS = {ProductKind.CARD_KEY}


@dataclass(frozen=True)
class CatalogueEntry:
    id: int
    sku: str
    name: str
    kind: str
    price: Money
    available: int
    description: str
    active: bool = True
    stars_price: int | None = None


def validate_sku(sku: str) -> str:
    # SKUs travel in deep links (start=buy_<SKU>, at most 64 characters) and callback data.
    if not _SKU.match(sku or ""):
        raise InvalidInput("SKU: 1-64 letters, digits, '_', '.', '-', starting with a letter or digit")
    return sku


async def add_product(
    session: AsyncSession,
    *,
    sku: str,
    name: str,
    kind: str,
    price: Money,
    description: str = "",
    instructions: str = "",
    sort_order: int = 0,
    stars_price: int | None = None,
) -> Product:
    """``stars_price`` is whole Telegram Stars; None = derived from the price at order time."""
    validate_sku(sku)
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise InvalidInput("name: 1-200 characters")
    try:
        kind_value = ProductKind(kind)
    except ValueError:
        allowed = ", ".join(k.value for k in ProductKind)
        raise InvalidInput(f"kind must be one of: {allowed}") from None
    exponent(price.currency)
    if price.minor <= 0:
        raise InvalidInput("price must be greater than zero")
    if stars_price is not None and stars_price <= 0:
        raise InvalidInput("Stars price must be greater than zero")
    existing = await session.scalar(select(Product.id).where(Product.sku == sku))
    if existing is not None:
        raise AlreadyExists(f"product {sku} already exists")
    product = Product(
        sku=sku,
        name=name,
        kind=kind_value.value,
        price=price.minor,
        currency=price.currency,
        stars_price=stars_price,
        description=description,
        instructions=instructions,
        active=True,
        sort_order=sort_order,
    )
    session.add(product)
    await session.flush()
    return product


async def update_product(
    session: AsyncSession,
    sku: str,
    *,
    name: str | None = None,
    price: str | None = None,
    stars_price: int | None = None,
    clear_stars_price: bool = False,
    instructions: str | None = None,
    description: str | None = None,
    active: bool | None = None,
    floor: str | None = None,
    ceiling: str | None = None,
) -> Product:
    """Change what an operator may change. Orders already placed keep their own prices.

    ``floor`` / ``ceiling`` are decimal text, or ``""`` to remove the limit."""
    product = await get_product(session, sku)
    if floor is not None:
        product.floor_price = Money.parse(floor, product.currency).minor if floor else None
    if ceiling is not None:
        product.ceiling_price = Money.parse(ceiling, product.currency).minor if ceiling else None
    if name is not None:
        name = name.strip()
        if not name or len(name) > 200:
            raise InvalidInput("name: 1-200 characters")
        product.name = name
    if price is not None:
        minor = Money.parse(price, product.currency).minor
        if minor <= 0:
            raise InvalidInput("price must be greater than zero")
        product.price = minor
    if clear_stars_price:
        product.stars_price = None
    elif stars_price is not None:
        if stars_price <= 0:
            raise InvalidInput("Stars price must be greater than zero")
        product.stars_price = stars_price
    if product.floor_price is not None and product.floor_price <= 0:
        raise InvalidInput("floor price must be greater than zero")
    if (
        product.floor_price is not None
        and product.ceiling_price is not None
        and product.ceiling_price < product.floor_price
    ):
        raise InvalidInput("ceiling price must not be under the floor price")
    if product.floor_price is not None and product.price < product.floor_price:
        raise InvalidInput("the list price may not be under the floor price")
    if instructions is not None:
        product.instructions = instructions
    if description is not None:
        product.description = description
    if active is not None:
        product.active = active
    await session.flush()
    return product


async def get_product(session: AsyncSession, sku: str) -> Product:
    product = await session.scalar(select(Product).where(Product.sku == sku))
    if product is None:
        raise NotFound(f"no product {sku}", sku=sku)
    return product


async def catalogue(session: AsyncSession, *, include_inactive: bool = False) -> list[CatalogueEntry]:
    query = select(Product).order_by(Product.sort_order, Product.id)
    if not include_inactive:
        query = query.where(Product.active.is_(True))
    products = list(await session.scalars(query))
    counts = await available_counts(session, [p.id for p in products])
    return [_entry(p, counts.get(p.id, 0)) for p in products]


async def catalogue_entry(session: AsyncSession, sku: str) -> CatalogueEntry:
    product = await get_product(session, sku)
    if not product.active:
        raise NotFound(f"no product {sku}")
    counts = await available_counts(session, [product.id])
    return _entry(product, counts.get(product.id, 0))


async def catalogue_entry_by_id(session: AsyncSession, product_id: int) -> CatalogueEntry:
    product = await session.get(Product, product_id)
    if product is None or not product.active:
        raise NotFound("no such product")
    counts = await available_counts(session, [product.id])
    return _entry(product, counts.get(product.id, 0))


async def for_buyer(session: AsyncSession, entries: list[CatalogueEntry], user_id: int) -> list[CatalogueEntry]:
    """The entries as this buyer sees them: the unit price it would be charged (a referred
    buyer pays its distributor's resale price) and the units its seller can sell it."""
    products = list(await session.scalars(select(Product).where(Product.id.in_([e.id for e in entries]))))
    terms = await sellable_counts(session, products, user_id=user_id)
    return [
        replace(entry, price=Money(terms[entry.id][1], entry.price.currency), available=terms[entry.id][0])
        if entry.id in terms
        else entry
        for entry in entries
    ]


def _entry(product: Product, available: int) -> CatalogueEntry:
    return CatalogueEntry(
        id=product.id,
        sku=product.sku,
        name=product.name,
        kind=product.kind,
        price=Money(product.price, product.currency),
        available=available,
        description=product.description,
        active=product.active,
        stars_price=product.stars_price,
    )
