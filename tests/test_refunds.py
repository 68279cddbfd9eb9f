"""Refunds: recorded once, codes voided, provider called once, terminal states stay terminal."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from quanyi.core.errors import CallbackRejected, InvalidInput, NotFound, OutOfStock, RefundFailed, RefundNotSupported
from quanyi.core.models import Order, OutboxMessage, Payment, Refund, StockItem, utcnow
from quanyi.core.payments.base import RefundEvent
from quanyi.core.payments.sandbox import Sandbox
from quanyi.core.sales.fulfilment import PaymentOutcome
from quanyi.core.sales.orders import expire_due
from quanyi.core.sales.refunds import ProviderRefundOutcome, record_provider_refund, refund_order, refund_payment
from tests.helpers import new_order, product_with_stock, sandbox_event


@pytest.fixture
def provider_calls(core, monkeypatch):
    """Count the sandbox's refund calls (the sandbox stands in for a provider with a refund API)."""
    calls: list[tuple[str, int, str]] = []
    original = Sandbox.refund

    async def counted(self, paid, amount, reason, idempotency_key):
        calls.append((paid.provider_txn_id, amount, idempotency_key))
        await asyncio.sleep(0.01)  # a real provider takes time: concurrent requests overlap
        return await original(self, paid, amount, reason, idempotency_key)

    monkeypatch.setattr(Sandbox, "refund", counted)
    return calls


async def delivered(core, tmp_path, *, quantity=2, units=3, user_id=1001):
    await product_with_stock(core, tmp_path, units=units)
    placed = await new_order(core, quantity=quantity, user_id=user_id)
    assert await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount, txn="PAY-1")) == (
        PaymentOutcome.DELIVERED
    )
    return placed.order


async def stock(core, status):
    async with core.db.read() as session:
        return await session.scalar(select(func.count()).where(StockItem.status == status))


async def test_refunding_an_order_voids_its_codes_and_is_done_once(core, tmp_path, provider_calls):
    order = await delivered(core, tmp_path)

    result = await refund_order(core, order.number, reason="buyer could not redeem", actor="operator:9000")
    again = await refund_order(core, order.number, reason="clicked twice", actor="operator:9000")

    assert (result.status, result.amount, result.lines) == ("succeeded", order.amount, (1,))
    assert again.status == "already" and again.amount == 0
    assert provider_calls == [("PAY-1", order.amount, provider_calls[0][2])]
    async with core.db.read() as session:
        assert await session.scalar(select(Order.status).where(Order.id == order.id)) == "refunded"
        refunds = (await session.scalars(select(Refund))).all()
        assert [(r.status, r.amount, r.initiated_by) for r in refunds] == [("succeeded", order.amount, "operator:9000")]
        assert (await session.scalars(select(OutboxMessage.kind).where(OutboxMessage.kind == "refunded"))).all() == [
            "refunded"
        ]
    assert await stock(core, "void") == 2 and await stock(core, "sold") == 0
    # A voided code is never sold again: one unit left in the pool, not three.
    await new_order(core, quantity=1, user_id=2)
    with pytest.raises(OutOfStock):
        await new_order(core, quantity=1, user_id=3)


async def test_concurrent_refund_requests_call_the_provider_once(core, tmp_path, provider_calls):
    order = await delivered(core, tmp_path)
    results = await asyncio.gather(
        *(refund_order(core, order.number, reason=f"request {n}", actor="cli") for n in range(8)),
        return_exceptions=True,
    )
    assert not [r for r in results if isinstance(r, BaseException)]
    assert sorted(r.status for r in results).count("succeeded") == 1
    assert len(provider_calls) == 1
    async with core.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Refund)) == 1


async def test_one_line_is_refunded_by_number_and_an_unknown_line_is_refused(core, tmp_path, provider_calls):
    order = await delivered(core, tmp_path)
    with pytest.raises(NotFound):
        await refund_order(core, order.number, line_no=2, reason="wrong line", actor="cli")
    assert provider_calls == []
    result = await refund_order(core, order.number, line_no=1, reason="line one", actor="cli")
    assert result.lines == (1,)


async def test_a_refund_the_provider_did_not_confirm_is_retried_not_repeated(core, tmp_path, monkeypatch):
    order = await delivered(core, tmp_path)
    attempts: list[str] = []

    async def flaky(self, paid, amount, reason, idempotency_key):
        attempts.append(idempotency_key)
        if len(attempts) == 1:
            raise RefundFailed("provider timed out")
        return "R-OK"

    monkeypatch.setattr(Sandbox, "refund", flaky)
    with pytest.raises(RefundFailed, match="run it again"):
        await refund_order(core, order.number, reason="first try", actor="cli")
    async with core.db.read() as session:
        refund = await session.scalar(select(Refund))
        assert (refund.status, refund.last_error) == ("pending", "provider timed out")
    assert await stock(core, "void") == 2  # the codes are void from the moment the refund is recorded

    result = await refund_order(core, order.number, reason="second try", actor="cli")
    assert (result.status, result.provider_refund_id) == ("succeeded", "R-OK")
    assert attempts[0] == attempts[1]  # the same idempotency key: the provider can tell it is a retry
    async with core.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Refund)) == 1
        assert await session.scalar(select(Order.status).where(Order.id == order.id)) == "refunded"


