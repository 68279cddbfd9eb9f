"""Unpaid orders expire: the scheduler job returns their stock, tells the buyer, and never fights a payment."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text, update

from quanyi.bot.outbox_sender import OutboxSender
from quanyi.core.models import Lease, Order, OutboxMessage, Payment, StockItem, utcnow
from quanyi.core.platform import outbox
from quanyi.core.platform.db import Database
from quanyi.core.platform.scheduler import LEASE, Jobs
from quanyi.core.sales.fulfilment import PaymentOutcome
from quanyi.core.services import Core, build_core
from tests.conftest import PG_URL
from tests.helpers import new_order, product_with_stock, sandbox_event


async def overdue(core: Core, *orders: Order) -> None:
    """Their reservation ran out a minute ago."""
    async with core.db.transaction() as session:
        await session.execute(
            update(Order).where(Order.id.in_([o.id for o in orders])).values(expires_at=utcnow() - timedelta(minutes=1))
        )


async def items_of(core: Core) -> dict[int, tuple[str, int | None]]:
    async with core.db.read() as session:
        rows = await session.execute(select(StockItem.id, StockItem.status, StockItem.order_id))
        return {item_id: (status, order_id) for item_id, status, order_id in rows.all()}


async def messages(core: Core, kind: str) -> list[tuple[int, dict, str]]:
    async with core.db.read() as session:
        rows = await session.execute(
            select(OutboxMessage.chat_id, OutboxMessage.payload, OutboxMessage.language)
            .where(OutboxMessage.kind == kind)
            .order_by(OutboxMessage.id)
        )
        return [(chat, json.loads(payload), lang) for chat, payload, lang in rows.all()]


async def test_expiry_cancels_overdue_orders_returns_their_stock_and_tells_the_buyer(core, tmp_path):
    await product_with_stock(core, tmp_path, units=5)
    late = await new_order(core, quantity=2, user_id=1, lang="en")
    also_late = await new_order(core, quantity=1, user_id=2)
    in_time = await new_order(core, quantity=1, user_id=3)
    await overdue(core, late.order, also_late.order)
    core.outbox_wakeup.clear()

    cancelled = await Jobs(core).expire_orders()

    assert sorted(cancelled) == sorted([late.order.number, also_late.order.number])
    async with core.db.read() as session:
        orders = {o.number: (o.status, o.failure_reason) for o in await session.scalars(select(Order))}
    assert orders == {
        late.order.number: ("cancelled", "expired"),
        also_late.order.number: ("cancelled", "expired"),
        in_time.order.number: ("pending", None),
    }
    items = await items_of(core)
    assert sorted(items.values(), key=str) == sorted(
        [("available", None)] * 4 + [("reserved", in_time.order.id)], key=str
    )
    assert await messages(core, "order_expired") == [
        (1, {"order_id": late.order.id}, "en"),
        (2, {"order_id": also_late.order.id}, "zh"),
    ]
    assert core.outbox_wakeup.is_set()  # the sender is woken to tell them at once

    # The message the buyer gets names the order, in the buyer's language.
    sender = OutboxSender(core, bot=None)  # type: ignore[arg-type]  # rendering only
    due = [
        m for m in await outbox.claim_due(core.db, limit=10, lease=timedelta(seconds=60)) if m.kind == "order_expired"
    ]
    texts = {m.chat_id: (await sender.render(m))[0] for m in due}
    assert late.order.number in texts[1] and "not paid in time" in texts[1]
    assert also_late.order.number in texts[2] and "超时未支付" in texts[2]

    # Running again finds nothing more to do; the released units can be sold again.
    assert await Jobs(core).expire_orders() == []
    assert len(await messages(core, "order_expired")) == 2
    again = await new_order(core, quantity=4, user_id=4)
    assert again.order.status == "pending"


@pytest.fixture
async def replica(core: Core) -> AsyncIterator[Core]:
    """A second process's core on the same database: its own engine and connections."""
    if core.db.is_sqlite:
        other = Database(str(core.db.url))
    else:
        async with core.db.engine.connect() as conn:
            schema = await conn.scalar(text("SELECT current_schema()"))
        other = Database(PG_URL, connect_args={"server_settings": {"search_path": schema}})
    built = build_core(core.settings, db=other, keyring=core.keyring)
    try:
        yield built
    finally:
        await other.dispose()


