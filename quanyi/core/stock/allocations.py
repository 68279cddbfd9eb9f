"""Channels, their price lists, and allocations of a product's pool to them.

The pool is a product's sellable stock items. A channel sells either from an allocation
(a quota: at most ``allocated - reserved - sold`` more units) or from the shared pool
(whatever no quota holds). Invariant: the quotas' remaining units never exceed the pool,
so a quota holder always finds its items. Quota sales move only their allocation's
counters; shared sales, allocations and take-backs lock the product row (PostgreSQL; on
SQLite there is one writer) and count the unallocated units in one statement, so one
snapshot sees every committed sale and release on both sides.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, bindparam, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.distributors import notices
from quanyi.core.errors import AlreadyExists, InvalidInput, NotForSale, NotFound, OutOfStock
from quanyi.core.models import (
    Allocation,
    AllocationMode,
    Channel,
    ChannelKind,
    ChannelPrice,
    Distributor,
    OrderLine,
    Product,
    ProductKind,
    StockItem,
    StockStatus,
    User,
    utcnow,
)
from quanyi.core.money import Money
from quanyi.core.platform import audit
from quanyi.core.platform.db import on_connection, rowcount

DEFAULT_CHANNEL = "bot"
# What ``sellable_counts`` reports for kinds that hold no stock (links, recharges) and no quota.
UNCAPPED = 1_000_000
_CODE = re.compile(r"^[a-z0-9][a-z0-9_-]{1,31}$")


class AllocationShort(OutOfStock):
    """The seller's allocation has fewer units left than asked."""

    code = "allocation_exhausted"


def validate_code(code: str) -> str:
    if not _CODE.match(code or ""):
        raise InvalidInput("channel code: 2-32 lowercase letters, digits, '_' or '-'", key="err_stock.channel_code")
    return code


async def add_channel(session: AsyncSession, code: str, name: str, kind: str = ChannelKind.PARTNER) -> Channel:
    validate_code(code)
    try:
        kind_value = ChannelKind(kind)
    except ValueError:
        raise InvalidInput(
            "kind must be one of: bot, partner, distributor",
            key="err_stock.channel_kind",
            kinds="bot, partner, distributor",
        ) from None
    if (code == DEFAULT_CHANNEL) != (kind_value == ChannelKind.BOT):
        raise InvalidInput(
            "the bot channel is 'bot'; other channels are partner or distributor",
            key="err_stock.bot_channel",
            bot="bot",
        )
    name = (name or "").strip()
    if not 1 <= len(name) <= 100:
        raise InvalidInput("channel name: 1-100 characters", key="err_stock.channel_name")
    if await session.scalar(select(Channel.id).where(Channel.code == code)) is not None:
        raise AlreadyExists(f"channel {code} already exists", key="err_stock.channel_exists", channel=code)
    channel = Channel(code=code, name=name, kind=kind_value.value, active=True)
    session.add(channel)
    await session.flush()
    return channel


async def get_channel(session: AsyncSession, code: str) -> Channel:
    """A channel by code. The bot channel exists from its first use."""
    channel = await session.scalar(select(Channel).where(Channel.code == code))
    if channel is None and code == DEFAULT_CHANNEL:
        return await add_channel(session, DEFAULT_CHANNEL, "Telegram bot", ChannelKind.BOT)
    if channel is None:
        raise NotFound(f"no channel {code}", key="err_stock.no_channel", channel=code)
    return channel


async def list_channels(session: AsyncSession) -> list[Channel]:
    await get_channel(session, DEFAULT_CHANNEL)
    return list(await session.scalars(select(Channel).order_by(Channel.id)))


