"""A bundle holding a card key and a direct recharge: the key waits for the recharge, and goes
out in one delivery message whether the recharge succeeds or fails and is refunded."""

from __future__ import annotations

from sqlalchemy import select

from quanyi.core.catalog import bundles
from quanyi.core.models import Order, OrderLine, Refund, StockItem
from quanyi.core.money import Money
from quanyi.core.sales.orders import Buyer, OrderRequest, checkout
from tests.helpers import product_with_stock, sandbox_event
from tests.test_recharge import ACCOUNT, BUYER, rig  # noqa: F401  (fixture)


async def _bundle_order(r, tmp_path) -> str:
    # VIPX 15.00 + PHONE 30.00 = 45.00 of list price, sold together for 36.00.
    await product_with_stock(r.core, tmp_path, sku="VIPX", price="15.00", units=2)
    async with r.core.db.transaction() as s:
        await bundles.create_bundle(
            s, sku="KIT", name="Kit", price=Money.parse("36.00", "CNY"), parts=[("VIPX", 1), ("PHONE", 1)]
        )
    placed = await checkout(
        r.core.db,
        r.core.payments,
        OrderRequest(
            buyer=Buyer(user_id=BUYER, chat_id=BUYER, language="en"),
            sku="KIT",
            quantity=1,
            method="sandbox",
            reservation=r.core.reservation,
            max_quantity=r.core.settings.max_quantity,
            account=ACCOUNT,
        ),
    )
    assert placed.order.amount == 3600
    outcome = await r.core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))
    assert outcome == "recharging"  # the key is held back until the recharge is done
    return placed.order.number


async def _lines(r, number: str) -> list[tuple[str, int, str | None]]:
    async with r.core.db.read() as s:
        order_id = await s.scalar(select(Order.id).where(Order.number == number))
        rows = await s.execute(
            select(OrderLine.sku, OrderLine.amount, OrderLine.account)
            .where(OrderLine.order_id == order_id)
            .order_by(OrderLine.line_no)
        )
        return [tuple(row) for row in rows.all()]


async def test_a_bundle_with_a_recharge_delivers_its_key_once_the_recharge_succeeds(rig, tmp_path):
    r = await rig()
    number = await _bundle_order(r, tmp_path)
    # 36.00 split 15 : 30 -> 12.00 and 24.00; the account goes with the recharge line only.
    assert await _lines(r, number) == [("VIPX", 1200, None), ("PHONE", 2400, ACCOUNT)]
    order = await r.order(number)
    assert [k for c, k, p in await r.outbox() if p.get("order_id") == order.id] == []

    assert await r.worker().run_once() == 1
    await r.settle()
    order = await r.order(number)
    assert order.status == "delivered"
    kinds = [k for c, k, p in await r.outbox() if c == BUYER and p.get("order_id") == order.id]
    assert sorted(kinds) == ["delivery", "recharge_success"]
    async with r.core.db.read() as s:
        sold = await s.scalar(select(StockItem.status).where(StockItem.order_id == order.id))
    assert sold == "sold"


async def test_a_bundles_failed_recharge_is_refunded_alone_and_its_key_still_delivered(rig, tmp_path):
    r = await rig(fail_rate=1.0)
    number = await _bundle_order(r, tmp_path)
    placed = await r.worker().run_once()
    await r.settle()
    # Placed, then the failure resolved (refund of the recharge line) — in the first pass when
    # the supplier's failure arrived before that pass ended, else in the second.
    assert placed + await r.worker().run_once() == 2

    order = await r.order(number)
    assert order.status == "delivered"  # the key was paid for and is the buyer's
    async with r.core.db.read() as s:
        refunds = (await s.execute(select(Refund.amount, Refund.status))).all()
        key = await s.scalar(select(StockItem.status).where(StockItem.order_id == order.id))
    assert refunds == [(2400, "succeeded")]  # the recharge line's share, not the whole 36.00
    assert key == "sold"
    kinds = [k for c, k, p in await r.outbox() if c == BUYER and p.get("order_id") == order.id]
    assert kinds.count("delivery") == 1
    assert "recharge_failed" in kinds
