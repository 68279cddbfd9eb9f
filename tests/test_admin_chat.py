"""Operator chat: order look-up and one-tap refunds for QUANYI_ADMIN_IDS only."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from quanyi.core.models import Order, OutboxMessage, Refund, StockItem
from quanyi.core.payments.sandbox import Sandbox
from quanyi.core.sales.fulfilment import PaymentOutcome
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_bot_chat import shop, tg  # noqa: F401  (fixtures)

ADMIN = 9000  # make_settings puts this id in QUANYI_ADMIN_IDS


async def delivered_order(core, tmp_path, *, user_id=1001):
    await product_with_stock(core, tmp_path, units=3)
    placed = await new_order(core, quantity=2, user_id=user_id)
    assert (
        await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount)) == PaymentOutcome.DELIVERED
    )
    return placed.order


async def refunds(core) -> int:
    async with core.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(Refund)) or 0)


async def test_an_operator_refunds_an_order_in_two_taps_and_a_reason(core, shop, tmp_path):
    order = await delivered_order(core, tmp_path)
    admin = shop.user(ADMIN, "zh")

    await admin.send(f"/order {order.number.lower()}")
    card = await admin.expect(order.number)
    assert "已发货" in card.plain and "¥30.00" in card.plain and "沙盒支付" in card.plain
    assert "发货消息排队或重试中" in card.plain  # no sender runs in this test
    await admin.press(card, "↩️ 整单退款")
    await admin.expect("退款原因")
    await admin.send("买家无法兑换")
    done = await admin.expect("已退款")
    assert order.number in done.plain and "¥30.00" in done.plain

    async with core.db.read() as session:
        assert await session.scalar(select(Order.status).where(Order.id == order.id)) == "refunded"
        refund = await session.scalar(select(Refund))
        assert (refund.initiated_by, refund.reason) == (f"operator:{ADMIN}", "买家无法兑换")
        assert await session.scalar(select(func.count()).where(StockItem.status == "void")) == 2
        told = (await session.scalars(select(OutboxMessage.kind).where(OutboxMessage.chat_id == 1001))).all()
        assert "refunded" in told  # the buyer hears of it through the outbox

    # The same button again: nothing is refunded twice.
    await admin.press(card, "↩️ 整单退款")
    await admin.expect("退款原因")
    await admin.send("again")
    await admin.expect("已退过款")
    assert await refunds(core) == 1


async def test_buyers_cannot_reach_operator_commands_or_buttons(core, shop, tmp_path):
    order = await delivered_order(core, tmp_path)
    buyer = shop.user(1001, "zh")
    for command in (f"/order {order.number}", "/admin", "/review"):
        await buyer.send(command)
        reply = await buyer.expect()
        assert "没看懂" in reply.plain, command
        assert order.number not in reply.plain

    admin = shop.user(ADMIN, "zh")
    await admin.send(f"/order {order.number}")
    card = await admin.expect(order.number)
    # The buyer forges the operator's refund button.
    await buyer.press(card, data=f"rf:{order.number}:0:0")
    await buyer.send("give me my money")
    await buyer.expect("没看懂")
    assert await refunds(core) == 0
    async with core.db.read() as session:
        assert await session.scalar(select(Order.status).where(Order.id == order.id)) == "delivered"


async def test_payments_kept_for_review_are_listed_and_refunded(core, shop, tmp_path):
    order = await delivered_order(core, tmp_path)
    twice = sandbox_event(order.number, order.amount, txn="SECOND")
    assert await core.fulfiller.submit(twice) == PaymentOutcome.NEEDS_REVIEW
    admin = shop.user(ADMIN, "en")

    await admin.send("/review")
    listing = await admin.expect("kept for review")
    assert order.number in listing.plain
    await admin.press(listing, "↩️ Refund payment")
    await admin.expect("reason")
    await admin.send("paid twice")
    await admin.expect("refunded")
    async with core.db.read() as session:
        assert await session.scalar(select(Order.status).where(Order.id == order.id)) == "delivered"
        assert (await session.scalar(select(Refund))).scope.startswith("payment:")
    await admin.send("/review")
    assert "No payments" in (await admin.expect()).plain


async def test_methods_without_a_refund_api_are_recorded_as_manual_refunds(core, shop, tmp_path, monkeypatch):
    monkeypatch.setattr(Sandbox, "supports_refund", False)
    order = await delivered_order(core, tmp_path)
    admin = shop.user(ADMIN, "en")
    await admin.send(f"/order {order.number}")
    card = await admin.expect(order.number)
    await admin.press(card, "↩️ Refund the order")
    await admin.expect("reason")
    await admin.send("buyer complained")
    offer = await admin.expect("no refund API")
    assert await refunds(core) == 0
    await admin.press(offer, "✅ I paid it back; record it")
    await admin.expect("reason")
    await admin.send("paid back by Alipay transfer")
    await admin.expect("refunded")
    async with core.db.read() as session:
        assert (await session.scalar(select(Refund))).status == "manual"


@pytest.mark.parametrize("number", ["", "NOPE", "<b>x</b>"])
async def test_an_unknown_order_gets_a_clear_answer(core, shop, number):
    admin = shop.user(ADMIN, "en")
    await admin.send(f"/order {number}".strip())
    assert "No order" in (await admin.expect()).plain


async def test_operator_alerts_come_in_the_operator_s_own_language(core, shop, tmp_path):
    from quanyi.core.models import OutboxMessage

    admin = shop.user(ADMIN, "en")
    await admin.send("/start")
    await admin.expect()
    order = await delivered_order(core, tmp_path)
    twice = sandbox_event(order.number, order.amount, txn="AGAIN")
    assert await core.fulfiller.submit(twice) == PaymentOutcome.NEEDS_REVIEW
    async with core.db.read() as session:
        rows = (
            await session.execute(
                select(OutboxMessage.chat_id, OutboxMessage.language).where(
                    OutboxMessage.kind == "admin_payment_review"
                )
            )
        ).all()
    assert rows == [(ADMIN, "en")]
