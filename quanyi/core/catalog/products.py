"""Products: adding them and reading the catalogue with live stock levels."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.errors import AlreadyExists, InvalidInput, NotFound
from quanyi.core.models import Product, ProductKind
from quanyi.core.money import Money, exponent
from quanyi.core.stock.allocations import sellable_counts
from quanyi.core.stock.sellable import Sellable, sellable

_SKU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# Kinds that this build can sell end to end; the others can be catalogued ahead of time.
SELLABLE_KINDS = {
    ProductKind.CARD_KEY,
    ProductKind.REDEEM_LINK,
    ProductKind.DIRECT_RECHARGE,
    ProductKind.BUNDLE,
    ProductKind.MANUAL,
}
# Kinds whose buyer gives an account (checked against the product's pattern) to credit.
ACCOUNT_KINDS = {ProductKind.DIRECT_RECHARGE, ProductKind.MANUAL}
# A manual product's deadline when the operator names none, and the longest it may be.
DEFAULT_DEADLINE_MINUTES = 24 * 60
MAX_DEADLINE_MINUTES = 30 * 24 * 60
_DEADLINE = re.compile(r"^(\d{1,6})\s*(m|min|h|d)?$", re.IGNORECASE)
_DEADLINE_UNITS = {"m": 1, "min": 1, "h": 60, "d": 24 * 60}


@dataclass(frozen=True)
class CatalogueEntry:
    id: int
    sku: str
    name: str
    kind: str
    price: Money
    available: int  # the sellable figure (``stock.sellable``): UNCAPPED when issued on demand
    description: str
    active: bool = True
    stars_price: int | None = None
    category: str | None = None  # the operator's label; the bot's catalogue groups by it
    sold: int = 0  # units sold: shown beside "on demand"


def validate_sku(sku: str) -> str:
    # SKUs travel in deep links (start=buy_<SKU>, at most 64 characters) and callback data.
    if not _SKU.match(sku or ""):
        raise InvalidInput(
            "SKU: 1-64 letters, digits, '_', '.', '-', starting with a letter or digit", key="err_catalog.bad_sku"
        )
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
    entitlement: str | None = None,
    max_uses: int | None = None,
    valid_days: int | None = None,
    supplier: str | None = None,
    supplier_code: str | None = None,
    account_pattern: str | None = None,
    account_hint: str | None = None,
    fallback_sku: str | None = None,
    deadline: str | None = None,
    category: str | None = None,
) -> Product:
    """``stars_price`` is whole Telegram Stars; None = derived from the price at order time.

    ``entitlement``, ``max_uses`` and ``valid_days`` are for ``redeem_link`` products; the
    supplier, account and fallback options for ``direct_recharge``; ``deadline`` (``90m``, ``2h``,
    ``1d``; default a day) and the account options for ``manual`` (see ``_set_kind_options``)."""
    validate_sku(sku)
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise InvalidInput("name: 1-200 characters", key="err_catalog.product_name")
    try:
        kind_value = ProductKind(kind)
    except ValueError:
        allowed = ", ".join(k.value for k in ProductKind)
        raise InvalidInput(f"kind must be one of: {allowed}", key="err_catalog.product_kind", kinds=allowed) from None
    exponent(price.currency)
    if price.minor <= 0:
        raise InvalidInput("price must be greater than zero", key="err_catalog.price")
    if stars_price is not None and stars_price <= 0:
        raise InvalidInput("Stars price must be greater than zero", key="err_catalog.stars_price")
    existing = await session.scalar(select(Product.id).where(Product.sku == sku))
    if existing is not None:
        raise AlreadyExists(f"product {sku} already exists", key="err_catalog.product_exists", sku=sku)
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
        category=_category(category),
    )
    await _set_kind_options(
        session,
        product,
        entitlement=entitlement,
        max_uses=max_uses,
        valid_days=valid_days,
        supplier=supplier,
        supplier_code=supplier_code,
        account_pattern=account_pattern,
        account_hint=account_hint,
        fallback_sku=fallback_sku,
        deadline=deadline,
    )
    if product.kind == ProductKind.MANUAL and product.manual_deadline_minutes is None:
        product.manual_deadline_minutes = DEFAULT_DEADLINE_MINUTES
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
    entitlement: str | None = None,
    max_uses: int | None = None,
    valid_days: int | None = None,
    supplier: str | None = None,
    supplier_code: str | None = None,
    account_pattern: str | None = None,
    account_hint: str | None = None,
    fallback_sku: str | None = None,
    deadline: str | None = None,
    category: str | None = None,
) -> Product:
    """Change what an operator may change. Orders already placed keep their own prices.

    ``floor`` / ``ceiling`` are decimal text, or ``""`` to remove the limit; so are the text
    options of ``_set_kind_options``, and ``valid_days=0`` means links never expire."""
    product = await get_product(session, sku)
    await _set_kind_options(
        session,
        product,
        entitlement=entitlement,
        max_uses=max_uses,
        valid_days=valid_days,
        supplier=supplier,
        supplier_code=supplier_code,
        account_pattern=account_pattern,
        account_hint=account_hint,
        fallback_sku=fallback_sku,
        deadline=deadline,
    )
    _set_texts(product, name, instructions, description, category)
    _set_prices(product, price, stars_price, clear_stars_price, floor, ceiling)
    if active is not None:
        product.active = active
    await session.flush()
    return product


def _set_prices(
    product: Product,
    price: str | None,
    stars_price: int | None,
    clear_stars_price: bool,
    floor: str | None,
    ceiling: str | None,
) -> None:
    """The list, Stars, floor and ceiling prices (decimal text; ``""`` removes a floor or ceiling),
    then the limits they must keep together."""
    if floor is not None:
        product.floor_price = Money.parse(floor, product.currency).minor if floor else None
    if ceiling is not None:
        product.ceiling_price = Money.parse(ceiling, product.currency).minor if ceiling else None
    if price is not None:
        minor = Money.parse(price, product.currency).minor
        if minor <= 0:
            raise InvalidInput("price must be greater than zero", key="err_catalog.price")
        product.price = minor
    if clear_stars_price:
        product.stars_price = None
    elif stars_price is not None:
        if stars_price <= 0:
            raise InvalidInput("Stars price must be greater than zero", key="err_catalog.stars_price")
        product.stars_price = stars_price
    floor_price, ceiling_price = product.floor_price, product.ceiling_price
    if floor_price is not None and floor_price <= 0:
        raise InvalidInput("floor price must be greater than zero", key="err_catalog.floor_price")
    if floor_price is not None and ceiling_price is not None and ceiling_price < floor_price:
        raise InvalidInput("ceiling price must not be under the floor price", key="err_catalog.ceiling_under_floor")
    if floor_price is not None and product.price < floor_price:
        raise InvalidInput("the list price may not be under the floor price", key="err_catalog.price_under_floor")


def _set_texts(
    product: Product, name: str | None, instructions: str | None, description: str | None, category: str | None
) -> None:
    if name is not None:
        name = name.strip()
        if not name or len(name) > 200:
            raise InvalidInput("name: 1-200 characters", key="err_catalog.product_name")
        product.name = name
    if instructions is not None:
        product.instructions = instructions
    if description is not None:
        product.description = description
    if category is not None:
        product.category = _category(category)


async def _set_kind_options(
    session: AsyncSession,
    product: Product,
    *,
    entitlement: str | None,
    max_uses: int | None,
    valid_days: int | None,
    supplier: str | None,
    supplier_code: str | None,
    account_pattern: str | None,
    account_hint: str | None,
    fallback_sku: str | None,
    deadline: str | None = None,
) -> None:
    """Options of one product kind, refused on a product of another kind. None = unchanged."""
    link = {"entitlement": entitlement, "max uses": max_uses, "valid days": valid_days}
    if misplaced := _misplaced(product, {ProductKind.REDEEM_LINK}, link):
        raise InvalidInput(misplaced, key="err_catalog.link_options_only")
    recharge = {"supplier": supplier, "supplier code": supplier_code, "fallback SKU": fallback_sku}
    if misplaced := _misplaced(product, {ProductKind.DIRECT_RECHARGE}, recharge):
        raise InvalidInput(misplaced, key="err_catalog.recharge_options_only")
    account = {"account pattern": account_pattern, "account hint": account_hint}
    if misplaced := _misplaced(product, ACCOUNT_KINDS, account):
        raise InvalidInput(misplaced, key="err_catalog.account_options_only")
    if misplaced := _misplaced(product, {ProductKind.MANUAL}, {"deadline": deadline}):
        raise InvalidInput(misplaced, key="err_catalog.deadline_only")
    if deadline is not None:
        product.manual_deadline_minutes = deadline_minutes(deadline)
    _set_link_options(product, entitlement, max_uses, valid_days)
    if supplier is not None:
        product.supplier = _short_text(supplier, "supplier", 32)
    if supplier_code is not None:
        product.supplier_product_code = _short_text(supplier_code, "supplier code", 64)
    if account_pattern is not None:
        product.account_pattern = _account_pattern(account_pattern)
    if account_hint is not None:
        product.account_hint = _short_text(account_hint, "account hint", 200)
    if fallback_sku is not None:
        product.fallback_sku = await _fallback(session, fallback_sku)


def _misplaced(product: Product, kinds: set[ProductKind], options: Mapping[str, object]) -> str:
    """Why the first option given does not fit this product's kind (English), or ""."""
    given = [name for name, value in options.items() if value is not None]
    if not given or product.kind in kinds:
        return ""
    names = " and ".join(sorted(kind.value for kind in kinds))
    return f"{given[0]} applies to {names} products only"


