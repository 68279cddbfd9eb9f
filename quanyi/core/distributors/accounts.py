"""Distributors (代理): invites, referrals, cost prices, prepaid balance, bulk purchases and
the figures of their panel.

Every change is a conditional UPDATE: an invite is used once (``used_at IS NULL``), a
parent's sub-distributor count stays within its limit (``sub_count < invite_limit``), a
balance never goes negative (``balance >= amount``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.books import commissions, ledger
from quanyi.core.catalog.products import get_product
from quanyi.core.distributors import pending
from quanyi.core.errors import (
    AlreadyExists,
    Forbidden,
    InsufficientBalance,
    InvalidInput,
    NotForSale,
    NotFound,
    OutOfStock,
    QuanyiError,
)
from quanyi.core.models import (
    Allocation,
    AllocationMode,
    BalanceEntry,
    Channel,
    ChannelKind,
    ChannelPrice,
    Commission,
    CommissionStatus,
    CostPrice,
    Distributor,
    DistributorInvite,
    Order,
    OrderLine,
    OrderStatus,
    Product,
    ProductKind,
    StockStatus,
    User,
    utcnow,
)
from quanyi.core.money import Money
from quanyi.core.platform import audit, outbox
from quanyi.core.platform.db import rowcount
from quanyi.core.risk import rules as risk
from quanyi.core.stock import allocations as channels

INVITE_PREFIX = "inv_"
REFERRAL_PREFIX = "ref_"
MAX_BULK = 10_000


class InviteInvalid(QuanyiError):
    code = "invite_invalid"


def _token(n: int = 12) -> str:
    return secrets.token_urlsafe(n).replace("-", "x").replace("_", "y")


async def get_by_user(session: AsyncSession, user_id: int) -> Distributor | None:
    return await session.scalar(select(Distributor).where(Distributor.user_id == user_id))


async def require(session: AsyncSession, user_id: int) -> Distributor:
    """The caller as an active distributor, or Forbidden."""
    distributor = await get_by_user(session, user_id)
    if distributor is None or not distributor.active:
        raise Forbidden("only distributors can do this", key="err_distributors.only_distributors")
    return distributor


async def resolve(session: AsyncSession, ref: str) -> Distributor:
    """A distributor by Telegram user id, ``@username`` or storefront channel code."""
    channel = await channels.resolve_holder(session, ref)
    distributor = await session.scalar(select(Distributor).where(Distributor.channel_id == channel.id))
    if distributor is None:
        raise NotFound(f"no distributor {ref}", key="err_distributors.no_distributor", channel=ref)
    return distributor


# --- invites and referrals -----------------------------------------------------------------


async def create_invite(
    session: AsyncSession,
    *,
    created_by: str,
    parent_user_id: int | None = None,
    tier: str = "default",
    invite_limit: int = 0,
    hours: int = 72,
    max_depth: int = 3,
) -> DistributorInvite:
    """A one-time invite. The operator's has no parent; a distributor's makes a
    sub-distributor, within its limit and the depth limit."""
    tier = (tier or "").strip().lower()
    if not tier or len(tier) > 32 or not tier.replace("-", "").replace("_", "").isalnum() or not tier.isascii():
        raise InvalidInput("tier: 1-32 letters, digits, '-' or '_'", key="err_distributors.tier_form")
    if invite_limit < 0 or not 1 <= hours <= 24 * 30:
        raise InvalidInput(
            "invite limit must be 0 or more, validity 1 hour to 30 days", key="err_distributors.invite_terms"
        )
    parent_id: int | None = None
    if parent_user_id is not None:
        parent = await require(session, parent_user_id)
        if parent.depth >= max_depth:
            raise Forbidden(
                f"distributors at level {parent.depth} may not invite (the limit is {max_depth} levels)",
                key="err_distributors.invite_depth",
                depth=parent.depth,
                max_depth=max_depth,
            )
        now = utcnow()
        open_invites = await session.scalar(
            select(func.count()).where(
                DistributorInvite.parent_id == parent.id,
                DistributorInvite.used_at.is_(None),
                DistributorInvite.expires_at > now,
            )
        )
        if parent.sub_count + int(open_invites or 0) >= parent.invite_limit:
            raise Forbidden(
                f"invite limit reached ({parent.invite_limit} sub-distributors)",
                key="err_distributors.invite_limit",
                limit=parent.invite_limit,
            )
        parent_id = parent.id
        tier = parent.tier
        invite_limit = 0
    invite = DistributorInvite(
        token=_token(),
        parent_id=parent_id,
        tier=tier,
        invite_limit=invite_limit,
        created_by=created_by[:64],
        expires_at=utcnow() + timedelta(hours=hours),
    )
    session.add(invite)
    await session.flush()
    return invite


async def accept_invite(session: AsyncSession, token: str, *, user_id: int, name: str, currency: str) -> Distributor:
    """Make ``user_id`` a distributor with a one-time invite. Refused with a reason, and
    nothing changed, when the invite is used, expired, or its inviter is at its limit."""
    if not (0 < len(token) <= 32 and token.isascii() and token.replace("-", "").replace("_", "").isalnum()):
        raise InviteInvalid("this invite link is not valid", key="err_distributors.invite_invalid", reason="invalid")
    if await get_by_user(session, user_id) is not None:
        raise InviteInvalid(
            "you are a distributor already", key="err_distributors.already_distributor", reason="already_distributor"
        )
    now = utcnow()
    used = await session.execute(
        update(DistributorInvite)
        .where(
            DistributorInvite.token == token,
            DistributorInvite.used_at.is_(None),
            DistributorInvite.expires_at > now,
        )
        .values(used_by=user_id, used_at=now)
    )
    if not rowcount(used):
        # Which one, so the chat can say it: unknown, used, or expired.
        known = (
            await session.execute(select(DistributorInvite.used_at).where(DistributorInvite.token == token))
        ).first()
        reason = "invalid" if known is None else "used" if known.used_at is not None else "expired"
        raise InviteInvalid(
            "this invite link was used already or has expired", key="err_distributors.invite_spent", reason=reason
        )
    invite = await session.scalar(select(DistributorInvite).where(DistributorInvite.token == token))
    assert invite is not None
    depth = 1
    if invite.parent_id is not None:
        grown = await session.execute(
            update(Distributor)
            .where(
                Distributor.id == invite.parent_id,
                Distributor.active.is_(True),
                Distributor.sub_count < Distributor.invite_limit,
            )
            .values(sub_count=Distributor.sub_count + 1)
        )
        if not rowcount(grown):
            raise InviteInvalid(
                "the distributor who invited you has reached its limit",
                key="err_distributors.parent_limit",
                reason="parent_limit",
            )
        parent_depth = await session.scalar(select(Distributor.depth).where(Distributor.id == invite.parent_id))
        depth = int(parent_depth or 0) + 1
    try:
        # Two invites accepted by one user at once: the second finds the storefront taken
        # and is refused like any other invalid invite (its transaction rolls back).
        async with session.begin_nested():
            channel = Channel(
                code=f"agent-{user_id}"[:32],
                name=(name or str(user_id))[:100],
                kind=ChannelKind.DISTRIBUTOR,
                active=True,
            )
            session.add(channel)
            await session.flush()
            distributor = Distributor(
                user_id=user_id,
                name=(name or str(user_id))[:100],
                tier=invite.tier,
                parent_id=invite.parent_id,
                depth=depth,
                channel_id=channel.id,
                referral_code=_token(8),
                balance=0,
                currency=currency,
                invite_limit=invite.invite_limit,
                sub_count=0,
                active=True,
            )
            session.add(distributor)
            await session.flush()
    except IntegrityError:
        raise InviteInvalid(
            "you are a distributor already", key="err_distributors.already_distributor", reason="already_distributor"
        ) from None
    if distributor.parent_id is not None:
        from quanyi.core.distributors import notices

        joined = {"name": distributor.name, "tier": distributor.tier, "user_id": user_id}
        await notices.tell(session, distributor.parent_id, notices.SUB_JOINED, joined)
    return distributor


async def record_referral(session: AsyncSession, user_id: int, code: str) -> Distributor | None:
    """Make the buyer a customer of the distributor whose referral code it came with, unless
    an earlier link got there first. Returns the distributor the buyer belongs to."""
    if not (0 < len(code) <= 24 and code.isascii() and code.isalnum()):
        return None
    distributor = await session.scalar(
        select(Distributor).where(Distributor.referral_code == code, Distributor.active.is_(True))
    )
    if distributor is None or distributor.user_id == user_id:
        return None
    await session.execute(
        update(User)
        .where(User.id == user_id, User.referred_by.is_(None))
        .values(referred_by=distributor.id, referred_at=utcnow())
    )
    owner = await session.scalar(select(User.referred_by).where(User.id == user_id))
    return await session.get(Distributor, owner) if owner is not None else None


# --- prices and balance --------------------------------------------------------------------


async def cost_price(session: AsyncSession, distributor: Distributor, product: Product) -> int:
    """What the distributor pays per unit: its own price, else its tier's, else the list price."""
    rows = dict(
        (
            await session.execute(
                select(CostPrice.scope, CostPrice.price).where(
                    CostPrice.product_id == product.id,
                    CostPrice.scope.in_([f"distributor:{distributor.id}", f"tier:{distributor.tier}"]),
                )
            )
        ).all()
    )
    return rows.get(f"distributor:{distributor.id}", rows.get(f"tier:{distributor.tier}", product.price))