async def resolve_holder(session: AsyncSession, ref: str) -> Channel:
    """``--to`` of the allocation commands: a channel code, or a distributor by Telegram user
    id or ``@username``."""
    ref = (ref or "").strip()
    if ref.startswith("@") or ref.isdigit():
        if ref.isdigit() and int(ref) >= 2**63:  # no Telegram id, and too large for the column
            raise NotFound(f"no distributor {ref}", key="err_stock.no_distributor", channel=ref)
        if ref.isdigit():
            query = select(Distributor.channel_id).where(Distributor.user_id == int(ref))
        else:
            query = (
                select(Distributor.channel_id)
                .join(User, User.id == Distributor.user_id)
                .where(func.lower(User.username) == ref[1:].lower())
            )
        channel_id = await session.scalar(query)
        if channel_id is None:
            raise NotFound(f"no distributor {ref}", key="err_stock.no_distributor", channel=ref)
        channel = await session.get(Channel, channel_id)
        assert channel is not None
        return channel
    return await get_channel(session, ref.lower())


async def _product(session: AsyncSession, sku: str, *, lock: bool = False) -> Product:
    query = select(Product).where(Product.sku == sku)
    if lock:
        # Serialises everything that changes how much of the pool is unallocated. NO KEY
        # UPDATE (key_share) on PostgreSQL: it must not conflict with the KEY SHARE locks
        # that inserting order lines takes on the product row, or two sales deadlock.
        query = query.with_for_update(key_share=True)
    product = await session.scalar(query)
    if product is None:
        raise NotFound(f"no product {sku}", key="err_stock.no_product", sku=sku)
    return product


def check_price_limits(product: Product, price: int, *, ceiling: bool) -> None:
    if price <= 0:
        raise InvalidInput("price must be greater than zero", key="err_stock.price_positive")
    if product.floor_price is not None and price < product.floor_price:
        floor = Money(product.floor_price, product.currency)
        raise InvalidInput(
            f"{product.sku} may not be sold under its floor price {floor}",
            key="err_stock.below_floor",
            sku=product.sku,
            floor=str(floor),
        )
    if ceiling and product.ceiling_price is not None and price > product.ceiling_price:
        top = Money(product.ceiling_price, product.currency)
        raise InvalidInput(
            f"{product.sku} may not be sold over its ceiling price {top}",
            key="err_stock.above_ceiling",
            sku=product.sku,
            ceiling=str(top),
        )


async def set_channel_price(
    session: AsyncSession, code: str, sku: str, price: int | None, *, ceiling: bool = False
) -> None:
    """Set (or, with None, remove) a channel's price for a product, never under the floor."""
    channel = await resolve_holder(session, code)
    product = await _product(session, sku)
    existing = await session.scalar(
        select(ChannelPrice).where(ChannelPrice.channel_id == channel.id, ChannelPrice.product_id == product.id)
    )
    if price is None:
        if existing is not None:
            await session.delete(existing)
        return
    check_price_limits(product, price, ceiling=ceiling or channel.kind == ChannelKind.DISTRIBUTOR)
    if existing is None:
        session.add(ChannelPrice(channel_id=channel.id, product_id=product.id, price=price))
    else:
        existing.price = price
        existing.updated_at = utcnow()
    await session.flush()


async def channel_prices(session: AsyncSession, channel_id: int) -> dict[int, int]:
    rows = await session.execute(
        select(ChannelPrice.product_id, ChannelPrice.price).where(ChannelPrice.channel_id == channel_id)
    )
    return dict(rows.all())


# --- allocations ---------------------------------------------------------------------------


def _remaining() -> object:
    return Allocation.allocated - Allocation.reserved - Allocation.sold


async def unallocated(session: AsyncSession, product_id: int) -> int:
    """Sellable items of the pool that no quota holds, counted in one statement (one snapshot)."""
    now = utcnow()
    available = (
        select(func.count())
        .where(
            StockItem.product_id == product_id,
            StockItem.status == StockStatus.AVAILABLE,
            (StockItem.expires_at.is_(None)) | (StockItem.expires_at > now),
        )
        .scalar_subquery()
    )
    held = (
        select(func.coalesce(func.sum(Allocation.allocated - Allocation.reserved - Allocation.sold), 0))
        .where(Allocation.product_id == product_id, Allocation.mode == AllocationMode.QUOTA)
        .scalar_subquery()
    )
    return int(await session.scalar(select(available - held)) or 0)


