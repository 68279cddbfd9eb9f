"""Distributors: one-time invites within limits, referrals (first link wins), resale prices,
all-or-nothing bulk purchases, and a panel that shows each distributor only its own figures."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, update

from quanyi.core.books import commissions
from quanyi.core.catalog.products import add_product, update_product
from quanyi.core.distributors import accounts as distributors
from quanyi.core.distributors.accounts import InsufficientBalance, InviteInvalid
from quanyi.core.errors import AlreadyExists, Forbidden, InvalidInput, OutOfStock
from quanyi.core.models import (
    Allocation,
    BalanceEntry,
    Channel,
    Distributor,
    DistributorInvite,
    Order,
    OutboxMessage,
    Product,
    StockItem,
    User,
    utcnow,
)
from quanyi.core.money import Money
from quanyi.core.sales.orders import Buyer, remember_user
from quanyi.core.services import Core
from quanyi.core.stock import allocations as channels
from quanyi.core.stock.allocations import AllocationShort
from quanyi.core.stock.items import void_codes
from tests.helpers import new_order, product_with_stock, sandbox_event

# --- helpers other distributor tests import -------------------------------------------------


async def make_distributor(
    core: Core, user_id: int, *, parent: int | None = None, invite_limit: int = 0, language: str = "zh"
) -> Distributor:
    """A distributor made the way the bot makes one: the user talks to the bot, then opens an
    invite from the operator (``parent`` None) or from its parent distributor's Telegram id."""
    async with core.db.transaction() as session:
        await remember_user(session, Buyer(user_id, user_id, language, username=f"agent{user_id}"))
        invite = await distributors.create_invite(
            session,
            created_by="operator:9000" if parent is None else f"distributor:{parent}",
            parent_user_id=parent,
            invite_limit=invite_limit,
            max_depth=core.settings.max_distributor_depth,
        )
    async with core.db.transaction() as session:
        return await distributors.accept_invite(
            session, invite.token, user_id=user_id, name=f"Agent {user_id}", currency="CNY"
        )


async def refer(core: Core, buyer_id: int, distributor: Distributor, *, language: str = "zh") -> Distributor | None:
    """The buyer opens the distributor's referral link (``/start ref_<code>``)."""
    async with core.db.transaction() as session:
        await remember_user(session, Buyer(buyer_id, buyer_id, language))
        return await distributors.record_referral(session, buyer_id, distributor.referral_code)


async def top_up(core: Core, distributor: Distributor, amount: int) -> None:
    async with core.db.transaction() as session:
        await distributors.adjust_balance(session, distributor, amount, reason="top_up", actor="operator:9000")


async def allocation(core: Core, distributor: Distributor, sku: str = "VIP") -> tuple[int, int, int]:
    async with core.db.read() as session:
        row = (
            await session.execute(
                select(Allocation.allocated, Allocation.reserved, Allocation.sold)
                .join(Product, Product.id == Allocation.product_id)
                .where(Allocation.channel_id == distributor.channel_id, Product.sku == sku)
            )
        ).one()
    return tuple(row)  # type: ignore[return-value]


async def balance(core: Core, distributor: Distributor) -> int:
    async with core.db.read() as session:
        return int(await session.scalar(select(Distributor.balance).where(Distributor.id == distributor.id)))


# --- invites ---------------------------------------------------------------------------------


async def test_an_invite_opened_twice_at_once_makes_one_distributor(core):
    async with core.db.transaction() as session:
        invite = await distributors.create_invite(session, created_by="operator:9000")

    async def accept(user_id: int) -> Distributor | InviteInvalid:
        try:
            async with core.db.transaction() as session:
                return await distributors.accept_invite(
                    session, invite.token, user_id=user_id, name="x", currency="CNY"
                )
        except InviteInvalid as exc:
            return exc

    results = await asyncio.gather(*(accept(600 + n) for n in range(4)))
    made = [r for r in results if isinstance(r, Distributor)]
    assert len(made) == 1
    async with core.db.read() as session:
        assert (await session.scalars(select(Distributor.user_id))).all() == [made[0].user_id]
        assert await session.scalar(select(func.count()).where(Channel.kind == "distributor")) == 1
        used = await session.scalar(select(DistributorInvite.used_by).where(DistributorInvite.token == invite.token))
    assert used == made[0].user_id
    async with core.db.transaction() as session:
        with pytest.raises(InviteInvalid):
            await distributors.accept_invite(session, invite.token, user_id=699, name="late", currency="CNY")


