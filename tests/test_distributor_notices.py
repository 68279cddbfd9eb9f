"""Distributors are told what happens to them (issue 17 item 10) and start with sane terms
(item 11), through the real dispatcher and the outbox sender, in zh and en: allocations and
take-backs, top-ups and debits, a sub-distributor joining, commission made available (its day
shown in the panel first), the customers' orders digest, a withdrawal paid only once the
operator marked it paid, invites refused without a margin, quota passed down to a sub."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, update

from quanyi.core.books import commissions, settlement
from quanyi.core.distributors import digest, pending
from quanyi.core.distributors.views import NoMargin
from quanyi.core.errors import Forbidden
from quanyi.core.models import AuditRecord, DigestedOrder, DistributorInvite, Order, OutboxMessage, Withdrawal, utcnow
from quanyi.core.platform import audit
from quanyi.core.platform.scheduler import Jobs, build_scheduler
from quanyi.core.services import Core
from quanyi.core.stock.allocations import AllocationShort
from quanyi.core.stock.service import AllocationChange
from tests.fakebot import FakeTelegram
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_agent_chat import INVITE_LINK, alerted, distributor, join, open_panel, sender, settings  # noqa: F401
from tests.test_bot_chat import shop, tg  # noqa: F401  (fixtures)
from tests.test_distributors import make_distributor, refer
from tests.test_withdrawals import grant, has_button

ADMIN = 9000
ALICE, BOB = 2001, 2002


async def kinds_to(core: Core, chat_id: int) -> list[str]:
    async with core.db.read() as session:
        rows = await session.scalars(
            select(OutboxMessage.kind).where(OutboxMessage.chat_id == chat_id).order_by(OutboxMessage.id)
        )
        return list(rows)


async def operator(shop: FakeTelegram, lang: str = "en"):
    admin = shop.user(ADMIN, lang, first_name="Op")
    await admin.send("/start")  # the bot remembers the operator's language
    await admin.expect()
    return admin


# --- allocations, take-backs, top-ups and debits -------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "allocated", "taken", "topped", "debited"),
    [
        (
            "en",
            "📦 You were allocated 3 more of VIP membership. You now hold 3.",
            "↩️ The operator took back 1 of VIP membership from your allocation. You now hold 2.",
            "💰 Your balance was topped up by ¥50.00. Balance now: ¥50.00.",
            "➖ ¥20.00 was debited from your balance. Balance now: ¥30.00.\nNote: correction",
        ),
        (
            "zh",
            "📦 已为你新增分配 3 份VIP membership，现在共持有 3 份。",
            "↩️ 运营方从你的配额中收回了 1 份VIP membership，现在持有 2 份。",
            "💰 你的余额已充值 ¥50.00，当前余额：¥50.00。",
            "➖ 你的余额已扣除 ¥20.00，当前余额：¥30.00。\n备注：correction",
        ),
    ],
)
async def test_a_distributor_is_told_of_an_allocation_a_take_back_a_top_up_and_a_debit_in_its_language(
    core, shop, tmp_path, sender, lang, allocated, taken, topped, debited
):
    await product_with_stock(core, tmp_path, sku="VIP", units=5)
    alice = await join(shop, core, ALICE, "Alice", lang=lang)
    admin = await operator(shop)

    await admin.send(f"/allocate VIP {ALICE} 3")
    await admin.expect("3")
    await sender.run_once()
    assert (await alice.expect(lambda m: m.plain.startswith("📦"))).plain == allocated

    await admin.send(f"/takeback VIP {ALICE} 1")
    await admin.expect("back")
    await sender.run_once()
    assert (await alice.expect(lambda m: m.plain.startswith("↩️"))).plain == taken

    await admin.send(f"/topup {ALICE} 50")
    await admin.expect("¥50.00")
    await sender.run_once()
    assert (await alice.expect(lambda m: m.plain.startswith("💰"))).plain == topped

    await core.distributors.debit(str(ALICE), "20.00", actor="cli", note="correction")  # the CLI's path
    await sender.run_once()
    assert (await alice.expect(lambda m: m.plain.startswith("➖"))).plain == debited
    assert await kinds_to(core, ALICE) == ["distributor_allocation"] * 2 + ["distributor_balance"] * 2


async def test_a_refused_change_tells_no_one(core, shop, tmp_path, sender):
    """The message is written in the change's transaction: a take-back or a debit that is
    refused (and rolled back) leaves nothing in the outbox."""
    await product_with_stock(core, tmp_path, sku="VIP", units=5)
    await join(shop, core, ALICE, "Alice")
    with pytest.raises(Exception):  # noqa: B017  (more than it holds)
        await core.stock.allot(AllocationChange("VIP", str(ALICE), take_back=1))
    with pytest.raises(Exception):  # noqa: B017  (more than the balance)
        await core.distributors.debit(str(ALICE), "1.00", actor="cli")
    assert await kinds_to(core, ALICE) == []


# --- a sub-distributor joining -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "told"),
    [
        ("en", "👥 Bob joined as your sub-distributor (tier default)."),
        ("zh", "👥 Bob 已加入，成为你的下级代理（等级 default）。"),
    ],
)
async def test_a_parent_is_told_when_its_sub_distributor_joins(core, shop, tmp_path, sender, lang, told):
    await product_with_stock(core, tmp_path, sku="VIP", units=1)
    await core.distributors.set_cost_price("VIP", "10.00", tier="default")  # the sub starts with a margin
    alice = await join(shop, core, ALICE, "Alice", lang=lang, limit=1)
    panel = await open_panel(alice)
    await alice.press(panel, "✉️ Invite" if lang == "en" else None, data="ag:invite:0:0")
    link = INVITE_LINK.search((await alice.expect(lambda m: INVITE_LINK.search(m.plain) is not None)).plain)
    bob = shop.user(BOB, "en", first_name="Bob")
    await bob.send(f"/start {link.group(1)}")
    await bob.expect("/agent")
    await sender.run_once()
    assert (await alice.expect(lambda m: m.plain.startswith("👥"))).plain == told


# --- commission made available, its day shown first ---------------------------------------------


async def referred_sale(core: Core, buyer: int, seller_id: int, quantity: int = 1) -> Order:
    seller = await distributor(core, seller_id)
    await refer(core, buyer, seller)
    order = (await new_order(core, user_id=buyer, quantity=quantity)).order
    await core.fulfiller.submit(sandbox_event(order.number, order.amount))
    return order


@pytest.mark.parametrize("lang", ["en", "zh"])
async def test_the_panel_shows_when_pending_commission_becomes_available_and_the_settlement_tells_it(
    core, shop, tmp_path, sender, lang
):
    await product_with_stock(core, tmp_path, sku="VIP", price="15.00", units=5)
    alice = await join(shop, core, ALICE, "Alice", lang=lang)
    async with core.db.transaction() as session:
        await commissions.set_rate(session, 1, 1000)  # 10%: ¥1.50 a sale
    order = await referred_sale(core, 7001, ALICE)
    settings = core.settings
    tz = ZoneInfo(settings.timezone)
    async with core.db.read() as session:
        paid_at = await session.scalar(select(Order.paid_at).where(Order.id == order.id))
    on = pending.available_on(paid_at, tz=settings.timezone, confirm_days=settings.commission_confirm_days)
    assert on == (paid_at + timedelta(days=settings.commission_confirm_days)).astimezone(tz).date() + timedelta(days=1)

    panel = await open_panel(alice)
    expected = "  • ¥1.50 on " if lang == "en" else "  • ¥1.50 于 "
    assert expected + on.isoformat() in panel.plain
    assert ("Pending commission becomes available:" if lang == "en" else "待结算佣金的可提现日期：") in panel.plain

    # The day before: not yet. The settlement of the day before ``on`` releases it.
    early = on - timedelta(days=2)
    result = await settlement.settle_day(
        core.db,
        early,
        tz=settings.timezone,
        confirm_days=settings.commission_confirm_days,
        admin_ids=[],
        now=utcnow() + timedelta(days=30),
    )
    assert not result.already
    assert "commission_available" not in await kinds_to(core, ALICE)
    await settlement.settle_day(
        core.db,
        on - timedelta(days=1),
        tz=settings.timezone,
        confirm_days=settings.commission_confirm_days,
        admin_ids=[],
        now=utcnow() + timedelta(days=30),
    )
    await sender.run_once()
    day = (on - timedelta(days=1)).isoformat()
    told = await alice.expect(lambda m: m.plain.startswith("💰"))
    if lang == "en":
        assert told.plain == (
            f"💰 ¥1.50 of commission became available with the settlement of {day}. "
            "You can withdraw ¥1.50 now: /withdraw"
        )
    else:
        assert told.plain == f"💰 {day} 的结算使 ¥1.50 佣金变为可提现。你现在可提现 ¥1.50：/withdraw"
    panel = await open_panel(alice)
    assert "⏳" not in panel.plain


# --- the customers' orders digest ----------------------------------------------------------------


@pytest.mark.parametrize("lang", ["en", "zh"])
async def test_one_digest_tells_each_customer_order_once_and_the_next_only_the_new_ones(
    core, shop, tmp_path, sender, lang
):
    await product_with_stock(core, tmp_path, sku="VIP", price="15.00", units=10)
    alice = await join(shop, core, ALICE, "Alice", lang=lang)
    async with core.db.transaction() as session:
        await commissions.set_rate(session, 1, 1000)
    first = await referred_sale(core, 7001, ALICE, quantity=2)
    second = await referred_sale(core, 7002, ALICE)
    await new_order(core, user_id=7001)  # not paid: not told

    jobs = Jobs(core)
    assert len(await jobs.distributor_digests()) == 1
    assert await jobs.distributor_digests() == []  # nothing new: no message
    await sender.run_once()
    told = await alice.expect(lambda m: m.plain.startswith("🧾"))
    if lang == "en":
        assert told.plain.startswith(
            "🧾 Your customers' orders\n2 paid orders · ¥45.00\nYour commission on them: ¥4.50\n"
        )
        assert f"{first.number} · VIP membership × 2 · ¥30.00" in told.plain
    else:
        assert told.plain.startswith("🧾 你的客户订单\n已付款订单 2 笔 · ¥45.00\n你在这些订单上的佣金：¥4.50\n")
    assert f"{second.number} · VIP membership × 1 · ¥15.00" in told.plain

    third = await referred_sale(core, 7004, ALICE)
    assert len(await jobs.distributor_digests()) == 1
    await sender.run_once()
    again = await alice.expect(lambda m: m.plain.startswith("🧾") and third.number in m.plain)
    assert ("since" in again.plain) if lang == "en" else ("自" in again.plain)
    assert first.number not in again.plain and second.number not in again.plain
    assert "1 paid orders · ¥15.00" in again.plain or "已付款订单 1 笔 · ¥15.00" in again.plain


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_the_digest_runs_every_configured_interval_or_not_at_all(core):
    jobs = Jobs(core)
    digests = {job.id: job for job in build_scheduler(jobs).get_jobs()}["distributor_digests"]
    assert digests.trigger.interval == timedelta(minutes=core.settings.distributor_digest_minutes) == timedelta(hours=1)
    core.settings = core.settings.model_copy(update={"distributor_digest_minutes": 0})
    assert "distributor_digests" not in {job.id for job in build_scheduler(Jobs(core)).get_jobs()}


async def test_an_order_paid_late_in_a_long_transaction_is_still_told_and_its_own_bulk_buy_is_not(core, tmp_path):
    """The marker is the order, not a time: an order whose payment is dated before the last
    digest (its transaction committed after) is in the next one."""
    await product_with_stock(core, tmp_path, sku="VIP", units=5)
    agent = await make_distributor(core, ALICE)
    await refer(core, 7001, agent)
    early = await referred_sale(core, 7001, ALICE)
    assert len(await digest.send_due(core)) == 1
    late = await referred_sale(core, 7001, ALICE)
    async with core.db.transaction() as session:
        await session.execute(update(Order).where(Order.id == late.id).values(paid_at=utcnow() - timedelta(hours=1)))
    made = await digest.send_due(core)
    assert len(made) == 1
    view = await core.distributors.customer_digest(made[0])
    assert [o.number for o in view.orders] == [late.number] and early.number != late.number


async def test_two_runners_racing_tell_each_order_once(core, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", units=8)
    await make_distributor(core, ALICE)
    for buyer in range(7001, 7007):
        await referred_sale(core, buyer, ALICE)
    results = await asyncio.gather(*(digest.send_due(core) for _ in range(4)), return_exceptions=True)
    made = [d for r in results if isinstance(r, list) for d in r]
    assert len(made) >= 1
    async with core.db.read() as session:
        told = int(await session.scalar(select(func.count()).select_from(DigestedOrder)) or 0)
    assert told == 6
    assert (await kinds_to(core, ALICE)).count("distributor_digest") == len(made)
    views = [await core.distributors.customer_digest(d) for d in made]
    assert sum(v.count for v in views) == 6


# --- a withdrawal is paid only once the operator says so -----------------------------------------


@pytest.mark.parametrize("lang", ["en", "zh"])
async def test_approved_is_not_paid_and_paid_is_said_only_when_the_operator_marks_it(core, shop, sender, lang):
    alice = await join(shop, core, ALICE, "Alice", lang=lang)
    await grant(core, await distributor(core, ALICE), 10_000)
    admin = await operator(shop, lang)
    panel = await open_panel(alice)
    await alice.press(panel, data="wd:start:")
    start = await alice.expect(has_button("wd:src:"))
    await alice.press(start, data="wd:src:commission")
    await alice.expect(lambda m: "100.00" in m.plain and m is not start)
    await alice.send("30")
    await alice.expect(lambda m: "200" in m.plain)
    await alice.send("Alipay alice@example.com")
    confirm = await alice.expect(has_button("wd:ok"))
    await alice.press(confirm, data=confirm.buttons()[0]["callback_data"])
    await alice.expect(lambda m: m.kind == "edit")
    await sender.run_once()
    request = await admin.expect(has_button("wa:approve:"))
    await admin.press(request, data="wa:approve:1")
    approved = await admin.expect(lambda m: m.kind == "edit")
    await sender.run_once()
    first = await alice.expect(lambda m: "#1" in m.plain and m.plain.startswith("✅"))
    if lang == "en":
        assert "will be paid to" in first.plain and "is paid" not in first.plain
    else:
        assert "将支付到" in first.plain and "已付款" not in first.plain.split("。")[0]

    assert [b["text"] for b in approved.buttons()] == ["💸 Mark paid #1" if lang == "en" else "💸 标记已付款 #1"]
    # Lost the message? /withdrawals lists what is approved and not yet paid, with the same button.
    await admin.send("/withdrawals")
    listed = await admin.expect(has_button("wa:paid:1"))
    assert ("Approved, to be paid" if lang == "en" else "已批准，待付款") in listed.plain
    await admin.press(listed, data="wa:paid:1")
    marked = await admin.expect(lambda m: "#1" in m.plain and m.buttons() == [])
    assert ("marked paid" in marked.plain) if lang == "en" else ("已标记为已付款" in marked.plain)
    await admin.send("/withdrawals")
    assert (await admin.expect()).buttons() == []
    await sender.run_once()
    paid = await alice.expect(lambda m: m.plain.startswith("✅") and m is not first and "#1" in m.plain)
    if lang == "en":
        assert (
            paid.plain == "✅ Withdrawal #1 is paid: ¥30.00 from your commission was sent to Alipay alice@example.com."
        )
    else:
        assert paid.plain == "✅ 提现 #1 已付款：佣金中的 ¥30.00 已转至 Alipay alice@example.com。"

    # A second tap (or another operator) tells nobody twice.
    answer = await admin.press(approved, data="wa:paid:1")
    assert alerted(await shop.callback_answer(answer))
    assert (await kinds_to(core, ALICE)).count("withdrawal_paid") == 1
    async with core.db.read() as session:
        row = await session.scalar(select(Withdrawal))
        trail = list(await session.scalars(select(AuditRecord.action).where(AuditRecord.action == "withdrawal paid")))
    assert row.paid_at is not None and row.paid_by == f"operator:{ADMIN}" and trail == ["withdrawal paid"]


async def test_only_an_approved_withdrawal_is_marked_paid_and_once_under_a_race(core):
    agent = await make_distributor(core, ALICE)
    await grant(core, agent, 10_000)
    requested = await core.books.request_withdrawal(
        user_id=ALICE, source="commission", amount=1_000, payout_account="acct", request_key=None
    )
    with pytest.raises(Exception) as refused:  # noqa: PT011
        await core.books.mark_withdrawal_paid(requested.id, actor="cli")
    assert refused.value.details["status"] == "requested"
    await core.books.approve_withdrawal(requested.id, actor="cli")
    results = await asyncio.gather(
        *(core.books.mark_withdrawal_paid(requested.id, actor=f"operator:{n}") for n in range(5)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert {r.details["status"] for r in results if isinstance(r, Exception)} == {"paid"}
    assert (await kinds_to(core, ALICE)).count("withdrawal_paid") == 1


# --- invites need a margin ------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["en", "zh"])
async def test_an_invite_with_a_tier_without_cost_prices_is_refused_until_the_operator_confirms(
    core, shop, tmp_path, lang
):
    await product_with_stock(core, tmp_path, sku="VIP", units=1)
    admin = await operator(shop, lang)
    await admin.send("/invite gold 2")
    warned = await admin.expect("gold")
    if lang == "en":
        assert warned.plain.startswith("⚠️ Tier gold has no cost prices") and "No invite was made." in warned.plain
    else:
        assert warned.plain.startswith("⚠️ 等级 gold 没有设置成本价") and "未生成邀请" in warned.plain
    assert INVITE_LINK.search(warned.plain) is None
    async with core.db.read() as session:
        assert int(await session.scalar(select(func.count()).select_from(DistributorInvite)) or 0) == 0

    await admin.press(warned, data=warned.buttons()[1]["callback_data"])  # cancel
    dropped = await admin.expect(lambda m: m.kind == "edit")
    assert dropped.plain == ("No invite was made." if lang == "en" else "未生成邀请。")

    await admin.send("/invite gold 2")
    warned = await admin.expect("gold")
    await admin.press(warned, data=warned.buttons()[0]["callback_data"])  # invite anyway
    made = await admin.expect(lambda m: m.kind == "edit" and INVITE_LINK.search(m.plain) is not None)
    assert "gold" in made.plain

    # With a cost price for the tier there is no question.
    await core.distributors.set_cost_price("VIP", "10.00", tier="silver")
    await admin.send("/invite silver")
    assert INVITE_LINK.search((await admin.expect(lambda m: INVITE_LINK.search(m.plain) is not None)).plain)


@pytest.mark.parametrize(
    ("lang", "refused"),
    [
        ("en", "You can't invite yet: your tier default has no cost prices"),
        ("zh", "暂时无法邀请：你的等级 default 没有设置成本价"),
    ],
)
async def test_a_distributor_whose_tier_has_no_cost_prices_cannot_invite_a_sub_without_a_margin(
    core, shop, lang, refused
):
    alice = await join(shop, core, ALICE, "Alice", lang=lang, limit=3)
    await alice.press(await open_panel(alice), data="ag:invite:0:0")
    answer = await alice.expect(lambda m: "default" in m.plain)
    assert answer.plain.startswith(refused) and INVITE_LINK.search(answer.plain) is None
    async with core.db.read() as session:
        assert int(await session.scalar(select(func.count()).select_from(DistributorInvite)) or 0) == 1  # its own


async def test_the_core_refuses_an_invite_without_a_margin_unless_allowed(core, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", units=1)
    with pytest.raises(NoMargin) as refused:
        await core.distributors.create_invite(created_by="cli", tier="Gold")
    assert refused.value.details["tier"] == "gold" and "--allow-no-margin" in refused.value.message
    invite = await core.distributors.create_invite(created_by="cli", tier="gold", allow_no_margin=True)
    assert invite.tier == "gold"


# --- quota passed down to a sub-distributor -------------------------------------------------------


async def family(core: Core, shop: FakeTelegram, tmp_path, *, lang: str = "en", units: int = 5):
    """Alice holds ``units`` of VIP; Bob is her sub-distributor."""
    await product_with_stock(core, tmp_path, sku="VIP", units=10)
    alice = await join(shop, core, ALICE, "Alice", lang=lang, limit=1)
    await make_distributor(core, BOB, parent=ALICE, language=lang)
    await core.stock.allot(AllocationChange("VIP", str(ALICE), units=units))
    return alice


@pytest.mark.parametrize("lang", ["en", "zh"])
async def test_a_parent_passes_part_of_its_quota_to_its_sub_in_chat_and_the_sub_is_told(
    core, shop, tmp_path, sender, lang
):
    alice = await family(core, shop, tmp_path, lang=lang)
    bob = shop.user(BOB, lang, first_name="Bob")
    panel = await open_panel(alice)
    await alice.press(panel, data="ag:subs:0:0")
    subs = await alice.expect(has_button("pq:subs"))
    await alice.press(subs, data="pq:subs:0:0")
    pick_sub = await alice.expect(has_button("pq:sub:"))
    await alice.press(pick_sub, data=pick_sub.buttons()[0]["callback_data"])
    pick_product = await alice.expect(has_button("pq:product:"))
    assert ("VIP membership · 5 left" if lang == "en" else "VIP membership · 剩余 5 份") in str(pick_product.buttons())
    await alice.press(pick_product, data=pick_product.buttons()[0]["callback_data"])
    await alice.expect("5")
    await alice.send("6")  # more than it holds: refused, the form stays open
    refused = await alice.expect()
    assert refused.plain == (
        "Refused: you hold only 5 of VIP membership. Type a smaller number, or /cancel."
        if lang == "en"
        else "已拒绝：你只持有 5 份VIP membership。请输入更小的数量，或 /cancel 取消。"
    )
    await alice.send("2")
    done = await alice.expect()
    name = f"Agent {BOB}"
    assert done.plain == (
        f"✅ Passed 2 of VIP membership to {name}. You hold 3; {name} holds 2."
        if lang == "en"
        else f"✅ 已分给 {name} 2 份VIP membership。你持有 3 份；{name} 持有 2 份。"
    )
    await sender.run_once()
    told = await bob.expect(lambda m: m.plain.startswith("📥"))
    assert told.plain == (
        "📥 Alice passed you 2 of VIP membership from their quota. You now hold 2."
        if lang == "en"
        else "📥 Alice 从其配额中分给你 2 份VIP membership，你现在持有 2 份。"
    )
    async with core.db.read() as session:
        trail = list(
            await session.execute(
                select(AuditRecord.actor, AuditRecord.action, AuditRecord.object_id).where(
                    AuditRecord.action.in_(["pass on", "passed in"])
                )
            )
        )
    assert [(a, b) for a, b, _ in trail] == [(f"distributor:{ALICE}", "pass on"), (f"distributor:{ALICE}", "passed in")]


async def test_quota_goes_only_to_ones_own_sub_and_never_past_what_is_held_under_a_race(core, shop, tmp_path):
    await family(core, shop, tmp_path, units=4)
    await make_distributor(core, 2003)  # not Alice's
    with pytest.raises(Forbidden):
        await core.distributors.pass_quota(ALICE, 2003, "VIP", 1)
    with pytest.raises(Forbidden):
        await core.distributors.pass_quota(BOB, ALICE, "VIP", 1)  # not upwards either

    async def pass_three() -> object:
        with audit.acting(f"distributor:{ALICE}", "chat"):
            try:
                return await core.distributors.pass_quota(ALICE, BOB, "VIP", 3)
            except AllocationShort as exc:
                return exc

    results = await asyncio.gather(*(pass_three() for _ in range(4)))
    assert sum(not isinstance(r, AllocationShort) for r in results) == 1
    assert {r.details["available"] for r in results if isinstance(r, AllocationShort)} == {1}
    pools = await core.stock.pools("VIP")
    held = {a.channel: a.remaining for a in pools[0].level.allocations}
    assert held == {f"agent-{ALICE}": 1, f"agent-{BOB}": 3}
    assert (await kinds_to(core, BOB)).count("distributor_allocation") == 1