async def _allocation(session: AsyncSession, channel_id: int, product_id: int) -> Allocation | None:
    return await session.scalar(
        select(Allocation).where(Allocation.channel_id == channel_id, Allocation.product_id == product_id)
    )


def _quota(allocation: Allocation | None) -> dict[str, object] | None:
    if allocation is None:
        return None
    return {"mode": str(allocation.mode), "allocated": allocation.allocated}


def _note_quota(
    session: AsyncSession, action: str, channel: Channel, sku: str, before: dict[str, object] | None, after: Allocation
) -> None:
    audit.note(session, action, "allocation", f"{channel.code}/{sku}", before, _quota(after))


async def _add_units(
    session: AsyncSession, channel: Channel, product: Product, units: int
) -> tuple[Allocation, dict[str, object] | None]:
    """``units`` more on the channel's quota (made one if it had none or the shared pool); the
    quota after and what it was before, for the trail. The caller holds the product row."""
    allocation = await _allocation(session, channel.id, product.id)
    before = _quota(allocation)
    if allocation is None:
        allocation = Allocation(
            channel_id=channel.id, product_id=product.id, mode=AllocationMode.QUOTA, allocated=units, reserved=0, sold=0
        )
        session.add(allocation)
    elif allocation.mode == AllocationMode.SHARED:
        # Becomes a quota of ``units`` from now on; its past sales stay counted.
        await session.execute(
            update(Allocation)
            .where(Allocation.id == allocation.id)
            .values(
                mode=AllocationMode.QUOTA,
                allocated=Allocation.reserved + Allocation.sold + units,
                updated_at=utcnow(),
            )
        )
    else:
        await session.execute(
            update(Allocation)
            .where(Allocation.id == allocation.id)
            .values(allocated=Allocation.allocated + units, updated_at=utcnow())
        )
    await session.flush()
    await session.refresh(allocation)
    return allocation, before


async def pass_units(
    session: AsyncSession, sku: str, frm: Channel, to: Channel, units: int
) -> tuple[Product, Allocation, Allocation]:
    """Move ``units`` of ``frm``'s quota to ``to``'s (a parent distributor's to its sub's): only
    units ``frm`` still holds (not reserved, not sold). The quotas' remaining total does not
    change, so the pool invariant holds. Returns the product and both quotas after."""
    if units <= 0:
        raise InvalidInput("units must be a positive whole number", key="err_stock.units_positive")
    product = await _product(session, sku, lock=True)
    source = await _allocation(session, frm.id, product.id)
    if source is None or source.mode != AllocationMode.QUOTA:
        raise NotFound(f"{frm.code} has no quota of {sku}", key="err_stock.no_quota", holder=frm.code, sku=sku)
    before = _quota(source)
    taken = await session.execute(
        update(Allocation)
        .where(Allocation.id == source.id, Allocation.allocated - Allocation.reserved - Allocation.sold >= units)
        .values(allocated=Allocation.allocated - units, updated_at=utcnow())
    )
    await session.refresh(source)
    if not rowcount(taken):
        left = source.allocated - source.reserved - source.sold
        raise AllocationShort(
            f"only {left} units of {sku} left to pass on", key="err_stock.pass_short", available=left, sku=sku
        )
    _note_quota(session, "pass on", frm, sku, before, source)
    target, was = await _add_units(session, to, product, units)
    _note_quota(session, "passed in", to, sku, was, target)
    return product, source, target


async def allocate(session: AsyncSession, sku: str, to: str, units: int) -> Allocation:
    """Give ``units`` more of the product's unallocated pool to a channel or distributor."""
    if units <= 0:
        raise InvalidInput("units must be a positive whole number", key="err_stock.units_positive")
    channel = await resolve_holder(session, to)
    product = await _product(session, sku, lock=True)
    if product.kind == ProductKind.CARD_KEY:
        # Links and recharges are issued on demand: their quota is a cap with no pool behind it.
        free = await unallocated(session, product.id)
        if free < units:
            raise OutOfStock(
                f"only {max(free, 0)} unallocated units of {sku} left",
                key="err_stock.pool_short",
                available=max(free, 0),
                sku=sku,
            )
    allocation, before = await _add_units(session, channel, product, units)
    _note_quota(session, "allocate", channel, sku, before, allocation)
    await notices.allocation_changed(session, channel, product, allocation, "allocated", units)
    return allocation