async def test_sub_invites_stay_within_the_parents_limit_even_when_accepted_at_once(core):
    top = await make_distributor(core, 501, invite_limit=2)
    async with core.db.transaction() as session:
        first = await distributors.create_invite(session, created_by="distributor:501", parent_user_id=501)
        second = await distributors.create_invite(session, created_by="distributor:501", parent_user_id=501)
        # Outstanding invites count against the limit.
        with pytest.raises(Forbidden):
            await distributors.create_invite(session, created_by="distributor:501", parent_user_id=501)
        # The operator lowers the limit after both invites went out.
        await distributors.update_distributor(session, "501", invite_limit=1)

    async def accept(token: str, user_id: int) -> Distributor | InviteInvalid:
        try:
            async with core.db.transaction() as session:
                return await distributors.accept_invite(session, token, user_id=user_id, name="sub", currency="CNY")
        except InviteInvalid as exc:
            return exc

    results = await asyncio.gather(accept(first.token, 511), accept(second.token, 512))
    made = [r for r in results if isinstance(r, Distributor)]
    assert len(made) == 1 and (made[0].parent_id, made[0].depth) == (top.id, 2)
    async with core.db.read() as session:
        assert await session.scalar(select(Distributor.sub_count).where(Distributor.id == top.id)) == 1
        assert await session.scalar(select(func.count()).where(Distributor.parent_id == top.id)) == 1
        # The refused acceptance changed nothing: its invite is still unused.
        unused = await session.scalar(select(func.count()).where(DistributorInvite.used_at.is_(None)))
    assert unused == 1


async def test_the_network_stops_at_the_depth_limit(core):
    assert core.settings.max_distributor_depth == 3
    top = await make_distributor(core, 501, invite_limit=5)
    mid = await make_distributor(core, 502, parent=501)
    async with core.db.transaction() as session:
        # A sub-distributor's invites carry no limit of their own; the operator grants one.
        with pytest.raises(Forbidden):
            await distributors.create_invite(session, created_by="distributor:502", parent_user_id=502)
        await distributors.update_distributor(session, "502", invite_limit=5)
    leaf = await make_distributor(core, 503, parent=502)
    async with core.db.transaction() as session:
        await distributors.update_distributor(session, "503", invite_limit=5)
    assert [(d.depth, d.parent_id) for d in (top, mid, leaf)] == [(1, None), (2, top.id), (3, mid.id)]
    async with core.db.transaction() as session:
        with pytest.raises(Forbidden, match="level 3"):
            await distributors.create_invite(
                session, created_by="distributor:503", parent_user_id=503, max_depth=core.settings.max_distributor_depth
            )


async def test_an_expired_or_malformed_invite_is_refused_and_changes_nothing(core):
    async with core.db.transaction() as session:
        invite = await distributors.create_invite(session, created_by="operator:9000", hours=1)
        await session.execute(
            update(DistributorInvite)
            .where(DistributorInvite.id == invite.id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    for token in (invite.token, "no such token", "x" * 40, ""):
        async with core.db.transaction() as session:
            with pytest.raises(InviteInvalid):
                await distributors.accept_invite(session, token, user_id=601, name="late", currency="CNY")
    async with core.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Distributor)) == 0
        assert await session.scalar(select(DistributorInvite.used_by)) is None


# --- referrals -------------------------------------------------------------------------------


