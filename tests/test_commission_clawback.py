"""A refund takes confirmed commission back from what the distributor may withdraw, then from
its open withdrawals (reduced, or refused at zero, the distributor told why), and only then
books a receivable; whatever is credited to its available commission later pays that down
first, and no withdrawal ever reaches what it owes (issue 15, item 3)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from quanyi.core.books import commissions, ledger, settlement, withdrawals
from quanyi.core.books.withdrawals import WithdrawalDecided
from quanyi.core.distributors.accounts import InsufficientBalance
from quanyi.core.models import (
    Commission,
    Distributor,
    JournalEntry,
    Order,
    OutboxMessage,
    SettlementRow,
    Withdrawal,
    WithdrawalStatus,
)
from quanyi.core.platform.outbox import Outgoing
from quanyi.core.sales.refunds import refund_order
from quanyi.core.services import Core
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_distributors import make_distributor, refer, top_up

CNY = "CNY"
AGENT = 2301
OPERATOR = "operator:9000"


# --- helpers ---------------------------------------------------------------------------------


async def setup_agent(core: Core, tmp_path, *, price: str = "50.00", units: int = 10) -> Distributor:
    """One distributor earning 10 % (level 1) on its referred buyers' orders."""
    await product_with_stock(core, tmp_path, price=price, units=units)
    async with core.db.transaction() as session:
        await commissions.set_rate(session, 1, 1000)
    return await make_distributor(core, AGENT)


async def sale(core: Core, agent: Distributor, buyer: int) -> Order:
    await refer(core, buyer, agent)
    placed = await new_order(core, user_id=buyer)
    await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))
    return placed.order


_settled: dict[int, int] = {}


async def settle(core: Core) -> None:
    """Settle the next business day with commissions confirmed at once (each call a new day)."""
    tz = core.settings.timezone
    n = _settled[id(core)] = _settled.get(id(core), 0) + 1
    day = datetime.now(ZoneInfo(tz)).date() + timedelta(days=n)
    await settlement.settle_day(core.db, day, tz=tz, confirm_days=0, admin_ids=[], now=_after(day, tz))


def _after(day: date, tz: str) -> datetime:
    return datetime.combine(day + timedelta(days=1), time.min, ZoneInfo(tz)) + timedelta(minutes=1)


async def ask(core: Core, source: str, amount: int) -> Withdrawal:
    async with core.db.transaction() as session:
        return await withdrawals.request(
            session, user_id=AGENT, source=source, amount=amount, payout_account="alipay: agent@example.com"
        )


async def approve(core: Core, withdrawal_id: int) -> Withdrawal:
    async with core.db.transaction() as session:
        return await withdrawals.approve(session, withdrawal_id, actor=OPERATOR)


async def reject(core: Core, withdrawal_id: int, reason: str = "check the account") -> Withdrawal:
    async with core.db.transaction() as session:
        return await withdrawals.reject(session, withdrawal_id, actor=OPERATOR, reason=reason)


async def pockets(core: Core, agent: Distributor) -> dict[str, int]:
    """Each pocket as a person reads it (what we owe; the receivable: what it owes us), the cash
    paid out to it (approved withdrawals), and what ``withdrawals.available`` lets it withdraw."""
    async with core.db.read() as session:
        out = {
            pocket: await ledger.owed(session, ledger.distributor(agent.id, pocket), CNY)
            for pocket in ("pending", "available", "frozen", "balance")
        }
        out["receivable"] = await ledger.balance(session, ledger.distributor(agent.id, "receivable"), CNY)
        paid = await session.scalars(
            select(Withdrawal.amount).where(
                Withdrawal.distributor_id == agent.id, Withdrawal.status == WithdrawalStatus.APPROVED
            )
        )
        out["paid"] = sum(paid)
        distributor = await session.get(Distributor, agent.id)
        assert distributor is not None
        have = await withdrawals.available(session, distributor)
        out["may_commission"], out["may_balance"] = have.commission, have.balance
    return out


async def withdrawal(core: Core, withdrawal_id: int) -> Withdrawal:
    async with core.db.read() as session:
        found = await session.get(Withdrawal, withdrawal_id)
        assert found is not None
        return found