async def take_back(session: AsyncSession, sku: str, frm: str, units: int) -> Allocation:
    """Return ``units`` of a quota's remaining units to the pool (never units already
    reserved by pending orders or sold)."""
    if units <= 0:
        raise InvalidInput("units must be a positive whole number", key="err_stock.units_positive")
    channel = await resolve_holder(session, frm)
    product = await _product(session, sku, lock=True)
    allocation = await _allocation(session, channel.id, product.id)
    if allocation is None or allocation.mode != AllocationMode.QUOTA:
        raise NotFound(f"{channel.code} has no quota of {sku}", key="err_stock.no_quota", holder=channel.code, sku=sku)
    before = _quota(allocation)
    result = await session.execute(
        update(Allocation)
        .where(
            Allocation.id == allocation.id,
            Allocation.allocated - Allocation.reserved - Allocation.sold >= units,
        )
        .values(allocated=Allocation.allocated - units, updated_at=utcnow())
    )
    if not rowcount(result):
        await session.refresh(allocation)
        left = allocation.allocated - allocation.reserved - allocation.sold
        raise InvalidInput(
            f"{channel.code} has only {left} units of {sku} left to take back",
            key="err_stock.take_back_short",
            left=left,
            holder=channel.code,
            sku=sku,
        )
    await session.refresh(allocation)
    _note_quota(session, "take back", channel, sku, before, allocation)
    await notices.allocation_changed(session, channel, product, allocation, "taken_back", units)
    return allocation


async def share_pool(session: AsyncSession, sku: str, to: str) -> Allocation:
    """Let a channel sell the product from the shared pool without a cap; a quota's
    remaining units go back to the pool."""
    channel = await resolve_holder(session, to)
    product = await _product(session, sku, lock=True)
    allocation = await _allocation(session, channel.id, product.id)
    before = _quota(allocation)
    if allocation is None:
        allocation = Allocation(
            channel_id=channel.id, product_id=product.id, mode=AllocationMode.SHARED, allocated=0, reserved=0, sold=0
        )
        session.add(allocation)
    else:
        await session.execute(
            update(Allocation)
            .where(Allocation.id == allocation.id)
            .values(mode=AllocationMode.SHARED, allocated=Allocation.reserved + Allocation.sold, updated_at=utcnow())
        )
    await session.flush()
    await session.refresh(allocation)
    _note_quota(session, "share pool", channel, sku, before, allocation)
    await notices.allocation_changed(session, channel, product, allocation, "shared", 0)
    return allocation


async def set_threshold(session: AsyncSession, sku: str, threshold: int, *, holder: str | None = None) -> None:
    """The low-stock threshold of a product's pool (``holder`` None) or of an allocation."""
    if threshold < 0:
        raise InvalidInput("threshold must be zero (off) or more", key="err_stock.threshold_negative")
    product = await _product(session, sku)
    if holder is None:
        product.low_stock_threshold = threshold
        await session.flush()
        return
    channel = await resolve_holder(session, holder)
    allocation = await _allocation(session, channel.id, product.id)
    if allocation is None:
        raise NotFound(
            f"{channel.code} has no allocation of {sku}", key="err_stock.no_allocation", holder=channel.code, sku=sku
        )
    allocation.threshold = threshold
    await session.flush()


@dataclass(frozen=True)
class AllocationLevel:
    channel: str
    channel_name: str
    kind: str
    mode: str
    allocated: int
    reserved: int
    sold: int
    threshold: int

    @property
    def remaining(self) -> int:
        return self.allocated - self.reserved - self.sold if self.mode == AllocationMode.QUOTA else 0