async def set_cost_price(
    session: AsyncSession, sku: str, price: int | None, *, tier: str | None = None, distributor: str | None = None
) -> str:
    """Set (or remove, with None) a tier's or one distributor's cost price. Returns the scope."""
    if (tier is None) == (distributor is None):
        raise InvalidInput("give a tier or a distributor", key="err_distributors.tier_or_distributor")
    product = await get_product(session, sku)
    scope = (
        f"tier:{tier.strip().lower()}"
        if tier is not None
        else f"distributor:{(await resolve(session, distributor or '')).id}"
    )
    row = await session.scalar(select(CostPrice).where(CostPrice.scope == scope, CostPrice.product_id == product.id))
    if price is None:
        if row is not None:
            await session.delete(row)
        return scope
    channels.check_price_limits(product, price, ceiling=False)
    if row is None:
        session.add(CostPrice(scope=scope, product_id=product.id, price=price))
    else:
        row.price = price
        row.updated_at = utcnow()
    await session.flush()
    return scope


async def set_resale_price(session: AsyncSession, user_id: int, sku: str, price: int) -> None:
    """A distributor's price for its own customers: within floor and ceiling, not under its cost."""
    distributor = await require(session, user_id)
    product = await get_product(session, sku)
    cost = await cost_price(session, distributor, product)
    if price < cost:
        raise InvalidInput(
            f"the resale price may not be under your cost {Money(cost, product.currency)}",
            key="err_distributors.under_cost",
            cost=str(Money(cost, product.currency)),
        )
    channel = await session.get(Channel, distributor.channel_id)
    assert channel is not None
    await channels.set_channel_price(session, channel.code, sku, price, ceiling=True)


