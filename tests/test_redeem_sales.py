"""Selling redemption links and recharges through the payment paths: links are issued when
the order is paid (on the batched and the careful path alike), refunds withdraw them, and a
recharge order is recorded for the supplier instead of delivered."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from quanyi.core.catalog.products import add_product
from quanyi.core.errors import InvalidInput
from quanyi.core.models import Order, OrderStatus, Product, Recharge, RedeemToken, StockItem
from quanyi.core.money import Money
from quanyi.core.sales import redeem
from quanyi.core.sales.fulfilment import PaymentOutcome
from quanyi.core.sales.refunds import refund_order
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_bot_chat import shop, tg  # noqa: F401  (fixtures)


async def link_product(core, sku: str = "LINK", *, max_uses: int = 2, valid_days: int | None = 30) -> None:
    async with core.db.transaction() as session:
        product = await add_product(
            session, sku=sku, name="Cinema ticket", kind="redeem_link", price=Money.parse("35.00", "CNY")
        )
        product.redeem_max_uses = max_uses
        product.redeem_valid_days = valid_days
        product.entitlement = "One 2D cinema ticket"


async def recharge_product(core, sku: str = "TOPUP") -> None:
    async with core.db.transaction() as session:
        product = await add_product(
            session, sku=sku, name="Mobile top-up 50", kind="direct_recharge", price=Money.parse("49.50", "CNY")
        )
        product.supplier = "generic"
        product.supplier_product_code = "CM50"
        product.account_pattern = r"1\d{10}"
        product.account_hint = "an 11-digit mobile number"


async def test_paid_link_orders_get_their_links_on_the_batched_and_the_careful_path(core, tmp_path):
    await link_product(core)
    await product_with_stock(core, tmp_path, units=3)
    placed = [await new_order(core, sku="LINK", quantity=2, user_id=2000 + i) for i in range(6)]
    card = await new_order(core, sku="VIP", quantity=1, user_id=2100)
    events = [sandbox_event(p.order.number, p.order.amount) for p in placed]
    events.append(sandbox_event(card.order.number, card.order.amount))
    outcomes = await asyncio.gather(*(core.fulfiller.submit(e) for e in events))  # arrive as one batch
    assert outcomes == [PaymentOutcome.DELIVERED] * 7
    async with core.db.read() as session:
        for p in placed:
            tokens = await redeem.tokens_for_order(session, core.keyring, p.order.id)
            assert len(tokens) == 2 and len(set(tokens)) == 2
            view = await redeem.inspect(session, core.keyring, tokens[0])
            assert (view.state, view.uses_left, view.entitlement) == ("valid", 2, "One 2D cinema ticket")
        assert await session.scalar(select(Order.status).where(Order.id == card.order.id)) == OrderStatus.DELIVERED
        assert len(set(await session.scalars(select(RedeemToken.token_hash)))) == 12


async def test_a_replayed_payment_issues_no_second_set_of_links(core):
    await link_product(core)
    placed = await new_order(core, sku="LINK", quantity=1)
    event = sandbox_event(placed.order.number, placed.order.amount)
    assert await core.fulfiller.submit(event) == PaymentOutcome.DELIVERED
    assert await core.fulfiller.submit(event) == PaymentOutcome.DUPLICATE
    async with core.db.read() as session:
        assert len(await redeem.tokens_for_order(session, core.keyring, placed.order.id)) == 1


async def test_a_refunded_link_order_withdraws_its_links(core):
    await link_product(core)
    placed = await new_order(core, sku="LINK", quantity=2)
    await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))
    async with core.db.read() as session:
        tokens = await redeem.tokens_for_order(session, core.keyring, placed.order.id)
    await refund_order(core, placed.order.number, reason="buyer changed mind", actor="cli", manual=True)
    async with core.db.read() as session:
        states = {(await redeem.inspect(session, core.keyring, token)).state for token in tokens}
    assert states == {"void"}


async def test_a_recharge_order_needs_a_valid_account_and_is_recorded_for_the_supplier_when_paid(core):
    await recharge_product(core)
    with pytest.raises(InvalidInput) as bad:
        await new_order(core, sku="TOPUP", account="12345")
    assert "11-digit" in bad.value.message
    with pytest.raises(InvalidInput):
        await new_order(core, sku="TOPUP", account=None)
    with pytest.raises(InvalidInput):
        await new_order(core, sku="TOPUP", quantity=2, account="13800138000")
    async with core.db.read() as session:
        assert await session.scalar(select(Order.id)) is None  # refusals left nothing behind

    placed = await new_order(core, sku="TOPUP", account=" 13800138000 ")
    outcome = await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))
    assert outcome == PaymentOutcome.RECHARGING
    async with core.db.read() as session:
        order = await session.get(Order, placed.order.id)
        assert order is not None and order.status == OrderStatus.PAID
        recharge = (await session.scalars(select(Recharge))).one()
        assert (recharge.account, recharge.product_code, recharge.amount, recharge.status) == (
            "13800138000",
            "CM50",
            4950,
            "pending",
        )
        assert recharge.supplier_order_number == f"{placed.order.number}-1"
        assert await session.scalar(select(StockItem.id)) is None
        assert (await session.get(Product, order.lines[0].product_id)).kind == "direct_recharge"  # type: ignore[union-attr]


async def test_the_operator_sees_each_use_of_an_orders_links_and_its_recharge_on_the_order(core, shop):
    await link_product(core)
    await recharge_product(core)
    placed = await new_order(core, sku="LINK", quantity=1)
    await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))
    async with core.db.transaction() as session:
        token = (await redeem.tokens_for_order(session, core.keyring, placed.order.id))[0]
        await redeem.consume(session, core.keyring, token, by="staff:77", channel="chat")
    topup = await new_order(core, sku="TOPUP", account="13800138000", user_id=1002)
    await core.fulfiller.submit(sandbox_event(topup.order.number, topup.order.amount))

    admin = shop.user(9000, "en")
    await admin.send(f"/order {placed.order.number}")
    card = await admin.expect(placed.order.number)
    assert "Link use 1" in card.plain and "staff 77" in card.plain and "chat" in card.plain
    assert token not in card.plain  # the operator sees the uses, never the link itself
    await admin.send(f"/order {topup.order.number}")
    card = await admin.expect(topup.order.number)
    assert "Recharge 13800138000: waiting to be sent to the supplier" in card.plain


async def test_a_channel_gets_a_quota_of_links_which_caps_its_sales_without_any_stock(core):
    from quanyi.core.sales.orders import Buyer, place_order
    from quanyi.core.stock import allocations as channels
    from quanyi.core.stock.allocations import AllocationShort

    await link_product(core)
    async with core.db.transaction() as session:
        await channels.add_channel(session, "cinema-partner", "Cinema partner")
        allocation = await channels.allocate(session, "LINK", "cinema-partner", 3)
    assert allocation.allocated == 3

    async def buy(quantity: int) -> None:
        async with core.db.transaction() as session:
            await place_order(
                session,
                core.payments,
                buyer=Buyer(3001, 3001, "en"),
                sku="LINK",
                quantity=quantity,
                method="sandbox",
                reservation=core.reservation,
                max_quantity=10,
                channel="cinema-partner",
            )

    await buy(2)
    with pytest.raises(AllocationShort):
        await buy(2)
    await buy(1)
    async with core.db.read() as session:
        [level] = await channels.pool_levels(session, "LINK")
    assert (level.unallocated, level.allocated_remaining) == (0, 0)  # a cap, never "over-allocated"


async def test_a_distributor_cannot_bulk_buy_links_and_nothing_changes(core):
    from quanyi.core.distributors import accounts as distributors
    from quanyi.core.errors import NotForSale
    from quanyi.core.stock import allocations as channels
    from tests.test_distributors import balance, make_distributor, top_up

    await link_product(core)
    agent = await make_distributor(core, 701)
    async with core.db.transaction() as session:
        await channels.allocate(session, "LINK", "701", 5)
    await top_up(core, agent, 100_00)
    with pytest.raises(NotForSale):
        async with core.db.transaction() as session:
            await distributors.bulk_buy(session, user_id=701, sku="LINK", quantity=2, chat_id=701, language="en")
    assert await balance(core, agent) == 100_00
    async with core.db.read() as session:
        assert await session.scalar(select(Order.id)) is None