async def test_only_the_lease_holder_among_replicas_expires_orders(core, replica, tmp_path):
    await product_with_stock(core, tmp_path, units=6)
    first = [await new_order(core, user_id=10 + n) for n in range(2)]
    await overdue(core, *(p.order for p in first))
    a, b = Jobs(core, holder="replica-a"), Jobs(replica, holder="replica-b")

    results = await asyncio.gather(a.expire_orders(), b.expire_orders())

    assert sorted(results, key=len) == [[], sorted(results, key=len)[1]]
    assert sorted(results[0] + results[1]) == sorted(p.order.number for p in first)
    leader, follower = (a, b) if results[0] else (b, a)
    assert len(await messages(core, "order_expired")) == 2  # each buyer told once

    second = await new_order(core, user_id=20)
    await overdue(core, second.order)
    assert await follower.expire_orders() == []  # not the holder: does nothing
    async with core.db.read() as session:
        assert await session.scalar(select(Order.status).where(Order.id == second.order.id)) == "pending"
    assert await leader.expire_orders() == [second.order.number]

    # A leader that stops cleanly hands over at once.
    await leader.resign()
    third = await new_order(core, user_id=30)
    await overdue(core, third.order)
    assert await follower.expire_orders() == [third.order.number]
    assert await leader.expire_orders() == []

    # A leader that died stops renewing; once its lease runs out the other takes over.
    async with core.db.transaction() as session:
        await session.execute(
            update(Lease).where(Lease.name == LEASE).values(expires_at=utcnow() - timedelta(seconds=1))
        )
    fourth = await new_order(core, user_id=40)
    await overdue(core, fourth.order)
    assert await leader.expire_orders() == [fourth.order.number]
    assert await follower.expire_orders() == []


ROUNDS = 16
# (delay before the expiry job, delay before the payment) in seconds: from "payment surely
# first" through real races to "expiry surely first".
DELAYS = [(0.05, 0.0), (0.0, 0.0), (0.0, 0.001), (0.001, 0.0), (0.0, 0.003), (0.003, 0.0), (0.0, 0.006), (0.0, 0.05)]


async def test_an_expiry_racing_a_payment_ends_in_one_consistent_state(core, tmp_path):
    await product_with_stock(core, tmp_path, units=2 * ROUNDS)
    jobs = Jobs(core, holder="solo")
    paths: list[str] = []

    for round_no in range(ROUNDS):
        placed = await new_order(core, quantity=2, user_id=100 + round_no)
        reserved_ids = sorted(i for i, (_, order_id) in (await items_of(core)).items() if order_id == placed.order.id)
        await overdue(core, placed.order)
        expire_delay, pay_delay = DELAYS[round_no % len(DELAYS)]

        async def expire(delay: float = expire_delay) -> list[str]:
            await asyncio.sleep(delay)
            return await jobs.expire_orders()

        async def pay(delay: float = pay_delay, number: str = placed.order.number, amount: int = placed.order.amount):
            await asyncio.sleep(delay)
            return await core.fulfiller.submit(sandbox_event(number, amount))

        expired, outcome = await asyncio.gather(expire(), pay())

        async with core.db.read() as session:
            order = await session.scalar(select(Order).where(Order.id == placed.order.id))
            payments = (
                (await session.execute(select(Payment.outcome).where(Payment.order_id == order.id))).scalars().all()
            )
            sent = dict(
                (
                    await session.execute(
                        select(OutboxMessage.kind, func.count())
                        .where(OutboxMessage.chat_id == order.chat_id)
                        .group_by(OutboxMessage.kind)
                    )
                ).all()
            )
        items = await items_of(core)
        mine = sorted(i for i, (_, order_id) in items.items() if order_id == order.id)
        if expired:
            # Expiry won: cancelled, its items back in the pool; the money that came after is
            # recorded as a late payment for an operator, and the buyer is told, not served.
            assert expired == [order.number] and outcome == PaymentOutcome.NEEDS_REVIEW
            assert (order.status, order.failure_reason) == ("cancelled", "expired")
            assert mine == [] and all(items[i] == ("available", None) for i in reserved_ids)
            assert payments == ["needs_review"]
            assert sent == {"order_expired": 1, "payment_review": 1}
            paths.append("late")
        else:
            # Payment won: the very items reserved for the order were sold, nothing expired.
            assert outcome == PaymentOutcome.DELIVERED
            assert (order.status, order.failure_reason) == ("delivered", None)
            assert mine == reserved_ids and all(items[i][0] == "sold" for i in mine)
            assert payments == ["applied"]
            assert sent == {"delivery": 1}
            paths.append("on time")

        # Whole pool: nothing sold twice or sold and available at once, nothing left reserved.
        statuses = [status for status, _ in items.values()]
        sold = 2 * paths.count("on time")
        assert (statuses.count("sold"), statuses.count("available")) == (sold, 2 * ROUNDS - sold)
        assert all(order_id is None for status, order_id in items.values() if status == "available")
        assert all(order_id is not None for status, order_id in items.values() if status == "sold")

    assert {"late", "on time"} <= set(paths), paths  # both orders of events were exercised
