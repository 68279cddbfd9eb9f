"""What the doors show of partners: the list, one partner with its keys, allocations and prices,
and the answers of the partner use cases, as frozen dataclasses (never a secret but a new one)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.models import Allocation, AllocationMode, Channel, ChannelPrice, Partner, PartnerKey, Product
from quanyi.core.partners import accounts


@dataclass(frozen=True)
class PartnerRow:
    code: str
    name: str
    channel: str  # the channel's code, "" without one
    active: bool
    balance: int
    currency: str
    active_keys: int
    webhook_url: str | None


@dataclass(frozen=True)
class KeyRow:
    access_key: str
    active: bool
    created_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class AllocationRow:
    sku: str
    mode: str
    allocated: int
    reserved: int
    sold: int
    left: int | None  # None: sells from the shared pool, no cap of its own


@dataclass(frozen=True)
class PriceRow:
    sku: str
    price: int
    currency: str


@dataclass(frozen=True)
class PartnerDetail:
    code: str
    name: str
    channel: str | None
    active: bool
    balance: int
    currency: str
    webhook_url: str | None
    created_at: datetime | None
    keys: tuple[KeyRow, ...] = ()
    allocations: tuple[AllocationRow, ...] = ()
    prices: tuple[PriceRow, ...] = ()


@dataclass(frozen=True)
class AddedPartner:
    code: str
    name: str
    channel: str
    currency: str
    webhook_url: str | None
    access_key: str
    secret: str  # in the clear, this once


@dataclass(frozen=True)
class IssuedKey:
    code: str
    access_key: str
    secret: str  # in the clear, this once


@dataclass(frozen=True)
class RevokedKey:
    code: str
    access_key: str
    active_left: int


@dataclass(frozen=True)
class ToppedUp:
    code: str
    currency: str
    amount: int  # added positive, taken back negative
    balance: int


@dataclass(frozen=True)
class PartnerState:
    code: str
    active: bool
    webhook_url: str | None


@dataclass(frozen=True)
class Caller:
    """The partner behind a request whose signature, window and nonce held."""

    partner_id: int
    code: str
    access_key: str


@dataclass(frozen=True)
class Balance:
    code: str
    currency: str
    balance: int


@dataclass(frozen=True)
class PlacedOrder:
    created: bool  # False: an earlier request with this order number made it
    order: dict[str, object]  # as the API shows it (``orders.view``)


@dataclass(frozen=True)
class StatementLine:
    at: datetime
    kind: str
    amount: int
    order_no: str | None
    ref: str


@dataclass(frozen=True)
class StatementPage:
    currency: str
    first_day: date
    last_day: date
    opening: int
    closing: int
    lines: tuple[StatementLine, ...] = field(default_factory=tuple)


def state_of(partner: Partner) -> PartnerState:
    return PartnerState(partner.code, partner.active, partner.webhook_url)


async def active_key_counts(session: AsyncSession) -> dict[int, int]:
    counted = await session.execute(
        select(PartnerKey.partner_id, func.count()).where(PartnerKey.active.is_(True)).group_by(PartnerKey.partner_id)
    )
    return {partner_id: int(n) for partner_id, n in counted.all()}


async def partner_rows(session: AsyncSession) -> list[PartnerRow]:
    """Every partner by code, with its channel's code and how many keys are active."""
    partners = await accounts.list_partners(session)
    codes = {i: c for i, c in (await session.execute(select(Channel.id, Channel.code))).all()}
    keys = await active_key_counts(session)
    return [
        PartnerRow(
            code=p.code,
            name=p.name,
            channel=codes.get(p.channel_id, "") if p.channel_id else "",
            active=p.active,
            balance=p.balance,
            currency=p.currency,
            active_keys=keys.get(p.id, 0),
            webhook_url=p.webhook_url,
        )
        for p in partners
    ]


def _allocation_row(sku: str, a: Allocation) -> AllocationRow:
    left = a.allocated - a.reserved - a.sold if a.mode == AllocationMode.QUOTA else None
    return AllocationRow(sku, str(a.mode), a.allocated, a.reserved, a.sold, left)


async def partner_detail(session: AsyncSession, code: str) -> PartnerDetail:
    """One partner: its keys (never their secrets), its channel's allocations and prices."""
    partner = await accounts.get(session, code)
    channel = await session.get(Channel, partner.channel_id) if partner.channel_id else None
    keys = await accounts.keys_of(session, partner.id)
    allocations = (
        await session.execute(
            select(Product.sku, Allocation)
            .join(Product, Product.id == Allocation.product_id)
            .where(Allocation.channel_id == partner.channel_id)
            .order_by(Product.sku)
        )
    ).all()
    prices = (
        await session.execute(
            select(Product.sku, ChannelPrice.price, Product.currency)
            .join(Product, Product.id == ChannelPrice.product_id)
            .where(ChannelPrice.channel_id == partner.channel_id)
            .order_by(Product.sku)
        )
    ).all()
    return PartnerDetail(
        code=partner.code,
        name=partner.name,
        channel=channel.code if channel else None,
        active=partner.active,
        balance=partner.balance,
        currency=partner.currency,
        webhook_url=partner.webhook_url,
        created_at=partner.created_at,
        keys=tuple(KeyRow(k.access_key, k.active, k.created_at, k.last_used_at, k.revoked_at) for k in keys),
        allocations=tuple(_allocation_row(sku, a) for sku, a in allocations),
        prices=tuple(PriceRow(sku, int(price), cur) for sku, price, cur in prices),
    )