async def test_unpaid_orders_cannot_be_refunded_and_a_failed_order_can(core, tmp_path, provider_calls):
    await product_with_stock(core, tmp_path, units=2)
    pending = await new_order(core, quantity=1, user_id=1)
    with pytest.raises(InvalidInput, match="nothing was paid"):
        await refund_order(core, pending.order.number, reason="x", actor="cli")
    with pytest.raises(InvalidInput, match="reason"):
        await refund_order(core, pending.order.number, reason="   ", actor="cli")

    # A paid order whose reserved code went missing with an empty pool fails; it must be refundable.
    failing = await new_order(core, quantity=1, user_id=2)
    async with core.db.transaction() as session:
        await session.execute(
            update(StockItem).where(StockItem.order_id == failing.order.id).values(status="void", order_id=None)
        )
        await session.execute(update(StockItem).where(StockItem.status == "reserved").values(status="void"))
    event = sandbox_event(failing.order.number, failing.order.amount)
    assert await core.fulfiller.submit(event) == PaymentOutcome.FAILED
    result = await refund_order(core, failing.order.number, reason="out of stock", actor="cli")
    assert result.status == "succeeded"
    async with core.db.read() as session:
        assert await session.scalar(select(Order.status).where(Order.id == failing.order.id)) == "refunded"


async def test_a_payment_after_the_refund_changes_nothing_and_waits_for_review(core, tmp_path, provider_calls):
    order = await delivered(core, tmp_path)
    await refund_order(core, order.number, reason="refund", actor="cli")
    late = sandbox_event(order.number, order.amount, txn="PAY-2")
    assert await core.fulfiller.submit(late) == PaymentOutcome.NEEDS_REVIEW
    async with core.db.read() as session:
        assert await session.scalar(select(Order.status).where(Order.id == order.id)) == "refunded"
        review = await session.scalar(select(Payment).where(Payment.provider_txn_id == "PAY-2"))
        assert review.outcome == "needs_review"
    assert await stock(core, "sold") == 0

    # The double payment is visible and refundable on its own.
    result = await refund_payment(core, review.id, reason="paid twice", actor="cli")
    assert (result.status, result.amount) == ("succeeded", order.amount)
    assert (await refund_payment(core, review.id, reason="again", actor="cli")).status == "already"
    assert [c[0] for c in provider_calls] == ["PAY-1", "PAY-2"]


async def test_methods_without_a_refund_api_need_a_manual_record(core, tmp_path, monkeypatch):
    monkeypatch.setattr(Sandbox, "supports_refund", False)
    order = await delivered(core, tmp_path)
    with pytest.raises(RefundNotSupported, match="--manual"):
        await refund_order(core, order.number, reason="x", actor="cli")
    async with core.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Refund)) == 0
    result = await refund_order(core, order.number, reason="paid back by bank transfer", actor="cli", manual=True)
    assert result.status == "manual"
    assert (await refund_order(core, order.number, reason="again", actor="cli", manual=True)).status == "already"
    assert await stock(core, "void") == 2


async def test_a_provider_refund_is_recorded_once_and_flagged(core, tmp_path, provider_calls):
    order = await delivered(core, tmp_path)
    event = RefundEvent("sandbox", "PAY-1", "CB-1", order.amount, "CNY", {"type": "chargeback"}, event_id="evt_1")
    assert await record_provider_refund(core, event) == ProviderRefundOutcome.RECORDED
    assert await record_provider_refund(core, event) == ProviderRefundOutcome.DUPLICATE
    again = RefundEvent("sandbox", "PAY-1", "CB-1", order.amount, "CNY", {}, event_id="evt_2")
    assert await record_provider_refund(core, again) == ProviderRefundOutcome.DUPLICATE
    async with core.db.read() as session:
        assert await session.scalar(select(Order.status).where(Order.id == order.id)) == "refunded"
        refunds = (await session.scalars(select(Refund))).all()
        assert [(r.initiated_by, r.provider_refund_id) for r in refunds] == [("provider", "CB-1")]
        kinds = sorted(
            (await session.scalars(select(OutboxMessage.kind).where(OutboxMessage.kind != "delivery"))).all()
        )
        assert kinds == ["admin_provider_refund", "refunded"]
    assert await stock(core, "void") == 2
    # An operator refund afterwards finds it done and calls nobody.
    assert (await refund_order(core, order.number, reason="x", actor="cli")).status == "already"
    assert provider_calls == []