def deadline_minutes(text: str) -> int:
    """A manual product's deadline as an operator writes it: ``90m``, ``2h``, ``1d`` (a bare
    number is minutes), from a minute to 30 days."""
    match = _DEADLINE.match((text or "").strip())
    minutes = int(match.group(1)) * _DEADLINE_UNITS[(match.group(2) or "m").lower()] if match else 0
    if not 1 <= minutes <= MAX_DEADLINE_MINUTES:
        raise InvalidInput(
            "deadline: minutes, hours or days such as 90m, 2h or 1d (at most 30d)",
            key="err_catalog.deadline",
            field="deadline",
        )
    return minutes


def _set_link_options(product: Product, entitlement: str | None, max_uses: int | None, valid_days: int | None) -> None:
    if entitlement is not None:
        entitlement = entitlement.strip()
        if len(entitlement) > 500:
            raise InvalidInput("entitlement: at most 500 characters", key="err_catalog.entitlement")
        product.entitlement = entitlement
    if max_uses is not None:
        if not 1 <= max_uses <= 1_000_000:
            raise InvalidInput("max uses: 1-1000000", key="err_catalog.link_uses")
        product.redeem_max_uses = max_uses
    if valid_days is not None:
        if not 0 <= valid_days <= 36_500:
            raise InvalidInput("valid days: 1-36500, or 0 for links that never expire", key="err_catalog.valid_days")
        product.redeem_valid_days = valid_days or None


