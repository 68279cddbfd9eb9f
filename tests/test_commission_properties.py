"""Property: whatever happens in whatever order — sales through a referral chain (the
distributors themselves buying too), whole and partial refunds, settlements, top-ups,
withdrawals requested, approved and rejected — cash paid to a distributor never exceeds its
commissions on orders not refunded plus its net top-ups (issue 15, items 3 and 8).

A refund after a payout cannot take cash back: that excess is exactly what the distributor
then owes us (its receivable). So the property is checked as:

- at every payout: paid so far <= confirmed commission still standing + top-ups;
- always: available + balance + frozen + paid == confirmed commission still standing + top-ups
  + receivable, with no pocket negative (so paid never exceeds entitlement + receivable), a
  receivable only while nothing is available, and frozen == the open withdrawals;
- a request is refused exactly when it asks more than available minus receivable (commission)
  or than the balance minus what available does not cover (balance);
- no commission row names the buyer, or a distributor inactive when the order was paid.

"Confirmed commission still standing" counts commission rows made available by a settlement,
less what refunds took back; pending commission is not counted (it is not withdrawable).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from quanyi.core.books import commissions, ledger, settlement, withdrawals
from quanyi.core.distributors import accounts as distributors
from quanyi.core.distributors.accounts import InsufficientBalance
from quanyi.core.models import (
    Base,
    Commission,
    CommissionStatus,
    Distributor,
    Order,
    Withdrawal,
    WithdrawalStatus,
)
from quanyi.core.payments.base import RefundEvent
from quanyi.core.sales.refunds import record_provider_refund, refund_order
from quanyi.core.services import Core, build_core
from tests.conftest import make_settings
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_distributors import make_distributor, refer, top_up

CNY = "CNY"
TOP, MID, LEAF = 801, 802, 803
AGENTS = (TOP, MID, LEAF)

# A sale: 0-2 a new buyer referred by leaf / mid / top; 3 the top, 4 the middle one buying
# through the leaf's link (their own purchases).
SALE = st.tuples(st.just("sale"), st.integers(0, 4), st.integers(1, 2))
# part: quarters of what may be withdrawn (all of it first); 5 asks one fen more than that.
REQUEST = st.tuples(
    st.just("request"), st.integers(0, 2), st.sampled_from(["commission", "balance"]), st.sampled_from([4, 5, 2, 1, 3])
)
DECIDE = st.tuples(st.sampled_from(["approve", "approve", "reject"]), st.integers(0, 7))
REFUND = st.one_of(
    st.tuples(st.just("refund"), st.integers(0, 15)),
    st.tuples(st.just("partial"), st.integers(0, 15), st.integers(1, 3)),
)
TOP_UP = st.tuples(st.just("top_up"), st.integers(0, 2), st.sampled_from([300, 1000]))
# A bag of every kind of step, in any order: the unshuffled order (what hypothesis tries
# first) already pays out before it refunds.
STEPS = (
    st.tuples(
        st.lists(SALE, min_size=1, max_size=4),
        st.lists(REQUEST, min_size=2, max_size=5),
        st.lists(DECIDE, min_size=2, max_size=5),
        st.lists(REFUND, min_size=1, max_size=4),
        st.lists(st.just(("settle",)), min_size=1, max_size=3),
        st.lists(TOP_UP, max_size=2),
        st.lists(st.just(("toggle_mid",)), max_size=1),
    )
    .map(lambda kinds: [step for kind in kinds for step in kind])
    .flatmap(st.permutations)
)
# Every sequence starts from some confirmed commission: three sales through the whole chain, settled.
PRELUDE = [("sale", 0, 1), ("sale", 0, 2), ("sale", 0, 1), ("settle",)]


@dataclass
class World:
    core: Core
    ids: dict[int, int]  # Telegram user id -> distributor id
    orders: list[tuple[str, str, int]] = field(default_factory=list)  # number, payment txn, amount
    refunded: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    top_ups: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    buyer: int = 5000
    days: int = 0
    sales: int = 0


@hypothesis_settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=STEPS)
# The sequence: withdrawal requested, order refunded, operator rejects (or approves).
@example(steps=[("request", 2, "commission", 4), ("refund", 0), ("reject", 0), ("request", 2, "commission", 5)])
@example(steps=[("request", 1, "commission", 4), ("partial", 1, 2), ("approve", 0)])
# Paid out, then refunded: a receivable, netted by the next settlement; the balance is bounded meanwhile.
@example(
    steps=[
        ("request", 2, "commission", 4),
        ("approve", 0),
        ("refund", 1),
        ("top_up", 2, 1000),
        ("request", 2, "balance", 5),
        ("request", 2, "balance", 4),
        ("sale", 0, 1),
        ("settle",),
        ("approve", 0),
        ("request", 2, "commission", 4),
    ]
)
async def test_cash_paid_never_exceeds_commission_standing_plus_top_ups(steps, db, keyring, tmp_path):
    async with db.engine.begin() as conn:  # each example starts from empty books
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)
    core = build_core(make_settings(tmp_path), db=db, keyring=keyring)
    try:
        world = await _world(core, tmp_path)
        for step in [*PRELUDE, *steps]:
            await _apply(world, step)
            await _check(world)
        async with core.db.read() as session:
            report = await ledger.check(session)
        assert report.ok, report
    finally:
        await core.close()


async def _world(core: Core, tmp_path) -> World:
    await product_with_stock(core, tmp_path, price="20.00", units=40)
    async with core.db.transaction() as session:
        for level, rate in ((1, 1000), (2, 500), (3, 250)):
            await commissions.set_rate(session, level, rate)
    top = await make_distributor(core, TOP, invite_limit=1)
    mid = await make_distributor(core, MID, parent=TOP)
    async with core.db.transaction() as session:
        await distributors.update_distributor(session, str(MID), invite_limit=1)
    leaf = await make_distributor(core, LEAF, parent=MID)
    for user in (TOP, MID):  # its own purchases go through the leaf: levels 3 and 2 of the chain
        await refer(core, user, leaf)
    return World(core, {TOP: top.id, MID: mid.id, LEAF: leaf.id})


async def _apply(world: World, step: tuple) -> None:
    core, kind = world.core, step[0]
    if kind == "sale":
        _, target, quantity = step
        if world.sales + quantity > 40:
            return
        if target <= 2:
            world.buyer += 1
            buyer = world.buyer
            await refer(core, buyer, await _distributor(core, world.ids[(LEAF, MID, TOP)[target]]))
        else:
            buyer = (TOP, MID)[target - 3]
        placed = await new_order(core, user_id=buyer, quantity=quantity)
        txn = f"PAY-{placed.order.number}"
        await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount, txn=txn))
        world.orders.append((placed.order.number, txn, placed.order.amount))
        world.sales += quantity
        await _check_chain(world, placed.order.number, buyer)
    elif kind == "refund" and world.orders:
        number, _, _ = world.orders[step[1] % len(world.orders)]
        if not world.refunded[number]:
            result = await refund_order(core, number, reason="buyer asked", actor="cli")
            world.refunded[number] = result.amount
    elif kind == "partial" and world.orders:
        number, txn, amount = world.orders[step[1] % len(world.orders)]
        left = amount - world.refunded[number]
        if left > 0:
            part = min(left, max(1, amount * step[2] // 4))
            event = RefundEvent("sandbox", txn, f"RF-{number}-{world.refunded[number]}", part, CNY, {})
            await record_provider_refund(core, event)
            world.refunded[number] += part
    elif kind == "settle":
        world.days += 1
        tz = core.settings.timezone
        day = datetime.now(ZoneInfo(tz)).date() + timedelta(days=world.days)
        after = datetime.combine(day + timedelta(days=1), time.min, ZoneInfo(tz)) + timedelta(minutes=1)
        await settlement.settle_day(core.db, day, tz=tz, confirm_days=0, admin_ids=[], now=after)
    elif kind == "top_up":
        _, who, amount = step
        agent = await _distributor(core, world.ids[AGENTS[who]])
        await top_up(core, agent, amount)
        world.top_ups[agent.id] += amount
    elif kind == "request":
        await _request(world, AGENTS[step[1]], step[2], step[3])
    elif kind in ("approve", "reject"):
        async with core.db.read() as session:
            open_ids = list(
                await session.scalars(
                    select(Withdrawal.id).where(Withdrawal.status == WithdrawalStatus.REQUESTED).order_by(Withdrawal.id)
                )
            )
        if not open_ids:
            return
        chosen = open_ids[step[1] % len(open_ids)]
        async with core.db.transaction() as session:
            if kind == "approve":
                decided = await withdrawals.approve(session, chosen, actor="operator:9000")
            else:
                decided = await withdrawals.reject(session, chosen, actor="operator:9000", reason="check the account")
        if kind == "approve":
            # The payout moment: paid so far within what stands confirmed plus top-ups.
            figures = await _figures(world)
            d = decided.distributor_id
            assert figures.paid[d] <= figures.standing[d] + world.top_ups[d], (d, figures)
    elif kind == "toggle_mid":
        async with core.db.transaction() as session:
            mid = await session.get(Distributor, world.ids[MID])
            assert mid is not None
            await distributors.update_distributor(session, str(MID), active=not mid.active)


async def _distributor(core: Core, distributor_id: int) -> Distributor:
    async with core.db.read() as session:
        found = await session.get(Distributor, distributor_id)
    assert found is not None
    return found


async def _request(world: World, user_id: int, source: str, part: int) -> None:
    """Ask a share of what may be withdrawn, or one fen more: refused exactly then."""
    core = world.core
    d = world.ids[user_id]
    async with core.db.read() as session:
        agent = await session.get(Distributor, d)
        assert agent is not None
        have = await withdrawals.available(session, agent)
        available = await ledger.owed(session, ledger.distributor(d, "available"), CNY)
        owes = await ledger.balance(session, ledger.distributor(d, "receivable"), CNY)
    # The bound, worked out here on its own.
    may = max(0, available - owes) if source == "commission" else max(0, agent.balance - max(0, owes - available))
    assert have.of(source) == may
    amount = may + 1 if part == 5 else may * part // 4
    if amount <= 0 or not agent.active:
        return  # a deactivated distributor may not ask (distributors.require)
    try:
        async with core.db.transaction() as session:
            await withdrawals.request(
                session, user_id=user_id, source=source, amount=amount, payout_account="bank 6222"
            )
    except InsufficientBalance:
        assert amount > may
    else:
        assert amount <= may


@dataclass(frozen=True)
class Figures:
    pockets: dict[tuple[int, str], int]  # (distributor, pocket) -> balance as a person reads it
    paid: dict[int, int]
    standing: dict[int, int]  # confirmed commission not taken back
    open_amounts: dict[int, int]
    rows: dict[int, int]  # balance column


async def _figures(world: World) -> Figures:
    async with world.core.db.read() as session:
        held = await ledger.balances(session, "distributor:")
        paid = dict(
            (
                await session.execute(
                    select(Withdrawal.distributor_id, func.sum(Withdrawal.amount))
                    .where(Withdrawal.status == WithdrawalStatus.APPROVED)
                    .group_by(Withdrawal.distributor_id)
                )
            ).all()
        )
        open_amounts = dict(
            (
                await session.execute(
                    select(Withdrawal.distributor_id, func.sum(Withdrawal.amount))
                    .where(Withdrawal.status == WithdrawalStatus.REQUESTED)
                    .group_by(Withdrawal.distributor_id)
                )
            ).all()
        )
        standing = dict(
            (
                await session.execute(
                    select(Commission.distributor_id, func.sum(Commission.amount - Commission.clawed_back))
                    .where(Commission.status == CommissionStatus.AVAILABLE)
                    .group_by(Commission.distributor_id)
                )
            ).all()
        )
        rows = dict((await session.execute(select(Distributor.id, Distributor.balance))).all())
    pockets: dict[tuple[int, str], int] = {}
    for d in world.ids.values():
        for pocket in ("available", "frozen", "balance", "pending"):
            pockets[(d, pocket)] = -held.get((ledger.distributor(d, pocket), CNY), 0)
        pockets[(d, "receivable")] = held.get((ledger.distributor(d, "receivable"), CNY), 0)
    return Figures(
        pockets,
        defaultdict(int, {k: int(v) for k, v in paid.items()}),
        defaultdict(int, {k: int(v) for k, v in standing.items()}),
        defaultdict(int, {k: int(v) for k, v in open_amounts.items()}),
        {k: int(v) for k, v in rows.items()},
    )


async def _check(world: World) -> None:
    f = await _figures(world)
    for d in world.ids.values():
        available, frozen = f.pockets[(d, "available")], f.pockets[(d, "frozen")]
        balance, owes = f.pockets[(d, "balance")], f.pockets[(d, "receivable")]
        assert min(available, frozen, balance, owes, f.pockets[(d, "pending")]) >= 0, (d, f)
        assert balance == f.rows[d]
        assert frozen == f.open_amounts[d], (d, f)
        assert owes == 0 or available == 0, (d, f)  # a receivable is netted before anything is available
        entitled = f.standing[d] + world.top_ups[d]
        assert available + balance + frozen + f.paid[d] == entitled + owes, (d, f)
        assert f.paid[d] <= entitled + owes


async def _check_chain(world: World, number: str, buyer: int) -> None:
    """Nobody earns on his own purchase; nobody inactive at payment earns at all."""
    async with world.core.db.read() as session:
        found = (
            await session.execute(
                select(Distributor.user_id, Distributor.active, Commission.status)
                .join(Commission, Commission.distributor_id == Distributor.id)
                .join(Order, Order.id == Commission.order_id)
                .where(Order.number == number)
            )
        ).all()
    for owner, active, status in found:
        assert owner != buyer, (number, owner)
        assert active, (number, owner, status)