async def books_ok(core: Core, agent: Distributor) -> None:
    """The ledger balances, its balance column equals its account, and the frozen account is
    exactly the open withdrawals."""
    async with core.db.read() as session:
        report = await ledger.check(session)
        frozen = await ledger.owed(session, ledger.distributor(agent.id, "frozen"), CNY)
        open_amounts = await session.scalars(
            select(Withdrawal.amount).where(
                Withdrawal.distributor_id == agent.id, Withdrawal.status == WithdrawalStatus.REQUESTED
            )
        )
    assert report.ok, report
    assert frozen == sum(open_amounts)


async def messages(core: Core, chat_id: int, kind: str) -> list[dict[str, object]]:
    async with core.db.read() as session:
        rows = await session.scalars(
            select(OutboxMessage.payload)
            .where(OutboxMessage.chat_id == chat_id, OutboxMessage.kind == kind)
            .order_by(OutboxMessage.id)
        )
        return [json.loads(p) for p in rows]


# --- the scenario of the issue ---------------------------------------------------------------


async def test_a_refund_takes_the_commission_back_from_the_frozen_withdrawal_that_is_then_refused(core, tmp_path):
    agent = await setup_agent(core, tmp_path)
    order = await sale(core, agent, 7001)  # 50.00: commission 5.00
    await settle(core)
    asked = await ask(core, "commission", 500)
    assert (await pockets(core, agent))["frozen"] == 500

    await refund_order(core, order.number, reason="chargeback", actor="cli")

    after = await withdrawal(core, asked.id)
    assert (after.status, after.amount, after.decided_by) == ("rejected", 0, withdrawals.CLAWBACK_ACTOR)
    assert after.reason is not None and order.number in after.reason and "¥5.00 of ¥5.00" in after.reason
    got = await pockets(core, agent)
    assert (got["available"], got["frozen"], got["receivable"], got["paid"]) == (0, 0, 0, 0)
    # What the issue feared: the operator rejects (the amount would come back to available)
    # or approves (it would be paid out). Neither changes anything now.
    with pytest.raises(WithdrawalDecided):
        await reject(core, asked.id)
    with pytest.raises(WithdrawalDecided):
        await approve(core, asked.id)
    got = await pockets(core, agent)
    assert (got["available"], got["may_commission"], got["paid"]) == (0, 0, 0)
    # The distributor is told why, once.
    told = await messages(core, AGENT, "withdrawal_reduced")
    assert told == [{"withdrawal_id": asked.id, "before": 500, "taken": 500, "after": 0, "order": order.number}]
    async with core.db.read() as session:
        reduced = await session.scalar(
            select(JournalEntry.kind).where(JournalEntry.ref.startswith(f"withdrawal:{asked.id}:clawback:"))
        )
    assert reduced == "withdrawal_reduced"
    await books_ok(core, agent)


async def test_available_goes_first_then_the_newest_withdrawal_is_reduced_and_the_rest_is_paid(core, tmp_path):
    agent = await setup_agent(core, tmp_path)
    first = await sale(core, agent, 7001)
    await sale(core, agent, 7002)
    await settle(core)  # 10.00 available
    older = await ask(core, "commission", 400)
    newer = await ask(core, "commission", 400)  # 2.00 left available

    await refund_order(core, first.number, reason="r", actor="cli")  # 5.00 back: 2.00 + 3.00 of `newer`

    got = await pockets(core, agent)
    assert (got["available"], got["frozen"], got["receivable"]) == (0, 500, 0)
    assert (await withdrawal(core, older.id)).amount == 400
    reduced = await withdrawal(core, newer.id)
    assert (reduced.status, reduced.amount) == ("requested", 100)
    assert reduced.reason is not None and "¥3.00 of ¥4.00" in reduced.reason
    await approve(core, newer.id)
    await approve(core, older.id)
    got = await pockets(core, agent)
    assert got["paid"] == 500  # the commission of the order not refunded
    assert (await withdrawal(core, newer.id)).reason == reduced.reason  # the approval keeps the note
    await books_ok(core, agent)