async def test_the_first_referral_link_wins_and_never_changes(core):
    one = await make_distributor(core, 501)
    two = await make_distributor(core, 502)
    async with core.db.transaction() as session:
        await remember_user(session, Buyer(7001, 7001, "zh"))

    async def follow(distributor: Distributor) -> Distributor | None:
        async with core.db.transaction() as session:
            return await distributors.record_referral(session, 7001, distributor.referral_code)

    owners = await asyncio.gather(follow(one), follow(two), follow(one), follow(two))
    winner = owners[0]
    assert winner is not None and winner.id in (one.id, two.id)
    assert {o.id for o in owners if o is not None} == {winner.id}
    loser = two if winner.id == one.id else one
    async with core.db.read() as session:
        first_at = await session.scalar(select(User.referred_at).where(User.id == 7001))
    assert (await refer(core, 7001, loser)).id == winner.id
    async with core.db.read() as session:
        user = await session.get(User, 7001)
    assert (user.referred_by, user.referred_at) == (winner.id, first_at)


async def test_a_distributors_own_referral_link_is_ignored(core):
    agent = await make_distributor(core, 501)
    assert await refer(core, 501, agent) is None
    async with core.db.read() as session:
        assert await session.scalar(select(User.referred_by).where(User.id == 501)) is None


# --- prices ----------------------------------------------------------------------------------


async def test_a_resale_price_must_cover_the_cost_and_stay_within_floor_and_ceiling(core, tmp_path):
    await product_with_stock(core, tmp_path, price="20.00", units=3)
    agent = await make_distributor(core, 501)
    async with core.db.transaction() as session:
        await update_product(session, "VIP", floor="10.00", ceiling="25.00")
        await distributors.set_cost_price(session, "VIP", 1200, distributor="501")

    async def resale(price: int) -> None:
        async with core.db.transaction() as session:
            await distributors.set_resale_price(session, 501, "VIP", price)

    with pytest.raises(InvalidInput, match="cost") as under_cost:
        await resale(1199)
    assert under_cost.value.details == {"cost": str(Money(1200, "CNY"))}
    with pytest.raises(InvalidInput, match="ceiling"):
        await resale(2501)
    await resale(2500)
    # The floor is raised over the cost afterwards: a price under it is refused.
    async with core.db.transaction() as session:
        await update_product(session, "VIP", floor="15.00")
    with pytest.raises(InvalidInput, match="floor"):
        await resale(1300)
    await resale(1888)
    with pytest.raises(Forbidden):
        async with core.db.transaction() as session:
            await distributors.set_resale_price(session, 7001, "VIP", 1888)

    async with core.db.transaction() as session:
        await channels.allocate(session, "VIP", "501", 2)
    await refer(core, 7001, agent)
    async with core.db.read() as session:
        product = await session.scalar(select(Product))
        assert await channels.sellable_counts(session, [product], user_id=7001) == {product.id: (2, 1888)}
        assert await channels.sellable_counts(session, [product], user_id=7002) == {product.id: (1, 2000)}


async def test_concurrent_debits_never_take_the_balance_below_zero(core):
    agent = await make_distributor(core, 501)
    await top_up(core, agent, 10_000)

    async def debit() -> int | InsufficientBalance:
        try:
            async with core.db.transaction() as session:
                return await distributors.adjust_balance(session, agent, -3_000, reason="adjustment", actor="cli")
        except InsufficientBalance as exc:
            return exc

    results = await asyncio.gather(*(debit() for _ in range(5)))
    assert sorted(r for r in results if isinstance(r, int)) == [1_000, 4_000, 7_000]
    assert await balance(core, agent) == 1_000
    async with core.db.read() as session:
        entries = (
            await session.execute(
                select(BalanceEntry.amount, BalanceEntry.balance_after).order_by(BalanceEntry.balance_after.desc())
            )
        ).all()
    assert entries == [(10_000, 10_000), (-3_000, 7_000), (-3_000, 4_000), (-3_000, 1_000)]


