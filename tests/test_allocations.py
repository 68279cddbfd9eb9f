"""Allocations: channels' shares of one pool never oversell, and payment, expiry, cancel and
failure move each share's counters (reserved -> sold, or back)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from quanyi.core.errors import InvalidInput, OutOfStock
from quanyi.core.models import Order, OrderLine, Product, StockItem, utcnow
from quanyi.core.sales.fulfilment import PaymentOutcome, apply_payment
from quanyi.core.sales.orders import (
    Buyer,
    OrderRequest,
    PlacedOrder,
    cancel_by_buyer,
    checkout,
    expire_due,
    place_order,
)
from quanyi.core.services import Core
from quanyi.core.stock import allocations as channels
from quanyi.core.stock.allocations import AllocationShort, PoolLevel
from quanyi.core.stock.items import void_codes
from tests.helpers import product_with_stock, sandbox_event


async def sell(core: Core, channel: str, user_id: int, *, sku: str = "VIP", quantity: int = 1) -> PlacedOrder:
    """Place an order on a channel, as a partner API or the chat would."""
    return await checkout(
        core.db,
        core.payments,
        OrderRequest(
            buyer=Buyer(user_id=user_id, chat_id=user_id, language="zh"),
            sku=sku,
            quantity=quantity,
            method="sandbox",
            reservation=core.reservation,
            max_quantity=core.settings.max_quantity,
            channel=channel,
            stars_rate=core.settings.stars_rate,
        ),
    )


async def partner(core: Core, code: str, *, sku: str = "VIP", units: int = 0) -> None:
    async with core.db.transaction() as session:
        await channels.add_channel(session, code, f"Partner {code}")
        if units:
            await channels.allocate(session, sku, code, units)


async def pool(core: Core, sku: str = "VIP") -> PoolLevel:
    async with core.db.read() as session:
        [level] = await channels.pool_levels(session, sku)
    return level


def shares(level: PoolLevel) -> dict[str, tuple[str, int, int, int]]:
    """channel -> (mode, allocated, reserved, sold)."""
    return {a.channel: (a.mode, a.allocated, a.reserved, a.sold) for a in level.allocations}


def assert_sane(level: PoolLevel) -> None:
    for a in level.allocations:
        assert min(a.allocated, a.reserved, a.sold) >= 0, a
        if a.mode == "quota":
            assert a.reserved + a.sold <= a.allocated, a
    assert level.unallocated >= 0, level


async def sellable(core: Core, channel: str, sku: str = "VIP") -> int:
    async with core.db.read() as session:
        product = await session.scalar(select(Product).where(Product.sku == sku))
        counts = await channels.sellable_counts(session, [product], channel=channel)
    return counts[product.id][0]


async def expire_all(core: Core) -> list[str]:
    async with core.db.transaction() as session:
        return await expire_due(session, now=utcnow() + core.reservation + timedelta(minutes=1))


async def test_concurrent_sales_on_two_quotas_and_the_shared_pool_sell_exactly_each_share(core, tmp_path):
    """30 codes: partner pa holds 10, partner pb holds 10, the bot sells the 10 nobody holds.
    25 buyers rush each of the three at once."""
    await product_with_stock(core, tmp_path, units=30)
    await partner(core, "pa", units=10)
    await partner(core, "pb", units=10)
    rush = 25

    async def attempt(channel: str, user_id: int) -> Order | OutOfStock:
        try:
            return (await sell(core, channel, user_id)).order
        except OutOfStock as exc:
            return exc

    names = ("pa", "pb", "bot")
    results = await asyncio.gather(
        *(attempt(ch, 10_000 * (i + 1) + n) for n in range(rush) for i, ch in enumerate(names))
    )
    outcomes = {ch: results[i :: len(names)] for i, ch in enumerate(names)}
    placed = {ch: [r for r in rs if isinstance(r, Order)] for ch, rs in outcomes.items()}
    refused = {ch: [r for r in rs if not isinstance(r, Order)] for ch, rs in outcomes.items()}

    assert {ch: len(orders) for ch, orders in placed.items()} == {"pa": 10, "pb": 10, "bot": 10}
    # A quota holder is refused by its own quota, never because the pool ran dry under it.
    assert all(type(exc) is AllocationShort for ch in ("pa", "pb") for exc in refused[ch])
    assert all(type(exc) is OutOfStock for exc in refused["bot"])
    assert all(order.channel == ch for ch, orders in placed.items() for order in orders)

    level = await pool(core)
    assert_sane(level)
    assert shares(level) == {"pa": ("quota", 10, 10, 0), "pb": ("quota", 10, 10, 0)}
    assert (level.available, level.reserved, level.sold, level.unallocated) == (0, 30, 0, 0)
    async with core.db.read() as session:
        held = dict(
            (
                await session.execute(
                    select(StockItem.order_id, func.count())
                    .where(StockItem.status == "reserved")
                    .group_by(StockItem.order_id)
                )
            ).all()
        )
    # Each successful order holds exactly its one code; no code is held by two orders.
    assert held == {order.id: 1 for orders in placed.values() for order in orders}

    paid = {"pa": placed["pa"][:4], "pb": placed["pb"][:3], "bot": placed["bot"][:5]}
    outcomes_paid = await asyncio.gather(
        *(core.fulfiller.submit(sandbox_event(o.number, o.amount)) for orders in paid.values() for o in orders)
    )
    assert set(outcomes_paid) == {PaymentOutcome.DELIVERED}
    assert len(await expire_all(core)) == 30 - 12

    level = await pool(core)
    assert_sane(level)
    assert shares(level) == {"pa": ("quota", 10, 0, 4), "pb": ("quota", 10, 0, 3)}
    assert (level.available, level.reserved, level.sold) == (18, 0, 12)
    assert level.unallocated == 18 - (10 - 4) - (10 - 3) == 5
    assert (await sellable(core, "pa"), await sellable(core, "pb"), await sellable(core, "bot")) == (6, 7, 5)


async def test_payment_on_the_fast_and_the_careful_path_moves_reserved_units_to_sold(core, tmp_path):
    await product_with_stock(core, tmp_path, units=10)
    await partner(core, "pa", units=6)
    fast = (await sell(core, "pa", 1, quantity=2)).order
    careful = (await sell(core, "pa", 2, quantity=1)).order
    assert shares(await pool(core))["pa"] == ("quota", 6, 3, 0)

    # A batch of one plain sandbox event is settled by settle_batch.
    assert await core.fulfiller.submit(sandbox_event(fast.number, fast.amount)) == PaymentOutcome.DELIVERED
    assert shares(await pool(core))["pa"] == ("quota", 6, 1, 2)

    async with core.db.transaction() as session:
        outcome = await apply_payment(session, sandbox_event(careful.number, careful.amount), admin_ids=[9000])
    assert outcome == PaymentOutcome.DELIVERED
    level = await pool(core)
    assert shares(level)["pa"] == ("quota", 6, 0, 3)
    assert (level.available, level.sold, level.unallocated) == (7, 3, 4)
    assert_sane(level)


async def test_expiry_and_cancel_give_the_units_back_to_their_quota(core, tmp_path):
    await product_with_stock(core, tmp_path, units=5)
    await partner(core, "pa", units=3)
    first = (await sell(core, "pa", 1, quantity=2)).order
    await sell(core, "pa", 2, quantity=1)
    with pytest.raises(AllocationShort):
        await sell(core, "pa", 3)

    async with core.db.transaction() as session:
        await cancel_by_buyer(session, first.number, 1)
    assert shares(await pool(core))["pa"] == ("quota", 3, 1, 0)
    assert await sellable(core, "pa") == 2

    assert len(await expire_all(core)) == 1
    level = await pool(core)
    assert shares(level)["pa"] == ("quota", 3, 0, 0)
    assert (level.available, level.reserved, level.unallocated) == (5, 0, 2)
    # Both returned units can be sold again on the channel.
    await sell(core, "pa", 4, quantity=3)


async def test_a_paid_order_that_cannot_be_filled_gives_its_units_back(core, tmp_path):
    codes = await product_with_stock(core, tmp_path, units=3)
    await partner(core, "pa", units=3)
    order = (await sell(core, "pa", 1, quantity=2)).order
    # The whole batch turns out leaked: every code, the order's reserved two included, is voided.
    leaked = tmp_path / "leaked.txt"
    leaked.write_text("\n".join(codes) + "\n")
    report = await void_codes(core.db, core.keyring, "VIP", leaked)
    assert report.voided == 3

    assert await core.fulfiller.submit(sandbox_event(order.number, order.amount)) == PaymentOutcome.FAILED
    level = await pool(core)
    assert shares(level)["pa"] == ("quota", 3, 0, 0)
    assert (level.available, level.sold, level.void) == (0, 0, 3)
    async with core.db.read() as session:
        assert await session.scalar(select(Order.status).where(Order.id == order.id)) == "failed"


async def test_allocate_counts_pending_shared_sales_as_taken(core, tmp_path):
    await product_with_stock(core, tmp_path, units=10)
    await partner(core, "pa")
    for user_id in (1, 2, 3):
        await sell(core, "bot", user_id)  # pending: its codes are held, not in the pool

    async with core.db.transaction() as session:
        with pytest.raises(OutOfStock) as refused:
            await channels.allocate(session, "VIP", "pa", 8)
    assert refused.value.details == {"available": 7, "sku": "VIP"}
    async with core.db.transaction() as session:
        await channels.allocate(session, "VIP", "pa", 7)
    assert shares(await pool(core))["pa"] == ("quota", 7, 0, 0)

    # Everything not pending is promised to pa: the bot has nothing left to sell.
    with pytest.raises(OutOfStock):
        await sell(core, "bot", 4)
    assert await sellable(core, "bot") == 0
    assert len(await expire_all(core)) == 3
    assert (await pool(core)).unallocated == 3
    async with core.db.transaction() as session:
        with pytest.raises(OutOfStock):
            await channels.allocate(session, "VIP", "pa", 4)
    await sell(core, "bot", 5, quantity=3)
    assert_sane(await pool(core))


async def test_take_back_returns_only_units_no_order_holds(core, tmp_path):
    await product_with_stock(core, tmp_path, units=10)
    await partner(core, "pa", units=5)
    await sell(core, "pa", 1, quantity=2)

    async with core.db.transaction() as session:
        with pytest.raises(InvalidInput) as refused:
            await channels.take_back(session, "VIP", "pa", 4)
    assert refused.value.details == {"left": 3, "holder": "pa", "sku": "VIP"}
    async with core.db.transaction() as session:
        back = await channels.take_back(session, "VIP", "pa", 3)
    assert (back.allocated, back.reserved, back.sold) == (2, 2, 0)
    async with core.db.transaction() as session:
        with pytest.raises(InvalidInput):
            await channels.take_back(session, "VIP", "pa", 1)
    level = await pool(core)
    assert (level.available, level.unallocated) == (8, 8)
    assert_sane(level)


async def test_share_pool_turns_a_quota_into_uncapped_selling_from_the_pool(core, tmp_path):
    await product_with_stock(core, tmp_path, units=12)
    await partner(core, "pa", units=4)
    await partner(core, "pb", units=4)
    held = (await sell(core, "pa", 1, quantity=1)).order
    assert (await pool(core)).unallocated == 4

    async with core.db.transaction() as session:
        await channels.share_pool(session, "VIP", "pa")
    level = await pool(core)
    # The three units pa had left go back to the pool; the pending unit stays counted.
    assert shares(level)["pa"] == ("shared", 1, 1, 0)
    assert level.unallocated == 7
    assert await sellable(core, "pa") == 7

    # pa now sells past its old quota of 4, out of the shared pool, never into pb's quota.
    for user_id in range(10, 17):
        order = (await sell(core, "pa", user_id)).order
        async with core.db.read() as session:
            assert await session.scalar(select(OrderLine.allocation_id).where(OrderLine.order_id == order.id)) is None
    with pytest.raises(OutOfStock):
        await sell(core, "pa", 20)
    await sell(core, "pb", 21, quantity=4)
    # The order placed under the quota still settles against pa's counters.
    assert await core.fulfiller.submit(sandbox_event(held.number, held.amount)) == PaymentOutcome.DELIVERED
    level = await pool(core)
    assert shares(level) == {"pa": ("shared", 1, 0, 1), "pb": ("quota", 4, 4, 0)}
    assert (level.available, level.unallocated) == (0, 0)


async def test_concurrent_allocations_and_shared_sales_never_promise_more_than_the_pool(core, tmp_path):
    await product_with_stock(core, tmp_path, units=40)
    await partner(core, "pa")
    await partner(core, "pb")

    async def allocate(to: str) -> int:
        try:
            async with core.db.transaction() as session:
                await channels.allocate(session, "VIP", to, 6)
        except OutOfStock:
            return 0
        return 6

    async def shared_sale(user_id: int) -> int:
        try:
            await sell(core, "bot", user_id)
        except OutOfStock:
            return 0
        return 1

    jobs = [shared_sale(100 + n) for n in range(20)]
    for n in range(6):  # 36 units asked for, spread among the 20 sales
        jobs.insert(n * 4, allocate("pa" if n % 2 else "pb"))
    results = await asyncio.gather(*jobs)

    level = await pool(core)
    assert_sane(level)
    allocated = sum(a.allocated for a in level.allocations)
    sold_shared = level.reserved
    assert allocated + sold_shared <= 40
    assert sum(results) == allocated + sold_shared
    assert level.available == 40 - sold_shared
    assert level.unallocated == 40 - sold_shared - allocated


async def test_a_payment_racing_the_expiry_of_its_order_never_fails(core, tmp_path):
    """The expiry job cancels a batch of due orders in one transaction while a buyer pays
    one of them at the last second and another sale holds the quota row. Whichever wins,
    the payment is answered (delivered or kept for review), never a database error."""
    await product_with_stock(core, tmp_path, units=5)
    await partner(core, "pa", units=5)
    first = (await sell(core, "pa", 1)).order
    late = (await sell(core, "pa", 2)).order
    async with core.db.transaction() as session:  # both reservations ran out a moment ago
        await session.execute(update(Order).values(expires_at=utcnow() - timedelta(seconds=1)))

    async def expire() -> list[str]:
        async with core.db.transaction() as session:
            return await expire_due(session)

    async with core.db.transaction() as session:  # a sale on pa, not committed yet
        await place_order(
            session,
            core.payments,
            buyer=Buyer(user_id=3, chat_id=3, language="zh"),
            sku="VIP",
            quantity=1,
            method="sandbox",
            reservation=core.reservation,
            max_quantity=core.settings.max_quantity,
            channel="pa",
        )
        expiring = asyncio.create_task(expire())
        await asyncio.sleep(0.2)
        paying = asyncio.create_task(core.fulfiller.submit(sandbox_event(late.number, late.amount)))
        await asyncio.sleep(0.2)
    expired, outcome = await asyncio.gather(expiring, paying)

    assert first.number in expired
    assert outcome == (PaymentOutcome.NEEDS_REVIEW if late.number in expired else PaymentOutcome.DELIVERED)
    level = await pool(core)
    assert_sane(level)
    delivered = int(outcome == PaymentOutcome.DELIVERED)
    # The third sale stays pending: its reservation runs on.
    assert shares(level)["pa"] == ("quota", 5, 1, delivered)