async def test_a_frozen_balance_withdrawal_covers_commission_paid_out_before_the_refund(core, tmp_path):
    agent = await setup_agent(core, tmp_path)
    order = await sale(core, agent, 7001)
    await settle(core)
    await approve(core, (await ask(core, "commission", 500)).id)  # 5.00 paid out
    await top_up(core, agent, 1000)
    balance_ask = await ask(core, "balance", 1000)

    await refund_order(core, order.number, reason="r", actor="cli")

    reduced = await withdrawal(core, balance_ask.id)
    assert (reduced.status, reduced.amount) == ("requested", 500)
    got = await pockets(core, agent)
    assert (got["receivable"], got["frozen"], got["balance"]) == (0, 500, 0)
    await approve(core, balance_ask.id)
    # 5.00 of commission and 5.00 of balance paid: the 10.00 it topped up, no more.
    assert (await pockets(core, agent))["paid"] == 1000
    await books_ok(core, agent)


# --- receivable: booked only for what was paid, netted before anything is available ----------


async def test_a_receivable_is_paid_down_by_the_next_settlements_before_anything_is_available(core, tmp_path):
    agent = await setup_agent(core, tmp_path, price="50.00")
    order = await sale(core, agent, 7001)
    await settle(core)
    await approve(core, (await ask(core, "commission", 500)).id)
    await refund_order(core, order.number, reason="r", actor="cli")
    got = await pockets(core, agent)
    assert (got["receivable"], got["available"], got["may_commission"]) == (500, 0, 0)

    await sale(core, agent, 7002)  # 5.00 more: not yet confirmed
    async with core.db.transaction() as session:
        await commissions.set_rate(session, 1, 600)
    await sale(core, agent, 7003)  # 3.00
    got = await pockets(core, agent)
    assert (got["pending"], got["receivable"]) == (800, 500)
    await settle(core)  # 8.00 confirmed: 5.00 of it pays the receivable
    got = await pockets(core, agent)
    assert (got["available"], got["receivable"], got["may_commission"], got["pending"]) == (300, 0, 300, 0)
    async with core.db.read() as session:
        netted = list(
            await session.scalars(
                select(JournalEntry.ref).where(
                    JournalEntry.kind == "commission_receivable_netted", JournalEntry.distributor_id == agent.id
                )
            )
        )
        statements = list(
            await session.scalars(
                select(SettlementRow.commissions_available)
                .where(SettlementRow.scope == "distributor", SettlementRow.key == str(agent.id))
                .order_by(SettlementRow.day)
            )
        )
    assert len(netted) == 1 and netted[0].startswith("settle:") and ":netted:" in netted[0]
    assert statements == [500, 800]  # the statements show what was confirmed, before netting
    await books_ok(core, agent)


async def test_a_settlement_covering_only_part_of_the_receivable_leaves_nothing_available(core, tmp_path):
    agent = await setup_agent(core, tmp_path, price="50.00")
    order = await sale(core, agent, 7001)
    await settle(core)
    await approve(core, (await ask(core, "commission", 500)).id)
    await refund_order(core, order.number, reason="r", actor="cli")
    async with core.db.transaction() as session:
        await commissions.set_rate(session, 1, 400)
    await sale(core, agent, 7002)  # 2.00
    await settle(core)
    got = await pockets(core, agent)
    assert (got["available"], got["receivable"], got["may_commission"]) == (0, 300, 0)
    with pytest.raises(InsufficientBalance):
        await ask(core, "commission", 1)
    await books_ok(core, agent)


async def test_no_withdrawal_reaches_what_the_distributor_owes(core, tmp_path):
    agent = await setup_agent(core, tmp_path)
    order = await sale(core, agent, 7001)
    await settle(core)
    await approve(core, (await ask(core, "commission", 500)).id)
    await refund_order(core, order.number, reason="r", actor="cli")  # owes 5.00
    await top_up(core, agent, 1200)
    got = await pockets(core, agent)
    assert (got["balance"], got["may_balance"], got["may_commission"]) == (1200, 700, 0)
    with pytest.raises(InsufficientBalance) as refused:
        await ask(core, "balance", 701)
    assert refused.value.details["available"] == 700
    with pytest.raises(InsufficientBalance):
        await ask(core, "commission", 1)
    await approve(core, (await ask(core, "balance", 700)).id)
    # Paid 5.00 + 7.00 = 12.00: its top-up; the 5.00 it owes stays on its books.
    got = await pockets(core, agent)
    assert (got["paid"], got["receivable"], got["balance"], got["may_balance"]) == (1200, 500, 500, 0)
    await books_ok(core, agent)