# --- bulk purchases --------------------------------------------------------------------------


@pytest.mark.parametrize("bulk_at", [0, 25])
async def test_a_bulk_purchase_racing_chat_sales_never_oversells_the_quota(core, tmp_path, backend, bulk_at):
    """Quota 50, balance for 50: a bulk purchase of 30 and 30 chat orders from the agent's
    customers arrive at once. Either the bulk purchase gets all 30 or none."""
    await product_with_stock(core, tmp_path, units=60)
    agent = await make_distributor(core, 501)
    async with core.db.transaction() as session:
        await distributors.set_cost_price(session, "VIP", 1000, tier="default")
        await channels.allocate(session, "VIP", "501", 50)
    await top_up(core, agent, 50 * 1000)
    buyers = list(range(7000, 7030))
    for buyer in buyers:
        await refer(core, buyer, agent)

    async def bulk() -> Order | AllocationShort:
        try:
            async with core.db.transaction() as session:
                return await distributors.bulk_buy(
                    session, user_id=501, sku="VIP", quantity=30, chat_id=501, language="zh"
                )
        except AllocationShort as exc:
            return exc

    async def chat(user_id: int) -> Order | OutOfStock:
        try:
            return (await new_order(core, user_id=user_id)).order
        except OutOfStock as exc:
            return exc

    jobs = [chat(buyer) for buyer in buyers]
    jobs.insert(bulk_at, bulk())
    results = await asyncio.gather(*jobs)
    bulk_result = results.pop(bulk_at)
    placed = [r for r in results if isinstance(r, Order)]
    assert all(type(r) is AllocationShort for r in results if not isinstance(r, Order))
    assert {o.channel for o in placed} == {"agent-501"}
    bought = isinstance(bulk_result, Order)
    if backend == "sqlite":  # one writer at a time, in arrival order
        assert bought == (bulk_at == 0)

    async with core.db.read() as session:
        sold = await session.scalar(select(func.count()).where(StockItem.status == "sold"))
        reserved = await session.scalar(select(func.count()).where(StockItem.status == "reserved"))
        entries = (
            await session.execute(select(BalanceEntry.amount, BalanceEntry.balance_after).order_by(BalanceEntry.id))
        ).all()
        bulk_orders = (await session.scalars(select(Order).where(Order.payment_method == "balance"))).all()
        deliveries = await session.scalar(select(func.count()).where(OutboxMessage.kind == "bulk_delivery"))
    if bought:
        assert len(placed) == 20
        assert await allocation(core, agent) == (50, 20, 30)
        assert await balance(core, agent) == 20_000
        assert entries == [(50_000, 50_000), (-30_000, 20_000)]
        assert [(o.status, o.amount) for o in bulk_orders] == [("delivered", 30_000)]
        assert (sold, reserved, deliveries) == (30, 20, 1)
    else:
        assert len(placed) == 30
        assert await allocation(core, agent) == (50, 30, 0)
        assert await balance(core, agent) == 50_000
        assert entries == [(50_000, 50_000)]
        assert (bulk_orders, sold, reserved, deliveries) == ([], 0, 30, 0)


