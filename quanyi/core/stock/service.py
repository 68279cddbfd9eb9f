"""The stock's use cases: imports, the pool, channel allocations, thresholds, voids.

Each method is one use case: it takes plain values, opens and commits its own transaction and
returns plain values or frozen dataclasses (docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.catalog.products import get_product
from quanyi.core.errors import InvalidInput, NotFound
from quanyi.core.models import ChannelKind
from quanyi.core.money import parse_minor
from quanyi.core.stock import allocations, console_views, items, price_lists, views

if TYPE_CHECKING:
    from quanyi.core.wiring import Wiring


@dataclass(frozen=True)
class AllocationChange:
    """A change to what a channel or distributor (``holder``) holds of a product: at most one of
    ``units`` more, ``take_back`` units or ``shared``, and/or a new ``threshold``."""

    sku: str
    holder: str
    units: int | None = None
    take_back: int | None = None
    shared: bool = False
    threshold: int | None = None


class StockService:
    def __init__(self, wiring: Wiring) -> None:
        self._wiring = wiring
        self._db = wiring.db

    @property
    def _max_file_bytes(self) -> int:
        return self._wiring.settings.max_stock_file_mb * 2**20

    # --- stock files -------------------------------------------------------------------------

    async def import_file(
        self, sku: str, path: Path, *, fmt: str | None = None, progress: Callable[[int], None] | None = None
    ) -> views.ImportSummary:
        """Import a stock file all or nothing (``progress`` hears each written line number)."""
        report = await items.import_stock(
            self._db, self._wiring.keyring, sku, path, fmt=fmt, progress=progress, max_bytes=self._max_file_bytes
        )
        return views.import_summary(report)

    async def void_file(
        self, sku: str, path: Path, *, fmt: str | None = None, progress: Callable[[int], None] | None = None
    ) -> views.VoidSummary:
        """Void the codes a stock file lists; sold ones are reported with their orders (``progress``
        hears the line number reached after each chunk)."""
        report = await items.void_codes(
            self._db, self._wiring.keyring, sku, path, fmt=fmt, max_bytes=self._max_file_bytes, progress=progress
        )
        return views.void_summary(report)

    # --- the pool and its allocations --------------------------------------------------------

    async def pools(self, sku: str | None = None) -> list[views.Pool]:
        """Every product's pool with what each channel holds of it (or one product's)."""
        async with self._db.read() as session:
            return await views.pools(session, sku)

    async def panel(self, product_id: int) -> views.PoolPanel:
        """A product's pool and the channels it may allocate to; ``NotFound`` when it is gone."""
        async with self._db.transaction() as session:  # the bot channel is created on first use
            return await views.pool_panel_by_id(session, product_id)

    async def allot_target(self, product_id: int, channel_id: int) -> views.AllotTarget:
        """The product and channel an allocation button names; ``NotFound`` when either is gone."""
        async with self._db.read() as session:
            return await views.allot_target(session, product_id, channel_id)

    async def change_allocation(self, change: AllocationChange) -> views.Holding:
        """Allocate, take back or share, and/or set the allocation's threshold; what it holds after."""
        async with self._db.transaction() as session:
            await _apply(session, change)
            code = (await allocations.resolve_holder(session, change.holder)).code
            (pool,) = await allocations.pool_levels(session, change.sku)
        self._wiring.outbox_wakeup.set()  # a distributor holder is told
        held = next((a for a in pool.allocations if a.channel == code), None)
        if held is None:
            raise NotFound(
                f"{code} has no allocation of {pool.sku}", key="err_stock.no_allocation", holder=code, sku=pool.sku
            )
        return views.Holding(pool.sku, code, held, pool.unallocated)

    async def allot(self, change: AllocationChange) -> views.PoolPanel:
        """Allocate, take back or share, and/or set a threshold; the product's panel after."""
        async with self._db.transaction() as session:
            await _apply(session, change)
            panel = await views.pool_panel(session, change.sku)
        self._wiring.outbox_wakeup.set()  # a distributor holder is told
        return panel

    async def set_threshold(self, sku: str, threshold: int, *, holder: str | None = None) -> None:
        """The low-stock threshold (0 = off) of a product's pool, or of ``holder``'s allocation."""
        async with self._db.transaction() as session:
            await allocations.set_threshold(session, sku, threshold, holder=holder)

    # --- channels and their prices -----------------------------------------------------------

    async def add_channel(self, code: str, name: str, kind: str = ChannelKind.PARTNER) -> views.ChannelView:
        async with self._db.transaction() as session:
            return views.channel_view(await allocations.add_channel(session, code, name, kind))

    async def channels(self) -> list[views.ChannelView]:
        """Every channel, oldest first."""
        async with self._db.transaction() as session:  # the bot channel is created on first use
            return [views.channel_view(c) for c in await allocations.list_channels(session)]

    async def set_channel_price(self, holder: str, sku: str, price: str | None) -> views.ChannelPriceSet:
        """A channel's own price of a product (decimal text in the product's currency, never under
        its floor), or None to remove it. An unusable amount is refused with ``amount`` in its details."""
        async with self._db.transaction() as session:
            product = await get_product(session, sku)
            minor = _price(price, product.currency) if price is not None else None
            await allocations.set_channel_price(session, holder, sku, minor)
            code = (await allocations.resolve_holder(session, holder)).code
            return views.ChannelPriceSet(code, product.sku, minor, product.price, product.currency)

    async def price_list(self, holder: str) -> price_lists.PriceList:
        """A channel's (code, or a distributor by reference) own price beside each list price."""
        async with self._db.read() as session:
            return await price_lists.price_list(session, holder)

    # --- the web console ---------------------------------------------------------------------

    async def unsold_serials(self, sku: str, *, after: int = 0, limit: int = 1000) -> list[console_views.SerialRow]:
        """One page of a product's unsold codes without their secrets (ids above ``after``)."""
        async with self._db.read() as session:
            return await console_views.unsold_serials(session, sku, after=after, limit=limit)


async def _apply(session: AsyncSession, change: AllocationChange) -> None:
    """One allocation change and its threshold, in the caller's transaction."""
    how = [change.units is not None, change.take_back is not None, change.shared]
    if sum(how) > 1:
        raise InvalidInput("give one of units, take back or shared", key="err_stock.one_change", change="many")
    if not any(how) and change.threshold is None:
        raise InvalidInput(
            "nothing to change: give units, take back, shared or a threshold", key="err_stock.no_change", change="none"
        )
    if change.units is not None:
        await allocations.allocate(session, change.sku, change.holder, change.units)
    elif change.take_back is not None:
        await allocations.take_back(session, change.sku, change.holder, change.take_back)
    elif change.shared:
        await allocations.share_pool(session, change.sku, change.holder)
    if change.threshold is not None:
        await allocations.set_threshold(session, change.sku, change.threshold, holder=change.holder)


def _price(text: str, currency: str) -> int:
    try:
        minor = parse_minor(text, currency)
    except InvalidInput as exc:
        raise InvalidInput(exc.message, key="err_stock.bad_price", amount=text) from None
    if minor <= 0:
        raise InvalidInput("price must be greater than zero", key="err_stock.price_positive", amount=text)
    return minor