async def test_our_refund_confirmed_later_by_the_provider_is_not_counted_twice(core, tmp_path, provider_calls):
    order = await delivered(core, tmp_path)
    result = await refund_order(core, order.number, reason="x", actor="cli")
    confirm = RefundEvent("sandbox", "PAY-1", result.provider_refund_id, order.amount, "CNY", {})
    assert await record_provider_refund(core, confirm) == ProviderRefundOutcome.DUPLICATE
    async with core.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Refund)) == 1


async def test_a_refund_for_a_payment_we_do_not_have_changes_nothing(core, tmp_path):
    await product_with_stock(core, tmp_path, units=1)
    placed = await new_order(core)
    ghost = RefundEvent("sandbox", "NEVER-PAID", "R-1", placed.order.amount, "CNY", {})
    with pytest.raises(CallbackRejected):
        await record_provider_refund(core, ghost)
    async with core.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Refund)) == 0
        assert await session.scalar(select(Order.status)) == "pending"


async def test_an_expired_order_cannot_be_refunded(core, tmp_path):
    await product_with_stock(core, tmp_path, units=1)
    placed = await new_order(core)
    async with core.db.transaction() as session:
        await expire_due(session, now=utcnow() + timedelta(hours=1))
    with pytest.raises(InvalidInput):
        await refund_order(core, placed.order.number, reason="x", actor="cli")


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_refund_messages_render_for_buyer_and_operators(core, tmp_path, provider_calls, lang):
    from quanyi.bot.outbox_sender import OutboxSender
    from quanyi.core.platform.outbox import Outgoing

    order = await delivered(core, tmp_path)
    await refund_order(core, order.number, reason="x", actor="cli")
    sender = OutboxSender(core, bot=None)  # type: ignore[arg-type]  # rendering needs no bot
    buyer = await sender.render(
        Outgoing(1, 1001, "refunded", {"order_id": order.id, "amount": order.amount, "currency": "CNY"}, lang, 0)
    )
    admin = await sender.render(
        Outgoing(
            2,
            9000,
            "admin_provider_refund",
            {"order_id": order.id, "amount": 100, "currency": "CNY", "method": "stripe"},
            lang,
            0,
        )
    )
    assert order.number in buyer[0] and "¥30.00" in buyer[0]
    assert order.number in admin[0] and "¥1.00" in admin[0] and "Stripe" in admin[0]


async def test_partial_provider_refunds_add_up_to_what_was_paid_and_then_close_the_order(core, tmp_path):
    order = await delivered(core, tmp_path)  # 30.00 paid as PAY-1
    first = RefundEvent("sandbox", "PAY-1", "R-part-1", 1000, "CNY", {})
    rest = RefundEvent("sandbox", "PAY-1", "R-part-2", 2000, "CNY", {})
    assert await record_provider_refund(core, first) == ProviderRefundOutcome.RECORDED
    async with core.db.read() as session:
        assert await session.scalar(select(Order.status).where(Order.id == order.id)) == "delivered"
    assert await stock(core, "sold") == 2
    assert await record_provider_refund(core, rest) == ProviderRefundOutcome.RECORDED
    async with core.db.read() as session:
        assert await session.scalar(select(Order.status).where(Order.id == order.id)) == "refunded"
        assert await session.scalar(select(func.sum(Refund.amount))) == order.amount  # never more than was paid
    assert await stock(core, "void") == 2


async def test_a_webhook_confirming_our_refund_before_the_api_answers_is_not_a_second_refund(
    core, tmp_path, monkeypatch
):
    order = await delivered(core, tmp_path)
    seen: list[ProviderRefundOutcome] = []

    async def webhook_first(self, paid, amount, reason, idempotency_key):
        # The provider's webhook overtakes its API answer.
        seen.append(await record_provider_refund(core, RefundEvent("sandbox", "PAY-1", "R-FAST", amount, "CNY", {})))
        return "R-FAST"

    monkeypatch.setattr(Sandbox, "refund", webhook_first)
    result = await refund_order(core, order.number, reason="x", actor="cli")
    assert seen == [ProviderRefundOutcome.CONFIRMED] and result.amount == order.amount
    async with core.db.read() as session:
        refunds = (await session.scalars(select(Refund))).all()
        assert [(r.status, r.provider_refund_id, r.amount) for r in refunds] == [("succeeded", "R-FAST", order.amount)]
        assert await session.scalar(select(func.count()).where(OutboxMessage.kind == "admin_provider_refund")) == 0