async def adjust_balance(
    session: AsyncSession,
    distributor: Distributor,
    amount: int,
    *,
    reason: str,
    actor: str,
    note: str = "",
    order_id: int | None = None,
    counter: str = ledger.CASH,
) -> int:
    """Add (or, negative, take) prepaid balance; never below zero. Returns the new balance.

    The ledger moves the same amount between the distributor's balance account and
    ``counter``: the operator's cash for a top-up or a correction, revenue for a bulk
    purchase, the distributor's frozen account for a withdrawal."""
    if amount == 0:
        raise InvalidInput("amount must not be zero", key="err_distributors.amount_zero")
    query = update(Distributor).where(Distributor.id == distributor.id)
    if amount < 0:
        query = query.where(Distributor.balance >= -amount)
    result = await session.execute(query.values(balance=Distributor.balance + amount).returning(Distributor.balance))
    after = result.scalar()
    if after is not None:
        audit.note(
            session,
            f"balance {reason}"[:64],
            "distributor",
            distributor.id,
            {"balance": int(after) - amount},
            {"balance": int(after), "amount": amount},
        )
    if after is None:
        have = await session.scalar(select(Distributor.balance).where(Distributor.id == distributor.id))
        raise InsufficientBalance(
            f"balance {Money(int(have or 0), distributor.currency)} is short of {Money(-amount, distributor.currency)}",
            key="err_distributors.balance_short",
            balance=int(have or 0),
            have=str(Money(int(have or 0), distributor.currency)),
            short=str(Money(-amount, distributor.currency)),
        )
    entry = BalanceEntry(
        distributor_id=distributor.id,
        amount=amount,
        balance_after=int(after),
        currency=distributor.currency,
        reason=reason,
        order_id=order_id,
        note=note[:255],
        actor=actor[:64],
    )
    session.add(entry)
    await session.flush()
    # Money into the balance is owed to the distributor: a credit on its account.
    await ledger.post(
        session,
        f"balance:{entry.id}",
        f"balance_{reason}"[:32],
        ledger.transfer(counter, ledger.distributor(distributor.id, "balance"), amount, distributor.currency),
        order_id=order_id,
        distributor_id=distributor.id,
        memo=note,
    )
    return int(after)


