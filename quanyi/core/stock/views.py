"""What the stock screens show: pools with what each channel holds, a product's allocation panel,
channels, and the reports of imports and voids, as frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.catalog.products import get_product
from quanyi.core.errors import NotFound
from quanyi.core.models import AllocationMode, Channel, ChannelKind, Product
from quanyi.core.stock.allocations import AllocationLevel, PoolLevel, list_channels, pool_levels
from quanyi.core.stock.items import ImportReport, VoidReport, staged_counts
from quanyi.core.stock.sellable import Sellable, sellable
from quanyi.core.stock.stockfile import RejectedLine

# Re-exported for the doors, which name modes and kinds without importing the models.
__all__ = [
    "AllocationLevel",
    "AllocationMode",
    "AllotTarget",
    "ChannelKind",
    "ChannelPriceSet",
    "ChannelView",
    "Holding",
    "ImportSummary",
    "PanelChannel",
    "Pool",
    "PoolLevel",
    "PoolPanel",
    "RejectedLine",
    "Sellable",
    "VoidSummary",
]


@dataclass(frozen=True)
class Pool:
    """A product's pool and its allocations, with the rows imports have staged but not released."""

    product_id: int
    level: PoolLevel
    staged: int
    figure: Sellable  # what the shop sells now, as every door shows it

    @property
    def sold(self) -> int:
        """Codes sold from the pool; for products issued on demand (and bundles), units sold."""
        return self.figure.sold if self.level.on_demand else self.level.sold

    @property
    def over_allocated(self) -> bool:
        """Voided or expired codes left the quotas holding more than the pool has."""
        return self.level.unallocated < 0

    def sellable_by(self, allocation: AllocationLevel) -> int:
        """What a channel may still sell: its quota's rest, or (shared) the unallocated pool."""
        if allocation.mode == AllocationMode.QUOTA:
            return allocation.remaining
        return max(self.level.unallocated, 0)


async def pools(session: AsyncSession, sku: str | None = None) -> list[Pool]:
    """Every product's pool (or one product's: ``NotFound`` when there is none)."""
    levels = await pool_levels(session, sku)
    staged = await staged_counts(session, sku)
    products = {
        p.sku: p for p in await session.scalars(select(Product).where(Product.sku.in_([lv.sku for lv in levels])))
    }
    figures = await sellable(session, list(products.values()))
    return [Pool(products[lv.sku].id, lv, staged.get(lv.sku, 0), figures[products[lv.sku].id]) for lv in levels]


@dataclass(frozen=True)
class PanelChannel:
    """An active channel on a product's panel, with its allocation's mode (None: it holds none)."""

    id: int
    code: str
    mode: str | None

    @property
    def can_take_back(self) -> bool:
        return self.mode == AllocationMode.QUOTA

    @property
    def can_share(self) -> bool:
        return self.mode != AllocationMode.SHARED


@dataclass(frozen=True)
class PoolPanel:
    """One product's pool and allocations, and the active channels it may allocate to."""

    product_id: int
    sku: str
    level: PoolLevel
    channels: tuple[PanelChannel, ...]  # those holding the product first, then by age
    figure: Sellable


async def pool_panel(session: AsyncSession, sku: str) -> PoolPanel:
    """Needs a writing session: the bot channel is created on first use."""
    product = await get_product(session, sku)
    level = (await pool_levels(session, sku))[0]
    modes = {a.channel: str(a.mode) for a in level.allocations}
    active = sorted((c for c in await list_channels(session) if c.active), key=lambda c: (c.code not in modes, c.id))
    channels = tuple(PanelChannel(c.id, c.code, modes.get(c.code)) for c in active)
    return PoolPanel(product.id, product.sku, level, channels, (await sellable(session, [product]))[product.id])


async def pool_panel_by_id(session: AsyncSession, product_id: int) -> PoolPanel:
    product = await session.get(Product, product_id)
    if product is None:
        raise NotFound(f"no product #{product_id}", key="err_stock.product_gone", sku="?")
    return await pool_panel(session, product.sku)


@dataclass(frozen=True)
class AllotTarget:
    """What an allocation button points at: a product and a channel."""

    sku: str
    channel: str


async def allot_target(session: AsyncSession, product_id: int, channel_id: int) -> AllotTarget:
    product = await session.get(Product, product_id)
    channel = await session.get(Channel, channel_id)
    if product is None or channel is None:
        raise NotFound("no such product or channel", key="err_stock.target_gone", sku="?")
    return AllotTarget(product.sku, channel.code)


@dataclass(frozen=True)
class Holding:
    """What one channel holds of a product after a change, and what the pool has left."""

    sku: str
    channel: str
    allocation: AllocationLevel
    pool_unallocated: int


@dataclass(frozen=True)
class ChannelView:
    id: int
    code: str
    name: str
    kind: str
    active: bool


def channel_view(channel: Channel) -> ChannelView:
    return ChannelView(channel.id, channel.code, channel.name, str(channel.kind), channel.active)


@dataclass(frozen=True)
class ChannelPriceSet:
    channel: str
    sku: str
    price: int | None  # None: removed, it sells at the list price
    list_price: int
    currency: str


@dataclass(frozen=True)
class ImportSummary:
    sku: str
    imported: int
    duplicates: int
    rejected: int
    rejected_examples: tuple[RejectedLine, ...]


def import_summary(report: ImportReport) -> ImportSummary:
    return ImportSummary(
        report.sku, report.imported, report.duplicates, report.rejected, tuple(report.rejected_examples)
    )


@dataclass(frozen=True)
class VoidSummary:
    sku: str
    voided: int
    already_void: int
    not_found: int
    sold_orders: tuple[str, ...]  # orders that hold codes sold already, for the operator to follow up


def void_summary(report: VoidReport) -> VoidSummary:
    return VoidSummary(report.sku, report.voided, report.already_void, report.not_found, tuple(report.sold_orders))