@dataclass(frozen=True)
class PoolLevel:
    sku: str
    name: str
    available: int  # sellable items not reserved by any order
    reserved: int
    sold: int
    void: int
    expired: int
    threshold: int
    allocations: list[AllocationLevel] = field(default_factory=list)
    on_demand: bool = False

    @property
    def allocated_remaining(self) -> int:
        return sum(a.remaining for a in self.allocations)

    @property
    def unallocated(self) -> int:
        """Negative when voided or expired codes left the quotas larger than the pool; 0 for
        kinds issued on demand (links, recharges), whose quotas are caps without a pool."""
        if self.on_demand:
            return 0
        return self.available - self.allocated_remaining


async def pool_levels(session: AsyncSession, sku: str | None = None) -> list[PoolLevel]:
    """Each product's pool with what every channel holds of it."""
    from quanyi.core.stock.items import stock_levels

    levels = await stock_levels(session, sku)
    products = {
        p.sku: p for p in await session.scalars(select(Product).where(Product.sku.in_([level.sku for level in levels])))
    }
    rows = (
        await session.execute(
            select(Allocation, Channel)
            .join(Channel, Channel.id == Allocation.channel_id)
            .where(Allocation.product_id.in_([p.id for p in products.values()]))
            .order_by(Channel.id)
        )
    ).all()
    by_product: dict[int, list[AllocationLevel]] = {}
    for allocation, channel in rows:
        by_product.setdefault(allocation.product_id, []).append(
            AllocationLevel(
                channel=channel.code,
                channel_name=channel.name,
                kind=channel.kind,
                mode=allocation.mode,
                allocated=allocation.allocated,
                reserved=allocation.reserved,
                sold=allocation.sold,
                threshold=allocation.threshold,
            )
        )
    return [
        PoolLevel(
            sku=level.sku,
            name=level.name,
            available=level.available,
            reserved=level.reserved,
            sold=level.sold,
            void=level.void,
            expired=level.expired,
            threshold=products[level.sku].low_stock_threshold,
            allocations=by_product.get(products[level.sku].id, []),
            on_demand=products[level.sku].kind != ProductKind.CARD_KEY,
        )
        for level in levels
    ]


# --- selling -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SaleTerms:
    """Where a sale comes from and what it costs, decided once when an order is placed."""

    channel_id: int | None
    channel: str
    unit_price: int  # in the product currency, never under the floor
    allocation_id: int | None  # None = the shared pool
    allocation_mode: str  # quota | shared
    head_id: int | None = None  # the distributor whose customer the buyer is
    seller_id: int | None = None  # set when the sale is on that distributor's storefront


async def sale_terms(
    session: AsyncSession,
    product: Product,
    *,
    channel: str = DEFAULT_CHANNEL,
    user_id: int | None = None,
    needs_allocation: bool = True,
) -> SaleTerms:
    """Which channel sells ``product`` to this buyer, at what price, from which stock.

    A buyer a distributor referred buys on that distributor's storefront when it holds an
    allocation of the product (at its resale price), otherwise on the bot; either way the
    order carries the distributor's chain. ``needs_allocation=False`` prices a product that
    holds no stock of its own (a bundle: its components are allocated, not it).
    """
    head: Distributor | None = None
    if channel == DEFAULT_CHANNEL and user_id is not None:
        head = await session.scalar(
            select(Distributor)
            .join(User, User.referred_by == Distributor.id)
            .where(User.id == user_id, Distributor.active.is_(True))
        )
    offer: _Offer | None = None
    if head is not None:
        offer = await _offer(session, product.id, Channel.id == head.channel_id)
        if offer is not None and offer.allocation_mode is None:
            offer = None  # its storefront holds none of this product: the bot sells it
    if offer is None:
        offer = await _offer(session, product.id, Channel.code == channel)
        if offer is None and channel != DEFAULT_CHANNEL:
            raise NotFound(f"no channel {channel}", key="err_stock.no_channel", channel=channel)
        if offer is not None and not offer.active:
            raise NotForSale(f"channel {channel} is closed", key="err_stock.channel_closed", channel=channel)
    if needs_allocation and offer is not None and offer.allocation_mode is None and offer.kind != ChannelKind.BOT:
        raise NotForSale(
            f"channel {offer.code} has no allocation of {product.name}",
            key="err_stock.channel_not_allotted",
            channel=offer.code,
            name=product.name,
        )
    price = offer.price if offer is not None and offer.price is not None else product.price
    if product.floor_price is not None:
        price = max(price, product.floor_price)
    seller = head.id if head is not None and offer is not None and offer.id == head.channel_id else None
    mode = offer.allocation_mode if offer is not None and offer.allocation_mode else AllocationMode.SHARED
    return SaleTerms(
        channel_id=offer.id if offer is not None else None,
        channel=offer.code if offer is not None else DEFAULT_CHANNEL,
        unit_price=price,
        allocation_id=offer.allocation_id if offer is not None and mode == AllocationMode.QUOTA else None,
        allocation_mode=mode,
        head_id=head.id if head is not None else None,
        seller_id=seller,
    )