# --- bulk purchase -------------------------------------------------------------------------


async def bulk_buy(
    session: AsyncSession,
    *,
    user_id: int,
    sku: str,
    quantity: int,
    chat_id: int,
    language: str,
    request_key: str | None = None,
    risk_secret: bytes | None = None,
) -> Order:
    """A distributor buys ``quantity`` codes at its cost from its balance and its allocation.

    All or nothing: if the balance, the allocation or the pool is short, the error says which
    and the caller's transaction rolls everything back. The codes go out as a CSV document
    (outbox kind ``bulk_delivery``); the distributor's upline earns its level commissions.
    The same ``request_key`` twice (a double tap seen by two replicas) buys once: the second
    is refused with ``AlreadyExists``.
    """
    from quanyi.core.catalog.quote import quote_bulk
    from quanyi.core.sales.orders import new_order_number
    from quanyi.core.stock.items import take_items

    if not 1 <= quantity <= MAX_BULK:
        raise InvalidInput(
            f"quantity must be between 1 and {MAX_BULK}", key="err_distributors.bulk_quantity", most=MAX_BULK
        )
    distributor = await require(session, user_id)
    product = await get_product(session, sku)
    if not product.active:
        raise NotFound(f"no product {sku}", key="err_distributors.no_product", sku=sku)
    if product.kind != ProductKind.CARD_KEY:
        raise NotForSale(
            f"{product.name} is issued per order; only card keys are bought in bulk",
            key="err_distributors.not_bulk",
            name=product.name,
        )
    if product.currency != distributor.currency:
        raise InvalidInput(
            f"{sku} is priced in {product.currency}, your balance is in {distributor.currency}",
            key="err_distributors.currency_mismatch",
            sku=sku,
            product_currency=product.currency,
            balance_currency=distributor.currency,
        )
    allocation = await session.scalar(
        select(Allocation).where(Allocation.channel_id == distributor.channel_id, Allocation.product_id == product.id)
    )
    if allocation is None:
        raise Forbidden(
            f"you have no allocation of {product.name}", key="err_distributors.no_allocation", name=product.name
        )
    priced = await quote_bulk(session, distributor, product, quantity)
    cost, amount = priced.lines[0].unit_price, priced.payable
    if distributor.balance < amount:
        raise InsufficientBalance(
            f"{quantity} x {Money(cost, product.currency)} = {Money(amount, product.currency)}; "
            f"your balance is {Money(distributor.balance, product.currency)}",
            key="err_distributors.bulk_balance_short",
            balance=distributor.balance,
            quantity=quantity,
            cost=str(Money(cost, product.currency)),
            total=str(Money(amount, product.currency)),
            have=str(Money(distributor.balance, product.currency)),
        )
    storefront = (await session.get(Channel, distributor.channel_id)).code  # type: ignore[union-attr]
    # Before any allocation unit or stock is taken; the caller records a refusal (risk.record).
    await risk.screen(
        session,
        risk.Screening(
            user_id=user_id,
            channel=storefront,
            sku=product.sku,
            quantity=quantity,
            amount=amount,
            currency=product.currency,
            language=language,
        ),
        secret=risk_secret or risk.PROCESS_SECRET,
    )
    quota = allocation.id if allocation.mode == AllocationMode.QUOTA else None
    await channels.reserve_units(session, product.id, quota, quantity, sold=True)
    now = utcnow()
    order = Order(
        number=new_order_number(now),
        user_id=user_id,
        chat_id=chat_id,
        language=language,
        channel=storefront,
        distributor_id=distributor.parent_id,
        status=OrderStatus.DELIVERED,
        currency=product.currency,
        list_amount=amount,
        discount_amount=0,
        amount=amount,
        payment_method="balance",
        payment_option="balance",
        created_at=now,
        expires_at=now,
        paid_at=now,
        delivered_at=now,
        idempotency_key=request_key[:64] if request_key else None,
        pricing=priced.snapshot(),
    )
    try:
        async with session.begin_nested():
            session.add(order)
            await session.flush()
    except IntegrityError:
        raise AlreadyExists("this purchase was made already", key="err_distributors.purchase_made") from None
    line = OrderLine(
        order_id=order.id,
        line_no=1,
        product_id=product.id,
        sku=product.sku,
        name=product.name,
        quantity=quantity,
        unit_price=cost,
        amount=amount,
        list_price=cost,
        cost_price=cost,
        allocation_id=quota,
        net_amount=amount,
    )
    session.add(line)
    await session.flush()
    taken = await take_items(
        session,
        product_id=product.id,
        order_id=order.id,
        order_line_id=line.id,
        quantity=quantity,
        status=StockStatus.SOLD,
    )
    if len(taken) < quantity:
        raise OutOfStock(
            f"only {len(taken)} codes of {product.name} left in stock",
            key="err_distributors.bulk_out_of_stock",
            available=len(taken),
            name=product.name,
        )
    await adjust_balance(
        session,
        distributor,
        -amount,
        reason="bulk_purchase",
        actor=f"distributor:{distributor.id}",
        order_id=order.id,
        counter=ledger.REVENUE,
    )
    await commissions.record_for_line(
        session,
        order,
        line,
        head_id=distributor.parent_id,
        seller_cost=None,
        currency=product.currency,
        status=CommissionStatus.PENDING,
    )
    await commissions.earn(session, order.id)  # paid from the balance at once: earned now
    outbox.enqueue(session, chat_id=chat_id, kind="bulk_delivery", payload={"order_id": order.id}, language=language)
    return order