def _account_pattern(text: str) -> str | None:
    pattern = _short_text(text, "account pattern", 200)
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise InvalidInput(
                f"account pattern is not a valid regular expression: {exc}",
                key="err_catalog.bad_pattern",
            ) from None
    return pattern


async def _fallback(session: AsyncSession, sku: str) -> str | None:
    """The card_key product a failed recharge delivers instead (``""`` = none: refund)."""
    fallback = sku.strip() or None
    if fallback is not None:
        target = await session.scalar(select(Product).where(Product.sku == fallback))
        if target is None:
            raise NotFound(f"no product {fallback}", key="err_catalog.no_product", sku=fallback)
        if target.kind != ProductKind.CARD_KEY:
            raise InvalidInput(
                f"the fallback product {fallback} must be a card_key product",
                key="err_catalog.fallback_kind",
                fallback=fallback,
            )
    return fallback


def _category(value: str | None) -> str | None:
    """A category label: trimmed, lower case, 1-64 characters; empty = none."""
    value = (value or "").strip().lower()
    if len(value) > 64 or "," in value:
        raise InvalidInput("category: at most 64 characters, no commas", key="err_catalog.category")
    return value or None


def _short_text(value: str, what: str, limit: int) -> str | None:
    """Trimmed text of at most ``limit`` characters; empty = removed (None)."""
    value = value.strip()
    if len(value) > limit:
        raise InvalidInput(f"{what}: at most {limit} characters", key="err_catalog.too_long", most=limit)
    return value or None


async def get_product(session: AsyncSession, sku: str) -> Product:
    product = await session.scalar(select(Product).where(Product.sku == sku))
    if product is None:
        raise NotFound(f"no product {sku}", key="err_catalog.no_product", sku=sku)
    return product


async def catalogue(
    session: AsyncSession, *, include_inactive: bool = False, user_id: int | None = None
) -> list[CatalogueEntry]:
    """The products with the sellable figure every door shows; for ``user_id``, as that buyer
    sees them (the price it would pay, the units its seller can sell it)."""
    query = select(Product).order_by(Product.sort_order, Product.id)
    if not include_inactive:
        query = query.where(Product.active.is_(True))
    products = list(await session.scalars(query))
    figures = await sellable(session, products, user_id=user_id)
    return [_entry(p, figures[p.id], priced=user_id is not None) for p in products]


async def catalogue_entry(session: AsyncSession, sku: str) -> CatalogueEntry:
    product = await get_product(session, sku)
    if not product.active:
        raise NotFound(f"no product {sku}", key="err_catalog.no_product", sku=sku)
    return _entry(product, (await sellable(session, [product]))[product.id])


async def catalogue_entry_by_id(session: AsyncSession, product_id: int) -> CatalogueEntry:
    product = await session.get(Product, product_id)
    if product is None or not product.active:
        raise NotFound("no such product", key="err_catalog.no_such_product")
    return _entry(product, (await sellable(session, [product]))[product.id])


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


def _entry(product: Product, figure: Sellable, *, priced: bool = False) -> CatalogueEntry:
    return CatalogueEntry(
        id=product.id,
        sku=product.sku,
        name=product.name,
        kind=product.kind,
        price=Money(figure.price if priced else product.price, product.currency),
        available=figure.units,
        sold=figure.sold,
        description=product.description,
        active=product.active,
        stars_price=product.stars_price,
        category=product.category,
    )