async def test_books_left_with_a_receivable_beside_available_commission_withdraw_only_the_difference(core, tmp_path):
    """A receivable booked while commission stayed available (the old behaviour) nets on the next
    credit and is never withdrawable meanwhile; a rejected commission withdrawal pays it down."""
    agent = await setup_agent(core, tmp_path)
    async with core.db.transaction() as session:
        await ledger.post(
            session,
            "test:old-books",
            "test",
            ledger.transfer(ledger.COMMISSIONS, ledger.distributor(agent.id, "available"), 1000, CNY)
            + ledger.transfer(ledger.distributor(agent.id, "receivable"), ledger.COMMISSIONS, 400, CNY),
        )
    got = await pockets(core, agent)
    assert (got["available"], got["receivable"], got["may_commission"]) == (1000, 400, 600)
    with pytest.raises(InsufficientBalance):
        await ask(core, "commission", 601)
    asked = await ask(core, "commission", 600)
    await reject(core, asked.id)  # 6.00 back to available: the 4.00 owed comes off first
    got = await pockets(core, agent)
    assert (got["available"], got["receivable"], got["may_commission"]) == (600, 0, 600)
    await books_ok(core, agent)


# --- partial refunds and races ---------------------------------------------------------------


async def test_a_line_refunded_in_part_takes_its_share_from_the_withdrawal(core, tmp_path):
    from quanyi.core.payments.base import RefundEvent
    from quanyi.core.sales.refunds import record_provider_refund

    agent = await setup_agent(core, tmp_path, price="40.00")
    await refer(core, 7001, agent)
    placed = await new_order(core, user_id=7001)
    await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount, txn="PAY-PART"))
    await settle(core)  # 4.00 available
    asked = await ask(core, "commission", 400)
    # The provider gives a quarter back: a quarter of the commission, 1.00, comes off the withdrawal.
    await record_provider_refund(core, RefundEvent("sandbox", "PAY-PART", "RF-1", 1000, CNY, {}))
    assert (await withdrawal(core, asked.id)).amount == 300
    async with core.db.read() as session:
        row = await session.scalar(select(Commission).where(Commission.order_id == placed.order.id))
    assert (row.status, row.clawed_back) == ("available", 100)
    await approve(core, asked.id)
    assert (await pockets(core, agent))["paid"] == 300
    await books_ok(core, agent)


@pytest.mark.parametrize("decision", ["approve", "reject"])
async def test_a_refund_racing_the_operators_decision_never_pays_commission_of_the_refunded_order(
    core, tmp_path, decision
):
    agent = await setup_agent(core, tmp_path)
    order = await sale(core, agent, 7001)
    await settle(core)
    asked = await ask(core, "commission", 500)

    async def decide() -> None:
        with contextlib.suppress(WithdrawalDecided):  # the claw-back refused it first
            await (approve(core, asked.id) if decision == "approve" else reject(core, asked.id))

    await asyncio.gather(refund_order(core, order.number, reason="r", actor="cli"), decide())
    got = await pockets(core, agent)
    # Whatever came first: paid out only against a receivable of the same amount, nothing available.
    assert got["available"] == got["frozen"] == 0
    assert got["paid"] == got["receivable"]
    await books_ok(core, agent)


# --- the message -----------------------------------------------------------------------------


async def test_the_distributor_reads_how_much_was_taken_and_why(core, tmp_path):
    from quanyi.bot.operator.withdrawals import render_reduced

    agent = await setup_agent(core, tmp_path)
    order = await sale(core, agent, 7001)
    await sale(core, agent, 7002)
    await settle(core)
    asked = await ask(core, "commission", 1000)
    await refund_order(core, order.number, reason="r", actor="cli")
    (payload,) = await messages(core, AGENT, "withdrawal_reduced")
    for lang, expected in (
        ("en", f"is reduced from ¥10.00 to ¥5.00: ¥5.00 is kept to cover the commission of order {order.number}"),
        ("zh", f"已从 ¥10.00 减少为 ¥5.00：其中 ¥5.00 用于抵扣订单 {order.number} 的佣金"),
    ):
        (text,) = await render_reduced(core, Outgoing(1, AGENT, "withdrawal_reduced", payload, lang, 0))
        assert f"#{asked.id}" in text and expected in text, text
    gone = dict(payload, after=0, taken=1000)
    (text,) = await render_reduced(core, Outgoing(2, AGENT, "withdrawal_reduced", gone, "en", 0))
    assert "of ¥10.00 from your commission is cancelled" in text and "Nothing will be paid out" in text