# --- the panel -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AllocationRow:
    sku: str
    name: str
    mode: str
    left: int
    threshold: int


@dataclass(frozen=True)
class PriceRow:
    sku: str
    name: str
    currency: str
    cost: int
    resale: int | None
    list_price: int
    floor: int | None
    ceiling: int | None
    product_id: int = 0


@dataclass(frozen=True)
class SubRow:
    user_id: int
    name: str
    tier: str
    subs: int
    active: bool


@dataclass(frozen=True)
class Panel:
    distributor: Distributor
    allocations: list[AllocationRow]
    sales_today: tuple[int, int]  # orders, amount (in the distributor's currency)
    sales_month: tuple[int, int]
    commission_pending: int
    commission_available: int
    subs: list[SubRow] = field(default_factory=list)
    prices: list[PriceRow] = field(default_factory=list)
    # Pending commission by the day it becomes available (the settlement that day releases it).
    pending_by_day: list[tuple[date, int]] = field(default_factory=list)


def _left(allocation: Allocation) -> int:
    """Units left of a quota; -1 for a shared-pool allocation (no cap of its own)."""
    if allocation.mode != AllocationMode.QUOTA:
        return -1
    return allocation.allocated - allocation.reserved - allocation.sold


def _day_start(tz: str, now: datetime) -> tuple[datetime, datetime]:
    local = now.astimezone(ZoneInfo(tz))
    day = datetime.combine(local.date(), time(), tzinfo=local.tzinfo)
    return day, day.replace(day=1)