@dataclass(frozen=True)
class _Offer:
    id: int
    code: str
    kind: str
    active: bool
    allocation_id: int | None
    allocation_mode: str | None
    price: int | None


async def _offer(session: AsyncSession, product_id: int, which: ColumnElement[bool]) -> _Offer | None:
    """A channel with its allocation and own price of a product, in one statement."""
    row = (
        await session.execute(
            select(
                Channel.id,
                Channel.code,
                Channel.kind,
                Channel.active,
                Allocation.id,
                Allocation.mode,
                ChannelPrice.price,
            )
            .outerjoin(Allocation, (Allocation.channel_id == Channel.id) & (Allocation.product_id == product_id))
            .outerjoin(ChannelPrice, (ChannelPrice.channel_id == Channel.id) & (ChannelPrice.product_id == product_id))
            .where(which)
        )
    ).first()
    return _Offer(*row) if row is not None else None


async def reserve_units(
    session: AsyncSession, product_id: int, allocation_id: int | None, quantity: int, *, sold: bool = False
) -> None:
    """Take ``quantity`` units of the seller's allocation (``sold`` for a sale that is paid
    already), or make sure the shared pool has them unallocated. Raises, changing nothing
    it could not finish; the caller's transaction rolls back the rest."""
    if allocation_id is not None:
        column = Allocation.sold if sold else Allocation.reserved
        result = await session.execute(
            update(Allocation)
            .where(
                Allocation.id == allocation_id,
                Allocation.mode == AllocationMode.QUOTA,
                Allocation.allocated - Allocation.reserved - Allocation.sold >= quantity,
            )
            .values({column: column + quantity, Allocation.updated_at: utcnow()})
        )
        if not rowcount(result):
            left = max(await _units_left(session, allocation_id), 0)
            raise AllocationShort(
                f"only {left} left in this allocation", key="err_stock.allocation_short", available=left
            )
        return
    # The product-row lock and whether any quota exists, in one statement.
    quotas = await session.scalar(
        select(exists().where(Allocation.product_id == product_id, Allocation.mode == AllocationMode.QUOTA))
        .select_from(Product)
        .where(Product.id == product_id)
        .with_for_update(key_share=True, of=Product)
    )
    if quotas:
        free = await unallocated(session, product_id)
        if free < quantity:
            raise OutOfStock(f"only {max(free, 0)} left", key="err_stock.out_of_stock", available=max(free, 0))


async def _units_left(session: AsyncSession, allocation_id: int) -> int:
    left = await session.scalar(
        select(Allocation.allocated - Allocation.reserved - Allocation.sold).where(Allocation.id == allocation_id)
    )
    return int(left or 0)


async def _line_units(session: AsyncSession, order_id: int) -> list[tuple[int, int]]:
    rows = await session.execute(
        select(OrderLine.allocation_id, func.sum(OrderLine.quantity))
        .where(OrderLine.order_id == order_id, OrderLine.allocation_id.is_not(None))
        .group_by(OrderLine.allocation_id)
    )
    return [(int(a or 0), int(n or 0)) for a, n in rows.all()]


