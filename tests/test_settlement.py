"""Daily settlement: a day's figures per channel and distributor computed by hand, stored once
(twice or on two runners at once changes nothing), missed days caught up in order, commissions
made available only after the confirmation period, and the statements sent to chat."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, update

from quanyi.bot.operator.statements import distributor_statement, settlement_statement
from quanyi.bot.outbox_sender import Document
from quanyi.core.books import commissions, ledger, settlement
from quanyi.core.books.settlement import Figures
from quanyi.core.errors import InvalidInput
from quanyi.core.models import Commission, JournalEntry, Order, OutboxMessage, Refund, Settlement, SettlementRow
from quanyi.core.platform.outbox import Outgoing
from quanyi.core.sales.refunds import refund_order
from quanyi.core.services import Core
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_cli_pricing import cmd  # noqa: F401  (fixture)
from tests.test_distributors import make_distributor, refer

TZ = "Asia/Shanghai"
DAY = date(2025, 3, 10)
AGENT = 501


def local(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=ZoneInfo(TZ)).astimezone(UTC)


async def paid(core: Core, *, user_id: int, quantity: int = 1, day: date = DAY, discount: int = 0) -> Order:
    """A paid order whose payment is moved to 10:00 local time on ``day``."""
    order = (await new_order(core, user_id=user_id, quantity=quantity)).order
    if discount:
        async with core.db.transaction() as session:
            await session.execute(
                update(Order)
                .where(Order.id == order.id)
                .values(discount_amount=discount, amount=Order.list_amount - discount)
            )
        order.amount -= discount
    await core.fulfiller.submit(sandbox_event(order.number, order.amount))
    async with core.db.transaction() as session:
        await session.execute(update(Order).where(Order.id == order.id).values(paid_at=local(day, 10)))
    return order


async def settle(core: Core, day: date, *, now: datetime | None = None) -> settlement.SettleResult:
    return await settlement.settle_day(
        core.db, day, tz=TZ, confirm_days=7, admin_ids=[9000], now=now or local(day + timedelta(days=1), 1)
    )


async def a_day(core: Core, tmp_path) -> tuple[int, dict[str, Order]]:
    """2 x VIP on the bot; 1 on channel shop2 with 3.00 off; two orders of the agent's referred
    buyer on the bot, 10% commission each, the first refunded the same day."""
    await product_with_stock(core, tmp_path, price="15.00", units=10)
    agent = await make_distributor(core, AGENT)
    async with core.db.transaction() as session:
        await commissions.set_rate(session, 1, 1000)
    await refer(core, 7001, agent)
    orders = {
        "a": await paid(core, user_id=1001, quantity=2),
        "c": await paid(core, user_id=1002, discount=300),
        "b1": await paid(core, user_id=7001),
        "b2": await paid(core, user_id=7001),
    }
    async with core.db.transaction() as session:
        await session.execute(update(Order).where(Order.id == orders["c"].id).values(channel="shop2"))
    await refund_order(core, orders["b1"].number, reason="did not work", actor="operator:9000")
    async with core.db.transaction() as session:
        await session.execute(update(Refund).values(completed_at=local(DAY, 12)))
    return agent.id, orders


async def test_a_days_figures_per_channel_and_distributor_are_what_a_person_computes(core, tmp_path):
    agent_id, _ = await a_day(core, tmp_path)
    result = await settle(core, DAY)
    assert not result.already and result.status == "done"
    # 4 orders, 5 units: 30.00 + 15.00 + 15.00 + 15.00 = 75.00 gross, 3.00 off, 15.00 refunded,
    # net 57.00; the kept referred order earns 10% of 15.00 = 1.50 (the refunded one's is reversed).
    assert result.rows == [
        Figures("total", "all", "CNY", 4, 5, 7500, 300, 1500, 5700, 150, 0),
        Figures("channel", "bot", "CNY", 3, 4, 6000, 0, 1500, 4500, 150, 0),
        Figures("channel", "shop2", "CNY", 1, 1, 1500, 300, 0, 1200, 0, 0),
        Figures("distributor", str(agent_id), "CNY", 2, 2, 3000, 0, 1500, 1500, 150, 0),
    ]
    async with core.db.read() as session:
        stored = await session.get(Settlement, 1)
        assert stored is not None and stored.status == "done"
        assert json.loads(stored.summary)["totals"]["CNY"]["net"] == 5700
        kinds = (await session.execute(select(OutboxMessage.chat_id, OutboxMessage.kind, OutboxMessage.payload))).all()
    assert (9000, "settlement_statement", json.dumps({"day": "2025-03-10"}, separators=(",", ":"))) in kinds
    assert (AGENT, "distributor_statement", f'{{"day":"2025-03-10","distributor_id":{agent_id}}}') in kinds


async def test_settling_a_day_twice_changes_nothing(core, tmp_path):
    await a_day(core, tmp_path)
    first = await settle(core, DAY)
    async with core.db.read() as session:
        outbox_before = await session.scalar(select(func.count()).select_from(OutboxMessage))
    again = await settle(core, DAY)
    assert again.already and again.status == "done"
    assert again.rows == first.rows
    async with core.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(OutboxMessage)) == outbox_before
        assert await session.scalar(select(func.count()).select_from(SettlementRow)) == 4


async def test_two_runners_settling_the_same_day_at_once_settle_it_once(core, tmp_path):
    await a_day(core, tmp_path)
    results = await asyncio.gather(settle(core, DAY), settle(core, DAY))
    assert sorted(r.already for r in results) == [False, True]
    async with core.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(SettlementRow)) == 4
        assert await session.scalar(select(func.count()).select_from(Settlement)) == 1
        statements = await session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.kind == "settlement_statement")
        )
    assert statements == 1


async def test_a_day_not_over_is_refused_and_a_crashed_run_is_taken_over(core, tmp_path):
    with pytest.raises(InvalidInput):
        await settle(core, DAY, now=local(DAY, 23))
    midnight = local(DAY + timedelta(days=1), 0)
    async with core.db.transaction() as session:
        session.add(Settlement(day=DAY.isoformat(), status="running", started_at=midnight, summary="{}"))
    # Still running 5 minutes after it started: left alone; 20 minutes after: taken over.
    busy = await settle(core, DAY, now=midnight + timedelta(minutes=5))
    assert busy.already and busy.status == "running"
    taken = await settle(core, DAY, now=midnight + timedelta(minutes=20))
    assert not taken.already and taken.status == "done"


async def test_commissions_become_available_after_the_confirmation_period_and_the_ledger_moves_them(core, tmp_path):
    agent_id, _ = await a_day(core, tmp_path)
    pending, available = ledger.distributor(agent_id, "pending"), ledger.distributor(agent_id, "available")

    async def owed() -> tuple[int, int]:
        async with core.db.read() as session:
            return await ledger.owed(session, pending, "CNY"), await ledger.owed(session, available, "CNY")

    before = await owed()
    for offset in range(7):  # the day itself and the six after it: not confirmed yet
        result = await settle(core, DAY + timedelta(days=offset))
        assert all(r.commissions_available == 0 for r in result.rows)
    assert await owed() == before
    week = await settle(core, DAY + timedelta(days=7))
    # Only the kept order's 1.50 moves, once, as one entry; the refunded order's stays reversed.
    assert week.rows == [
        Figures("total", "all", "CNY", commissions_available=150),
        Figures("distributor", str(agent_id), "CNY", commissions_available=150),
    ]
    assert await owed() == (before[0] - 150, before[1] + 150)
    async with core.db.read() as session:
        statuses = sorted((await session.scalars(select(Commission.status))).all())
        entries = await session.scalar(
            select(func.count()).select_from(JournalEntry).where(JournalEntry.kind == "commission_available")
        )
        check = await ledger.check(session)
    assert statuses == ["available", "reversed"]
    assert entries == 1
    assert not check.unbalanced


async def test_missed_days_are_caught_up_oldest_first_then_nothing_is_due(core, tmp_path):
    await product_with_stock(core, tmp_path, price="15.00", units=5)
    await paid(core, user_id=1001, day=DAY)
    await paid(core, user_id=1002, day=DAY + timedelta(days=2))
    now = local(DAY + timedelta(days=3), 1)
    results = await settlement.settle_due(core, now)
    assert [(r.day, r.already) for r in results] == [(DAY + timedelta(days=d), False) for d in range(3)]
    assert [r.of("total", "all", "CNY") for r in results] == [
        Figures("total", "all", "CNY", 1, 1, 1500, 0, 0, 1500, 0, 0),
        None,
        Figures("total", "all", "CNY", 1, 1, 1500, 0, 0, 1500, 0, 0),
    ]
    assert await settlement.settle_due(core, now) == []
    later = await settlement.settle_due(core, now + timedelta(days=1))
    assert [r.day for r in later] == [DAY + timedelta(days=3)]


async def test_statements_read_as_messages_with_a_csv_of_the_figures(core, tmp_path):
    agent_id, _ = await a_day(core, tmp_path)
    await settle(core, DAY)
    text, document = await settlement_statement(
        core, Outgoing(1, 9000, "settlement_statement", {"day": "2025-03-10"}, "en", 0)
    )
    assert isinstance(text, str) and isinstance(document, Document)
    assert "Settlement 2025-03-10" in text
    assert "Net <b>¥57.00</b>" in text and "refunds ¥15.00" in text
    assert f"Agent {AGENT} (#{agent_id}): 2 orders · net ¥15.00 · commissions ¥1.50" in text
    rows = list(csv.DictReader(io.StringIO(document.data.decode("utf-8-sig"))))
    assert [(r["scope"], r["key"], r["gross"], r["net"], r["commissions"]) for r in rows] == [
        ("total", "all", "75.00", "57.00", "1.50"),
        ("channel", "bot", "60.00", "45.00", "1.50"),
        ("channel", "shop2", "15.00", "12.00", "0.00"),
        ("distributor", str(agent_id), "30.00", "15.00", "1.50"),
    ]
    own = await distributor_statement(
        core, Outgoing(2, AGENT, "distributor_statement", {"day": "2025-03-10", "distributor_id": agent_id}, "zh", 0)
    )
    assert "您的 2025-03-10 对账单" in own[0] and "获得佣金 ¥1.50" in own[0]
    assert isinstance(own[1], Document)
    assert [r["scope"] for r in csv.DictReader(io.StringIO(own[1].data.decode("utf-8-sig")))] == ["distributor"]


def test_quanyi_settle_prints_the_day_once_then_already_settled_and_refuses_a_day_not_over(cmd):
    assert cmd.run("db", "upgrade").returncode == 0
    first = cmd.run("settle", "--day", "2025-03-10")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("settled 2025-03-10 (Asia/Shanghai)")
    again = cmd.run("settle", "--day", "2025-03-10")
    assert again.returncode == 0 and again.stdout.startswith("2025-03-10 already settled")
    today = datetime.now(ZoneInfo(TZ)).date().isoformat()
    refused = cmd.run("settle", "--day", today)
    assert refused.returncode != 0 and "not over yet" in refused.stderr
    assert cmd.run("settle", "--day", "10/03/2025").returncode != 0