async def test_a_refused_bulk_purchase_changes_nothing(core, tmp_path):
    codes = await product_with_stock(core, tmp_path, units=10)
    async with core.db.transaction() as session:
        await add_product(session, sku="GOLD", name="Gold", kind="card_key", price=Money.parse("30.00", "CNY"))
    agent = await make_distributor(core, 501)
    async with core.db.transaction() as session:
        await distributors.set_cost_price(session, "VIP", 1000, distributor="501")
        await channels.allocate(session, "VIP", "501", 5)
    await top_up(core, agent, 4999)

    async def state() -> tuple[object, ...]:
        async with core.db.read() as session:
            return (
                await balance(core, agent),
                await allocation(core, agent),
                await session.scalar(select(func.count()).where(StockItem.status == "available")),
                await session.scalar(select(func.count()).select_from(Order)),
                await session.scalar(select(func.count()).select_from(BalanceEntry)),
                await session.scalar(select(func.count()).select_from(OutboxMessage)),
            )

    async def bulk(quantity: int, sku: str = "VIP", user_id: int = 501) -> None:
        async with core.db.transaction() as session:
            await distributors.bulk_buy(
                session, user_id=user_id, sku=sku, quantity=quantity, chat_id=user_id, language="zh"
            )

    before = await state()
    with pytest.raises(InsufficientBalance):
        await bulk(5)  # 5 x 10.00 > 49.99
    assert await state() == before
    await top_up(core, agent, 10_000)
    before = await state()
    with pytest.raises(AllocationShort):
        await bulk(6)
    with pytest.raises(Forbidden):
        await bulk(1, sku="GOLD")
    for quantity in (0, -1, distributors.MAX_BULK + 1):
        with pytest.raises(InvalidInput):
            await bulk(quantity)
    with pytest.raises(Forbidden):
        await bulk(1, user_id=7001)  # a buyer, not a distributor
    assert await state() == before

    # Within the quota but the codes are gone (voided as leaked): refused whole, even the
    # allocation's counters roll back.
    leaked = tmp_path / "leaked.txt"
    leaked.write_text("\n".join(codes[:7]) + "\n")
    await void_codes(core.db, core.keyring, "VIP", leaked)
    before = await state()
    with pytest.raises(OutOfStock) as short:
        await bulk(5)
    assert type(short.value) is OutOfStock and short.value.details == {"available": 3, "name": "VIP membership"}
    assert await state() == before
    await bulk(3)
    assert await allocation(core, agent) == (5, 0, 3)
    assert await balance(core, agent) == 14_999 - 3_000


# --- who may do what -------------------------------------------------------------------------


async def test_buyers_and_deactivated_distributors_are_forbidden_distributor_actions(core, tmp_path):
    await product_with_stock(core, tmp_path, units=2)
    await make_distributor(core, 501)
    async with core.db.transaction() as session:
        await remember_user(session, Buyer(7001, 7001, "zh"))
        await distributors.update_distributor(session, "501", active=False)
    for user_id in (7001, 501):
        async with core.db.transaction() as session:
            with pytest.raises(Forbidden):
                await distributors.require(session, user_id)
            with pytest.raises(Forbidden):
                await distributors.panel(session, user_id, tz=core.settings.timezone)
            with pytest.raises(Forbidden):
                await distributors.bulk_buy(
                    session, user_id=user_id, sku="VIP", quantity=1, chat_id=user_id, language="zh"
                )
            with pytest.raises(Forbidden):
                await distributors.create_invite(session, created_by="x", parent_user_id=user_id)


# --- the panel -------------------------------------------------------------------------------


