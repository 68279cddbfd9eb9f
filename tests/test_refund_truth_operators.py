"""What a refund tells operators is true of the order: codes void only when it had codes that are
now void; a second payment given back, or an order that failed before delivery, voids nothing."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import select, update

from quanyi.bot.render import undone_text
from quanyi.core.models import OutboxMessage, Payment, StockItem
from quanyi.core.payments.base import RefundEvent
from quanyi.core.payments.sandbox import Sandbox
from quanyi.core.sales.fulfilment import PaymentOutcome
from quanyi.core.sales.refunds import record_provider_refund, refund_order, refund_payment
from quanyi.i18n import t
from tests.helpers import new_order, product_with_stock, sandbox_event


@pytest.fixture(autouse=True)
def provider(monkeypatch):
    original = Sandbox.refund

    async def slow(self, paid, amount, reason, idempotency_key):
        await asyncio.sleep(0)
        return await original(self, paid, amount, reason, idempotency_key)

    monkeypatch.setattr(Sandbox, "refund", slow)


def operator_text(lang, result):
    return t(lang, "admin_refund_done", number=result.order_number, amount="x", status=result.status) + undone_text(
        lang, result.codes_voided, result.links_revoked
    )


async def failed_order(core, tmp_path):
    """Paid, but its reserved code went missing with an empty pool: failed, nothing delivered."""
    await product_with_stock(core, tmp_path, units=1)
    placed = await new_order(core, quantity=1, user_id=2)
    async with core.db.transaction() as session:
        await session.execute(update(StockItem).values(status="void", order_id=None))
    assert await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount)) == (
        PaymentOutcome.FAILED
    )
    return placed.order


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_a_delivered_card_key_order_refunded_says_its_codes_are_void(core, tmp_path, lang):
    await product_with_stock(core, tmp_path, units=2)
    placed = await new_order(core, quantity=1, user_id=1)
    await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount, txn="PAY-1"))

    result = await refund_order(core, placed.order.number, reason="could not redeem", actor="cli")

    assert (result.codes_voided, result.links_revoked) == (True, False)
    assert t(lang, "admin_refund_codes_void") in operator_text(lang, result)


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_an_order_that_failed_before_delivery_refunded_claims_no_voided_codes(core, tmp_path, lang):
    order = await failed_order(core, tmp_path)

    result = await refund_order(core, order.number, reason="out of stock", actor="cli")

    assert result.status == "succeeded" and (result.codes_voided, result.links_revoked) == (False, False)
    text = operator_text(lang, result)
    assert "作废" not in text and "void" not in text.lower() and "失效" not in text


async def test_a_second_payment_given_back_voids_nothing(core, tmp_path):
    await product_with_stock(core, tmp_path, units=2)
    placed = await new_order(core, quantity=1, user_id=1)
    await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount, txn="PAY-1"))
    twice = sandbox_event(placed.order.number, placed.order.amount, txn="PAY-2")
    assert await core.fulfiller.submit(twice) == PaymentOutcome.NEEDS_REVIEW
    async with core.db.read() as session:
        review = await session.scalar(select(Payment).where(Payment.provider_txn_id == "PAY-2"))

    result = await refund_payment(core, review.id, reason="paid twice", actor="cli")

    assert result.status == "succeeded" and (result.codes_voided, result.links_revoked) == (False, False)


async def test_a_provider_refund_of_an_undelivered_order_tells_operators_no_codes_were_voided(core, tmp_path):
    order = await failed_order(core, tmp_path)
    async with core.db.read() as session:
        txn = await session.scalar(select(Payment.provider_txn_id).where(Payment.order_id == order.id))
    event = RefundEvent(
        method="sandbox",
        provider_txn_id=txn,
        provider_refund_id="R-1",
        amount=order.amount,
        currency=order.currency,
        raw={},
    )

    await record_provider_refund(core, event)

    async with core.db.read() as session:
        payload = await session.scalar(
            select(OutboxMessage.payload).where(OutboxMessage.kind == "admin_provider_refund")
        )
    payload = json.loads(payload) if isinstance(payload, str) else payload  # stored as text
    assert payload["codes_voided"] is False and payload["links_revoked"] is False