async def sell_units(session: AsyncSession, order_id: int) -> None:
    """A paid order's reserved allocation units become sold."""
    await on_connection(session, lambda conn: sell_units_many(conn, [order_id]))


# Built once: on the payment path building a statement costs more than running it.
_UNITS_OF_ORDERS = (
    select(OrderLine.allocation_id, func.sum(OrderLine.quantity))
    .where(OrderLine.order_id.in_(bindparam("ids", expanding=True)), OrderLine.allocation_id.is_not(None))
    .group_by(OrderLine.allocation_id)
    .order_by(OrderLine.allocation_id)
)
_SELL_UNITS = (
    update(Allocation)
    .where(Allocation.id == bindparam("aid"))
    .values(
        reserved=Allocation.reserved - bindparam("units"),
        sold=Allocation.sold + bindparam("units"),
        updated_at=bindparam("now"),
    )
)


def sell_units_many(conn: Connection, order_ids: Collection[int], now: datetime | None = None) -> None:
    """The reserved allocation units of many paid orders become sold: one statement per
    allocation they sold from, in allocation order so that two batches never wait on each
    other's rows in turn."""
    if not order_ids:
        return
    units = conn.execute(_UNITS_OF_ORDERS, {"ids": list(order_ids)}).all()
    if units:
        now = now or utcnow()
        conn.execute(_SELL_UNITS, [{"aid": aid, "units": int(n), "now": now} for aid, n in units])


async def release_units(session: AsyncSession, order_id: int, *, sold: bool = False) -> None:
    """An unpaid (or unfillable) order's allocation units go back to the allocation."""
    column = Allocation.sold if sold else Allocation.reserved
    for allocation_id, units in await _line_units(session, order_id):
        await session.execute(
            update(Allocation)
            .where(Allocation.id == allocation_id)
            .values({column: column - units, Allocation.updated_at: utcnow()})
        )


async def sellable_counts(
    session: AsyncSession, products: Iterable[Product], *, channel: str = DEFAULT_CHANNEL, user_id: int | None = None
) -> dict[int, tuple[int, int]]:
    """What this buyer can buy of each product right now: (units, unit price)."""
    from quanyi.core.stock.items import available_counts

    products = list(products)
    counts = await available_counts(session, [p.id for p in products])
    out: dict[int, tuple[int, int]] = {}
    for product in products:
        bundle = product.kind == ProductKind.BUNDLE
        try:
            terms = await sale_terms(session, product, channel=channel, user_id=user_id, needs_allocation=not bundle)
        except (NotFound, NotForSale):
            out[product.id] = (0, product.price)
            continue
        if bundle:
            out[product.id] = (await _bundle_units(session, product, terms.channel), terms.unit_price)
            continue
        if product.kind != ProductKind.CARD_KEY:
            # Links are issued and recharges placed at payment: only a quota limits them.
            units = UNCAPPED
            if terms.allocation_id is not None:
                units = await _units_left(session, terms.allocation_id)
        elif terms.allocation_id is not None:
            units = min(await _units_left(session, terms.allocation_id), counts.get(product.id, 0))
        else:
            has_quota = await session.scalar(
                select(exists().where(Allocation.product_id == product.id, Allocation.mode == AllocationMode.QUOTA))
            )
            units = await unallocated(session, product.id) if has_quota else counts.get(product.id, 0)
        out[product.id] = (max(units, 0), terms.unit_price)
    return out


async def _bundle_units(session: AsyncSession, bundle: Product, channel: str) -> int:
    """As many bundles as the scarcest component allows on ``channel``."""
    from quanyi.core.catalog.bundles import parts_of

    parts = await parts_of(session, bundle.id)
    if not parts or any(not p.product.active for p in parts):
        return 0
    counts = await sellable_counts(session, [p.product for p in parts], channel=channel)
    # On-demand components (links, recharges without a quota) do not limit it.
    return min(
        counts[p.product.id][0] if counts[p.product.id][0] >= UNCAPPED else counts[p.product.id][0] // p.quantity
        for p in parts
    )
