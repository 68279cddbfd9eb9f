"""The ledger: every money path posts balanced entries in the transaction of its change, once,
and `ledger check` proves it (and finds tampering)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from quanyi.core.books import commissions, ledger, settlement, withdrawals
from quanyi.core.distributors import accounts as distributors
from quanyi.core.models import Commission, CommissionStatus, Distributor, JournalEntry, Order, Posting
from quanyi.core.platform.config import Settings
from quanyi.core.sales.refunds import refund_order
from quanyi.core.services import Core, build_core
from tests.conftest import make_settings
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_cli_pricing import InProcessCli, cmd  # noqa: F401  (fixture)
from tests.test_distributors import make_distributor, refer, top_up

CNY = "CNY"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The sandbox keeps 1 % + 0.05 of each payment.
    return make_settings(tmp_path, provider_fees="sandbox=1%+5")


async def owed(core: Core, account: str) -> int:
    async with core.db.read() as session:
        return await ledger.owed(session, account, CNY)


async def held(core: Core, account: str) -> int:
    async with core.db.read() as session:
        return await ledger.balance(session, account, CNY)


async def check(core: Core) -> ledger.CheckReport:
    async with core.db.read() as session:
        return await ledger.check(session)


async def paid_order(core: Core, *, user_id: int = 1001, quantity: int = 1) -> Order:
    placed = await new_order(core, quantity=quantity, user_id=user_id)
    await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))
    return placed.order


async def test_a_payment_posts_revenue_its_fee_and_the_commissions_it_earns(core, tmp_path):
    await product_with_stock(core, tmp_path, price="30.00", units=5)
    async with core.db.transaction() as session:
        await commissions.set_rate(session, 1, 1000)  # 10 %
    agent = await make_distributor(core, 701)
    await refer(core, 1001, agent)
    order = await paid_order(core, quantity=2)  # 60.00

    assert await held(core, ledger.clearing("sandbox")) == 6000 - 65  # 1 % of 60.00 + 0.05
    assert await held(core, ledger.FEES) == 65
    assert await owed(core, ledger.REVENUE) == 6000
    assert await owed(core, ledger.distributor(agent.id, "pending")) == 600
    assert await held(core, ledger.COMMISSIONS) == 600
    async with core.db.read() as session:
        kinds = sorted(await session.scalars(select(JournalEntry.kind).where(JournalEntry.order_id == order.id)))
    assert kinds == ["commission_earned", "payment"]
    assert (await check(core)).ok


async def test_a_batch_of_payments_posts_the_same_entries_as_one_by_one(core, tmp_path):
    await product_with_stock(core, tmp_path, price="10.00", units=20)
    orders = [(await new_order(core, user_id=2000 + n)).order for n in range(12)]
    # Submitted together, most settle in one set-based batch.
    await asyncio.gather(*(core.fulfiller.submit(sandbox_event(o.number, o.amount)) for o in orders))
    assert await owed(core, ledger.REVENUE) == 12 * 1000
    assert await held(core, ledger.clearing("sandbox")) == 12 * (1000 - 15)
    async with core.db.read() as session:
        refs = set(await session.scalars(select(JournalEntry.ref).where(JournalEntry.kind == "payment")))
    assert len(refs) == 12
    # A repeated callback posts nothing twice.
    await core.fulfiller.submit(sandbox_event(orders[0].number, orders[0].amount))
    assert await owed(core, ledger.REVENUE) == 12 * 1000
    assert (await check(core)).ok


async def test_a_refund_reverses_revenue_and_takes_back_the_pending_commission(core, tmp_path):
    await product_with_stock(core, tmp_path, price="30.00", units=5)
    async with core.db.transaction() as session:
        await commissions.set_rate(session, 1, 1000)
    agent = await make_distributor(core, 702)
    await refer(core, 1002, agent)
    order = await paid_order(core, user_id=1002)
    await refund_order(core, order.number, reason="buyer asked", actor="cli")

    assert await owed(core, ledger.REVENUE) == 0
    assert await held(core, ledger.clearing("sandbox")) == -35  # the fee is not given back
    assert await owed(core, ledger.distributor(agent.id, "pending")) == 0
    assert await held(core, ledger.COMMISSIONS) == 0
    assert (await check(core)).ok


async def test_a_refund_after_settlement_claws_back_the_available_commission_and_what_was_withdrawn(core, tmp_path):
    await product_with_stock(core, tmp_path, price="50.00", units=5)
    async with core.db.transaction() as session:
        await commissions.set_rate(session, 1, 1000)
    agent = await make_distributor(core, 703)
    await refer(core, 1003, agent)
    order = await paid_order(core, user_id=1003)  # commission 5.00
    # Settled: available; then the distributor takes 3.00 of it out.
    async with core.db.transaction() as session:
        await session.execute(
            update(Commission).where(Commission.order_id == order.id).values(status=CommissionStatus.AVAILABLE)
        )
        pending, available = ledger.distributor(agent.id, "pending"), ledger.distributor(agent.id, "available")
        await ledger.post(session, "test:settle", "test", ledger.transfer(pending, available, 500, CNY))
        await ledger.post(session, "test:withdraw", "test", ledger.transfer(available, ledger.CASH, 300, CNY))
    await refund_order(core, order.number, reason="chargeback", actor="cli")

    assert await owed(core, ledger.distributor(agent.id, "available")) == 0
    assert await held(core, ledger.distributor(agent.id, "receivable")) == 300  # it owes us what it withdrew
    assert await held(core, ledger.COMMISSIONS) == 0
    async with core.db.read() as session:
        row = await session.scalar(select(Commission).where(Commission.order_id == order.id))
    assert (row.status, row.clawed_back) == ("reversed", 500)
    assert (await check(core)).ok


async def test_balance_top_ups_and_bulk_purchases_keep_the_row_and_the_ledger_equal(core, tmp_path):
    from quanyi.core.stock import allocations as channels

    await product_with_stock(core, tmp_path, price="10.00", units=10)
    agent = await make_distributor(core, 704)
    async with core.db.transaction() as session:
        await channels.allocate(session, "VIP", str(agent.user_id), 5)
    await top_up(core, agent, 10000)
    async with core.db.transaction() as session:
        await distributors.bulk_buy(session, user_id=agent.user_id, sku="VIP", quantity=3, chat_id=704, language="en")
    assert await owed(core, ledger.distributor(agent.id, "balance")) == 7000
    assert await held(core, ledger.CASH) == 10000
    assert await owed(core, ledger.REVENUE) == 3000
    assert (await check(core)).ok


async def test_ledger_check_finds_an_edited_posting_and_a_balance_row_out_of_step(core, tmp_path, cmd):  # noqa: F811
    await product_with_stock(core, tmp_path, price="10.00", units=3)
    agent = await make_distributor(core, 705)
    await top_up(core, agent, 2500)
    await paid_order(core)
    assert (await check(core)).ok

    async with core.db.transaction() as session:
        first = await session.scalar(select(Posting.id).where(Posting.account == ledger.REVENUE))
        await session.execute(update(Posting).where(Posting.id == first).values(amount=Posting.amount - 1))
        await session.execute(update(Distributor).where(Distributor.id == agent.id).values(balance=9999))
    report = await check(core)
    assert not report.ok
    assert [u[1:] for u in report.unbalanced] == [(CNY, -1)]
    assert report.mismatches == [f"distributor {agent.id}: balance 9999 on its row, 2500 in the ledger (CNY)"]


def test_quanyi_ledger_check_exits_zero_on_balanced_books_and_one_on_tampered_ones(cmd):  # noqa: F811
    assert cmd.run("db", "upgrade").returncode == 0
    ok = cmd.run("ledger", "check")
    assert ok.returncode == 0 and "the ledger balances" in ok.stdout

    async def tamper() -> None:
        core = build_core(Settings(_env_file=None, data_dir=cmd.data_dir))  # type: ignore[call-arg]
        async with core.db.transaction() as session:
            await ledger.post(session, "manual:1", "test", ledger.transfer(ledger.CASH, ledger.REVENUE, 100, CNY))
            await session.execute(update(Posting).where(Posting.account == ledger.CASH).values(amount=150))
        await core.close()

    asyncio.run(tamper())
    bad = cmd.run("ledger", "check")
    assert bad.returncode == 1
    assert "UNBALANCED manual:1: postings sum to 50 CNY" in bad.stdout
    assert bad.stderr.startswith("quanyi: the ledger does not balance")


# --- property: any sequence of money events keeps the books balanced --------------------------

EVENTS = st.lists(
    st.sampled_from(["sale", "referred_sale", "refund", "top_up", "bulk", "settle", "withdraw", "withdraw_balance"]),
    min_size=1,
    max_size=8,
)


@hypothesis_settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=EVENTS)
async def test_any_sequence_of_money_events_keeps_the_ledger_balanced_and_no_balance_negative(
    events, db, keyring, tmp_path
):
    from quanyi.core.models import Base
    from quanyi.core.stock import allocations as channels

    async with db.engine.begin() as conn:  # each example starts from empty books
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)
    core = build_core(make_settings(tmp_path, provider_fees="sandbox=1%"), db=db, keyring=keyring)
    await product_with_stock(core, tmp_path, price="20.00", units=40)
    async with core.db.transaction() as session:
        await commissions.set_rate(session, 1, 1000)
        await commissions.set_rate(session, 2, 500)
    await make_distributor(core, 801, invite_limit=1)
    agent = await make_distributor(core, 802, parent=801)
    async with core.db.transaction() as session:
        await channels.allocate(session, "VIP", str(agent.user_id), 10)
    paid: list[str] = []
    buyer = 3000
    tz = core.settings.timezone
    today = datetime.now(ZoneInfo(tz)).date()
    settled_days = 0

    def day_end(day: date) -> datetime:
        return datetime.combine(day + timedelta(days=1), time.min, ZoneInfo(tz))

    for event in events:
        buyer += 1
        if event in ("sale", "referred_sale"):
            if event == "referred_sale":
                await refer(core, buyer, agent)
            paid.append((await paid_order(core, user_id=buyer)).number)
        elif event == "refund" and paid:
            await refund_order(core, paid.pop(0), reason="r", actor="cli")
        elif event == "top_up":
            await top_up(core, agent, 5000)
        elif event == "bulk":
            with contextlib.suppress(distributors.InsufficientBalance):  # the whole purchase rolls back
                async with core.db.transaction() as session:
                    await distributors.bulk_buy(
                        session, user_id=agent.user_id, sku="VIP", quantity=1, chat_id=802, language="en"
                    )
        elif event == "settle":
            # Settle the next business day, with commissions confirmed at once.
            settled_days += 1
            day = today + timedelta(days=settled_days)
            await settlement.settle_day(
                core.db, day, tz=tz, confirm_days=0, admin_ids=[], now=day_end(day) + timedelta(minutes=1)
            )
        elif event in ("withdraw", "withdraw_balance"):
            async with core.db.read() as session:
                dist = await session.get(Distributor, agent.id)
                assert dist is not None
                have = await withdrawals.available(session, dist)
            source = "commission" if event == "withdraw" else "balance"
            amount = have.commission if source == "commission" else have.balance
            if amount > 0:
                async with core.db.transaction() as session:
                    asked = await withdrawals.request(
                        session, user_id=agent.user_id, source=source, amount=amount, payout_account="bank 6222"
                    )
                async with core.db.transaction() as session:
                    if buyer % 2:
                        await withdrawals.approve(session, asked.id, actor="operator:9000")
                    else:
                        await withdrawals.reject(session, asked.id, actor="operator:9000", reason="check the account")
    async with core.db.read() as session:
        report = await ledger.check(session)
        accounts = await ledger.balances(session, "distributor:")
    assert report.ok, report
    for (account, _currency), amount in accounts.items():
        if account.endswith(":receivable"):
            assert amount >= 0, account  # an asset: what it owes us
        else:
            assert amount <= 0, account  # what we owe: never below zero
    await core.close()
