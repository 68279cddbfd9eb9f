"""A verified payment marks the order paid once, takes its stock, and queues the delivery."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from quanyi.core.errors import CallbackRejected, OutOfStock
from quanyi.core.models import Allocation, Order, OutboxMessage, Payment, StockItem, utcnow
from quanyi.core.sales.fulfilment import PaymentOutcome
from quanyi.core.sales.orders import expire_due
from quanyi.core.stock import allocations as channels
from tests.helpers import new_order, product_with_stock, sandbox_event


async def test_paid_order_is_delivered_once_and_replay_changes_nothing(core, tmp_path):
    await product_with_stock(core, tmp_path, units=3)
    placed = await new_order(core, quantity=2)
    event = sandbox_event(placed.order.number, placed.order.amount)

    assert await core.fulfiller.submit(event) == PaymentOutcome.DELIVERED
    assert await core.fulfiller.submit(event) == PaymentOutcome.DUPLICATE

    async with core.db.read() as session:
        order = await session.scalar(select(Order))
        assert order.status == "delivered"
        sold = await session.scalar(
            select(func.count()).where(StockItem.status == "sold", StockItem.order_id == order.id)
        )
        assert sold == 2
        assert await session.scalar(select(func.count()).select_from(Payment)) == 1
        deliveries = await session.scalar(select(func.count()).where(OutboxMessage.kind == "delivery"))
        assert deliveries == 1


async def test_wrong_amount_unknown_order_and_reused_transaction_are_refused(core, tmp_path):
    await product_with_stock(core, tmp_path, units=3)
    first = await new_order(core)
    second = await new_order(core, user_id=1002)

    with pytest.raises(CallbackRejected, match="amount"):
        await core.fulfiller.submit(sandbox_event(first.order.number, first.order.amount - 1))
    with pytest.raises(CallbackRejected, match="unknown order"):
        await core.fulfiller.submit(sandbox_event("Q000000NOPE", first.order.amount))

    paid = sandbox_event(first.order.number, first.order.amount, txn="T-1")
    assert await core.fulfiller.submit(paid) == PaymentOutcome.DELIVERED
    # The same transaction id re-pointed at another order is a forgery or a replay.
    with pytest.raises(CallbackRejected, match="another order"):
        await core.fulfiller.submit(sandbox_event(second.order.number, second.order.amount, txn="T-1"))

    async with core.db.read() as session:
        statuses = dict((await session.execute(select(Order.number, Order.status))).all())
    assert statuses == {first.order.number: "delivered", second.order.number: "pending"}


async def test_order_beyond_stock_is_refused_whole(core, tmp_path):
    await product_with_stock(core, tmp_path, units=2)
    with pytest.raises(OutOfStock):
        await new_order(core, quantity=3)
    async with core.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 0
        assert await session.scalar(select(func.count()).where(StockItem.status == "available")) == 2


async def test_a_payment_after_the_order_expired_is_kept_for_review_and_changes_nothing(core, tmp_path):
    """CONTRACT: only a pending order pays. Late money is recorded, buyer and operators told."""
    await product_with_stock(core, tmp_path, units=1)
    late = await new_order(core, user_id=1)
    async with core.db.transaction() as session:
        assert await expire_due(session, now=utcnow() + timedelta(minutes=16)) == [late.order.number]

    outcome = await core.fulfiller.submit(sandbox_event(late.order.number, late.order.amount, txn="LATE-1"))
    assert outcome == PaymentOutcome.NEEDS_REVIEW
    assert await core.fulfiller.submit(sandbox_event(late.order.number, late.order.amount, txn="LATE-1")) == (
        PaymentOutcome.DUPLICATE
    )
    async with core.db.read() as session:
        order = await session.scalar(select(Order).where(Order.number == late.order.number))
        assert (order.status, order.failure_reason) == ("cancelled", "expired")
        assert (await session.scalars(select(Payment.outcome))).all() == ["needs_review"]
        assert await session.scalar(select(func.count()).where(StockItem.status == "available")) == 1
        kinds = sorted((await session.scalars(select(OutboxMessage.kind))).all())
        assert kinds == ["admin_payment_review", "order_expired", "payment_review"]


async def test_a_second_payment_for_a_delivered_order_is_kept_for_review(core, tmp_path):
    await product_with_stock(core, tmp_path, units=2)
    placed = await new_order(core)
    assert (
        await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount)) == PaymentOutcome.DELIVERED
    )
    again = sandbox_event(placed.order.number, placed.order.amount)  # another transaction id
    assert await core.fulfiller.submit(again) == PaymentOutcome.NEEDS_REVIEW
    async with core.db.read() as session:
        assert sorted((await session.scalars(select(Payment.outcome))).all()) == ["applied", "needs_review"]
        assert await session.scalar(select(func.count()).where(StockItem.status == "sold")) == 1
        assert await session.scalar(select(func.count()).where(OutboxMessage.kind == "delivery")) == 1


async def test_concurrent_buyers_for_fewer_items_never_oversell(core, tmp_path):
    """24 buyers order and pay at once for 10 items: 10 delivered, 14 told it is sold out."""
    units, buyers = 10, 24
    await product_with_stock(core, tmp_path, units=units)

    async def buy(user_id: int) -> PaymentOutcome | str:
        try:
            placed = await new_order(core, user_id=user_id)
        except OutOfStock:
            return "sold out"
        return await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))

    outcomes = await asyncio.gather(*(buy(5000 + n) for n in range(buyers)))

    assert outcomes.count(PaymentOutcome.DELIVERED) == units
    assert outcomes.count("sold out") == buyers - units
    async with core.db.read() as session:
        sold = (await session.execute(select(StockItem.id, StockItem.order_id).where(StockItem.status == "sold"))).all()
        assert len(sold) == units
        assert len({order_id for _, order_id in sold}) == units  # one item per delivered order
        assert set((await session.scalars(select(Order.status))).all()) == {"delivered"}


async def test_concurrent_replays_of_one_payment_change_state_once(core, tmp_path):
    await product_with_stock(core, tmp_path, units=2)
    placed = await new_order(core)
    event = sandbox_event(placed.order.number, placed.order.amount)
    outcomes = await asyncio.gather(*(core.fulfiller.submit(event) for _ in range(12)))
    assert outcomes.count(PaymentOutcome.DELIVERED) == 1
    assert outcomes.count(PaymentOutcome.DUPLICATE) == 11
    async with core.db.read() as session:
        assert await session.scalar(select(func.count()).where(OutboxMessage.kind == "delivery")) == 1
        assert await session.scalar(select(func.count()).where(StockItem.status == "sold")) == 1


@pytest.mark.parametrize("spare", [1, 0])
async def test_a_reserved_item_gone_missing_is_refilled_from_the_pool_or_the_order_fails(core, tmp_path, spare):
    """An operator voided a reserved code: the sale takes a fresh one, or with none left fails whole."""
    from sqlalchemy import update

    await product_with_stock(core, tmp_path, units=3 + spare)
    refill = await new_order(core, quantity=2, user_id=1)
    other = await new_order(core, quantity=1, user_id=2)
    async with core.db.transaction() as session:
        voided = (await session.scalars(select(StockItem.id).where(StockItem.order_id == refill.order.id))).first()
        await session.execute(update(StockItem).where(StockItem.id == voided).values(status="void", order_id=None))
    outcomes = await asyncio.gather(
        core.fulfiller.submit(sandbox_event(refill.order.number, refill.order.amount)),
        core.fulfiller.submit(sandbox_event(other.order.number, other.order.amount)),
    )
    async with core.db.read() as session:
        sold = dict(
            (
                await session.execute(
                    select(StockItem.order_id, func.count())
                    .where(StockItem.status == "sold")
                    .group_by(StockItem.order_id)
                )
            ).all()
        )
        available = await session.scalar(select(func.count()).where(StockItem.status == "available"))
        statuses = dict((await session.execute(select(Order.number, Order.status))).all())
    assert statuses[other.order.number] == "delivered" and sold[other.order.id] == 1
    if spare:
        assert outcomes[0] == PaymentOutcome.DELIVERED
        assert statuses[refill.order.number] == "delivered" and sold[refill.order.id] == 2
        assert available == 0
    else:
        assert outcomes[0] == PaymentOutcome.FAILED
        assert statuses[refill.order.number] == "failed" and refill.order.id not in sold
        assert available == 1  # the one code it did hold went back to the pool


async def test_a_new_buyer_placing_two_orders_at_once_gets_both(core, tmp_path):
    await product_with_stock(core, tmp_path, units=4)
    placed = await asyncio.gather(*(new_order(core, user_id=77, lang="en") for _ in range(4)))
    assert len({p.order.number for p in placed}) == 4
    async with core.db.read() as session:
        from quanyi.core.models import User

        users = (await session.execute(select(User.id, User.language))).all()
    assert users == [(77, "en")]


async def test_one_event_failing_on_the_careful_path_does_not_disturb_the_rest_of_its_batch(
    core, tmp_path, monkeypatch
):
    import quanyi.core.sales.fulfilment as fulfilment

    await product_with_stock(core, tmp_path, units=3)
    fast = await new_order(core, user_id=1)
    late = await new_order(core, user_id=2)
    broken = await new_order(core, user_id=3)
    async with core.db.transaction() as session:
        from quanyi.core.sales.orders import cancel_pending

        await cancel_pending(session, late.order.id, reason="expired")
        await cancel_pending(session, broken.order.id, reason="expired")
    real = fulfilment.apply_payment

    async def flaky(session, event, **kwargs):
        if event.order_number == broken.order.number:
            raise RuntimeError("connection lost")
        return await real(session, event, **kwargs)

    monkeypatch.setattr(fulfilment, "apply_payment", flaky)
    outcomes = await asyncio.gather(
        *(core.fulfiller.submit(sandbox_event(p.order.number, p.order.amount)) for p in (fast, late, broken)),
        return_exceptions=True,
    )
    assert outcomes[0] == PaymentOutcome.DELIVERED  # settled in the batch, not re-run as a "duplicate"
    assert outcomes[1] == PaymentOutcome.NEEDS_REVIEW
    assert isinstance(outcomes[2], RuntimeError)
    async with core.db.read() as session:
        recorded = sorted((await session.scalars(select(Payment.outcome))).all())
    assert recorded == ["applied", "needs_review"]


async def test_a_settled_sale_from_a_quota_moves_its_units_and_stamps_the_allocation(core, tmp_path):
    await product_with_stock(core, tmp_path, units=3)
    async with core.db.transaction() as session:
        await channels.allocate(session, "VIP", "bot", 3)
    placed = await new_order(core, quantity=2)
    async with core.db.read() as session:
        before = await session.scalar(select(Allocation))
    assert before is not None and (before.reserved, before.sold) == (2, 0)

    event = sandbox_event(placed.order.number, placed.order.amount)
    assert await core.fulfiller.submit(event) == PaymentOutcome.DELIVERED

    async with core.db.read() as session:
        after = await session.scalar(select(Allocation))
    assert after is not None and (after.reserved, after.sold) == (0, 2)
    assert after.updated_at > before.updated_at  # the batched path stamps it as the one-by-one path does