async def test_the_panel_counts_only_the_distributors_own_sales_by_local_day_and_month(core, tmp_path):
    await product_with_stock(core, tmp_path, price="20.00", units=30)
    agent = await make_distributor(core, 501, invite_limit=1)
    other = await make_distributor(core, 502)
    await make_distributor(core, 503, parent=501)
    async with core.db.transaction() as session:
        await commissions.set_rate(session, 1, 1000)
        await distributors.set_cost_price(session, "VIP", 1200, tier="default")
        for ref in ("501", "502"):
            await channels.allocate(session, "VIP", ref, 10)
        await distributors.set_resale_price(session, 501, "VIP", 1888)
        await distributors.set_resale_price(session, 502, "VIP", 1999)
    await top_up(core, agent, 10_000)

    tz = ZoneInfo(core.settings.timezone)
    local_now = utcnow().astimezone(tz)
    day = local_now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    second = timedelta(seconds=1)

    async def paid_sale(buyer: int, seller: Distributor, quantity: int = 1, paid_at=None) -> Order:
        await refer(core, buyer, seller)
        order = (await new_order(core, user_id=buyer, quantity=quantity)).order
        await core.fulfiller.submit(sandbox_event(order.number, order.amount))
        if paid_at is not None:
            async with core.db.transaction() as session:
                await session.execute(update(Order).where(Order.id == order.id).values(paid_at=paid_at))
        return order

    await paid_sale(8101, agent, quantity=2)  # now
    await paid_sale(8102, agent, paid_at=day)  # local midnight: today, though yesterday in UTC
    await paid_sale(8103, agent, paid_at=day - second)  # yesterday: this month unless today is the 1st
    await paid_sale(8104, agent, paid_at=month - second)  # last month
    await refer(core, 8105, agent)
    await new_order(core, user_id=8105)  # not paid
    await paid_sale(8201, other, quantity=3)  # the other distributor's customer
    async with core.db.transaction() as session:  # its own purchase is not a sale
        await distributors.bulk_buy(session, user_id=501, sku="VIP", quantity=2, chat_id=501, language="zh")

    async with core.db.read() as session:
        mine = await distributors.panel(session, 501, tz=core.settings.timezone)
        theirs = await distributors.panel(session, 502, tz=core.settings.timezone)

    yesterday_in_month = day > month
    assert mine.sales_today == (2, 3 * 1888)
    assert mine.sales_month == ((3, 4 * 1888) if yesterday_in_month else (2, 3 * 1888))
    # Per paid sale: margin (18.88 - 12.00) x qty, plus 10% of 18.88 x qty rounded down.
    # 2 units: 1376 + floor(377.6) = 1753; each single unit: 688 + floor(188.8) = 876.
    assert (mine.commission_pending, mine.commission_available) == (1753 + 3 * 876, 0)
    assert [(a.sku, a.mode, a.left) for a in mine.allocations] == [("VIP", "quota", 10 - 5 - 1 - 2)]
    assert [(p.cost, p.resale, p.list_price) for p in mine.prices] == [(1200, 1888, 2000)]
    assert [(s.user_id, s.subs) for s in mine.subs] == [(503, 0)]
    assert mine.distributor.balance == 10_000 - 2 * 1200

    # The other distributor sees its own sale and nothing of the first one's.
    assert theirs.sales_today == (1, 3 * 1999)
    # 3 x (19.99 - 12.00) = 23.97 margin; floor(5997 * 10%) = 599.
    assert theirs.commission_pending == 2397 + 599
    assert [(a.sku, a.left) for a in theirs.allocations] == [("VIP", 7)]
    assert [(p.resale, p.cost) for p in theirs.prices] == [(1999, 1200)]
    assert theirs.subs == []


async def test_one_purchase_request_tapped_twice_at_once_buys_once(core, tmp_path):
    """Two replicas handling the same confirm tap carry the same request key: one purchase."""
    await product_with_stock(core, tmp_path, units=10)
    agent = await make_distributor(core, 601)
    async with core.db.transaction() as session:
        await distributors.set_cost_price(session, "VIP", 1000, distributor="601")
        await channels.allocate(session, "VIP", "601", 8)
    await top_up(core, agent, 10_000)

    async def tap() -> str:
        try:
            async with core.db.transaction() as session:
                order = await distributors.bulk_buy(
                    session, user_id=601, sku="VIP", quantity=3, chat_id=601, language="zh", request_key="tap-1"
                )
                return order.number
        except AlreadyExists:
            return "refused"

    results = await asyncio.gather(tap(), tap())
    assert sorted(r == "refused" for r in results) == [False, True]
    assert await balance(core, agent) == 10_000 - 3 * 1000
    assert await allocation(core, agent) == (8, 0, 3)
    # A new request (a new confirm screen) buys again.
    async with core.db.transaction() as session:
        await distributors.bulk_buy(
            session, user_id=601, sku="VIP", quantity=1, chat_id=601, language="zh", request_key="tap-2"
        )
    assert await balance(core, agent) == 10_000 - 4 * 1000