async def panel(session: AsyncSession, user_id: int, *, tz: str, confirm_days: int = 7) -> Panel:
    """Everything a distributor may see about itself: nothing of anyone else's but its own
    direct sub-distributors' names and sizes."""
    distributor = await require(session, user_id)
    alloc_rows = (
        await session.execute(
            select(Allocation, Product)
            .join(Product, Product.id == Allocation.product_id)
            .where(Allocation.channel_id == distributor.channel_id)
            .order_by(Product.sort_order, Product.id)
        )
    ).all()
    allocations = [
        AllocationRow(
            p.sku, p.name, a.mode, a.allocated - a.reserved - a.sold if a.mode == "quota" else -1, a.threshold
        )
        for a, p in alloc_rows
    ]
    day, month = _day_start(tz, utcnow())
    own_sales = (Order.distributor_id == distributor.id) | (
        Order.channel == select(Channel.code).where(Channel.id == distributor.channel_id).scalar_subquery()
    )

    async def sales(since: datetime) -> tuple[int, int]:
        row = (
            await session.execute(
                select(func.count(), func.coalesce(func.sum(OrderLine.list_price * OrderLine.quantity), 0))
                .select_from(Order)
                .join(OrderLine, OrderLine.order_id == Order.id)
                .where(
                    own_sales,
                    Order.user_id != distributor.user_id,
                    Order.status.in_([OrderStatus.PAID, OrderStatus.DELIVERED]),
                    Order.paid_at >= since,
                )
            )
        ).one()
        return int(row[0]), int(row[1] or 0)

    totals = dict(
        (
            await session.execute(
                select(Commission.status, func.coalesce(func.sum(Commission.amount), 0))
                .where(Commission.distributor_id == distributor.id)
                .group_by(Commission.status)
            )
        ).all()
    )
    subs = [
        SubRow(d.user_id, d.name, d.tier, d.sub_count, d.active)
        for d in await session.scalars(
            select(Distributor).where(Distributor.parent_id == distributor.id).order_by(Distributor.id)
        )
    ]
    resale = dict(
        (
            await session.execute(
                select(ChannelPrice.product_id, ChannelPrice.price).where(
                    ChannelPrice.channel_id == distributor.channel_id
                )
            )
        ).all()
    )
    prices = []
    for _, product in alloc_rows:
        prices.append(
            PriceRow(
                product.sku,
                product.name,
                product.currency,
                await cost_price(session, distributor, product),
                resale.get(product.id),
                product.price,
                product.floor_price,
                product.ceiling_price,
                product.id,
            )
        )
    return Panel(
        distributor=distributor,
        allocations=allocations,
        sales_today=await sales(day),
        sales_month=await sales(month),
        commission_pending=int(totals.get(CommissionStatus.PENDING, 0)),
        commission_available=int(totals.get(CommissionStatus.AVAILABLE, 0)),
        subs=subs,
        prices=prices,
        pending_by_day=await pending.by_day(session, distributor.id, tz=tz, confirm_days=confirm_days),
    )


async def list_distributors(session: AsyncSession) -> list[tuple[Distributor, str | None]]:
    rows = await session.execute(
        select(Distributor, User.username).outerjoin(User, User.id == Distributor.user_id).order_by(Distributor.id)
    )
    return [(d, username) for d, username in rows.all()]


async def update_distributor(
    session: AsyncSession,
    ref: str,
    *,
    tier: str | None = None,
    invite_limit: int | None = None,
    active: bool | None = None,
) -> Distributor:
    distributor = await resolve(session, ref)
    if tier is not None:
        distributor.tier = tier.strip().lower()
    if invite_limit is not None:
        if invite_limit < 0:
            raise InvalidInput("invite limit must be 0 or more", key="err_distributors.invite_limit_negative")
        distributor.invite_limit = invite_limit
    if active is not None:
        distributor.active = active
    await session.flush()
    return distributor
