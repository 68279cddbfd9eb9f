"""Operator chat for stock pools, allocations, channels and distributors, and low-stock alerts
in chat: the real aiogram client against the fake Bot API server."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select

from quanyi.bot.outbox_sender import OutboxSender
from quanyi.bot.runner import build_bot
from quanyi.core.distributors import accounts as distributors
from quanyi.core.models import (
    Allocation,
    BalanceEntry,
    ChannelPrice,
    Distributor,
    DistributorInvite,
    OutboxMessage,
    Product,
)
from quanyi.core.platform.config import Settings
from quanyi.core.platform.scheduler import Jobs
from quanyi.core.sales.orders import Buyer, remember_user
from quanyi.core.services import Core
from quanyi.core.stock import allocations as channels
from quanyi.i18n import raw_t
from tests.conftest import make_settings
from tests.fakebot import BotMessage, FakeUser
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_bot_chat import shop, tg  # noqa: F401  (fixtures)

ADMIN = 9000  # make_settings puts this id in QUANYI_ADMIN_IDS
AGENT = 555
LINK = re.compile(r"https://t\.me/quanyi_test_bot\?start=inv_([A-Za-z0-9]+)")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Several alerts go to one operator chat in a row; per-chat pacing would only slow the test.
    return make_settings(tmp_path, outbox_per_chat_interval=0.0)


async def pool(core: Core, sku: str = "VIP") -> channels.PoolLevel:
    async with core.db.read() as session:
        return (await channels.pool_levels(session, sku))[0]


async def add_partner(core: Core, code: str = "partner1", name: str = "Partner One") -> None:
    async with core.db.transaction() as session:
        await channels.add_channel(session, code, name)


async def invite_agent(core: Core, *, user_id: int = AGENT, language: str = "en") -> Distributor:
    async with core.db.transaction() as session:
        await remember_user(session, Buyer(user_id, user_id, language, "agent_alice"))
        invite = await distributors.create_invite(session, created_by="test")
        return await distributors.accept_invite(session, invite.token, user_id=user_id, name="Alice", currency="CNY")


async def open_detail(admin: FakeUser, product_label: str, lang: str) -> BotMessage:
    await admin.send("/admin")
    menu = await admin.expect(lambda m: bool(m.buttons()))
    await admin.press(menu, raw_t(lang, "ops.btn_stock"))
    overview = await admin.expect(lambda m: m.kind == "edit")
    await admin.press(overview, product_label)
    return await admin.expect(lambda m: m.kind == "edit" and m.message_id == overview.message_id)


async def test_an_operator_allocates_by_button_and_by_command_and_sees_the_pool_levels(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, units=10)
    await add_partner(core)
    admin = shop.user(ADMIN, "zh")

    await admin.send("/admin")
    menu = await admin.expect(lambda m: bool(m.buttons()))
    assert "/order" in menu.plain and "/review" in menu.plain  # the existing operator commands stay
    assert [b["text"] for b in menu.buttons()] == [
        "📦 库存与配额",
        "🔗 渠道",
        "🎟 邀请代理",
        "👥 代理",
        "🛍 商品",
        "🎟 优惠券与促销",
        "📊 销售报表",
        "🛡 风控",
    ]
    await admin.press(menu, "📦 库存与配额")
    overview = await admin.expect(lambda m: m.kind == "edit")
    assert "未售出 10 · 锁定 0 · 已售 0 · 配额剩余 0 · 未分配 10 · 预警 关闭" in overview.plain

    await admin.press(overview, "📦 VIP membership")
    detail = await admin.expect(lambda m: m.kind == "edit" and m.message_id == overview.message_id)
    assert "尚未分配" in detail.plain
    await admin.press(detail, "➕ partner1")
    await admin.expect("分配多少件")
    for bad in ("abc", "0", "-2", "2.5", "²"):
        await admin.send(bad)
        assert (await admin.expect()).plain == "数量无效：请输入正整数，例如 5。", bad
    await admin.send("4")
    done = await admin.expect("已给 partner1 分配 4 件 VIP")
    level = await pool(core)
    assert (level.available, level.allocated_remaining, level.unallocated) == (10, 4, 6)
    assert "未售出 10 · 锁定 0 · 已售 0 · 配额剩余 4 · 未分配 6" in done.plain
    assert "partner1（Partner One）配额：已分配 4 · 已售 0 · 锁定 0 · 剩余 4" in done.plain
    # The form is done: the next number is no longer read as units.
    await admin.send("3")
    assert "没看懂" in (await admin.expect()).plain

    await admin.send("/allocate VIP partner1 2")
    again = await admin.expect("已给 partner1 分配 2 件 VIP")
    level = await pool(core)
    assert [(a.channel, a.mode, a.allocated, a.remaining) for a in level.allocations] == [("partner1", "quota", 6, 6)]
    assert level.unallocated == 4
    assert "配额剩余 6 · 未分配 4" in again.plain and "已分配 6 · 已售 0 · 锁定 0 · 剩余 6" in again.plain

    # Shared pool: the quota's remaining units go back to the pool, the channel sells uncapped.
    await admin.press(again, "🔓 共享 partner1")
    shared = await admin.expect("共享库存销售")
    level = await pool(core)
    assert [(a.channel, a.mode) for a in level.allocations] == [("partner1", "shared")]
    assert level.unallocated == 10
    assert "partner1（Partner One）共享库存" in shared.plain


async def test_refusals_are_explained_and_change_nothing(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, units=5)
    await add_partner(core)
    async with core.db.transaction() as session:
        await channels.allocate(session, "VIP", "partner1", 3)
    before = await pool(core)
    admin = shop.user(ADMIN, "en")

    detail = await open_detail(admin, "📦 VIP membership", "en")
    await admin.press(detail, "↩️ Take back partner1")
    await admin.expect("take back from")
    await admin.send("5")
    refused = await admin.expect()
    assert refused.plain == (
        "Cannot take back: partner1 has only 3 units of VIP left to take back (reserved or sold units stay). "
        "Nothing changed."
    )
    for command, answer in [
        ("/takeback VIP partner1 4", "partner1 has only 3 units of VIP left"),
        ("/allocate VIP partner1 3", "only 2 units of VIP are unallocated"),
        ("/allocate VIP nope 1", "No channel or distributor nope."),
        ("/allocate NOPE partner1 1", "No product NOPE."),
        ("/takeback VIP bot 1", "bot holds no quota of VIP."),
        ("/allocate VIP partner1 x", "Not a valid number"),
        ("/allocate VIP partner1 99999999999999999999", "Not a valid number"),
        ("/allocate VIP partner1", "Usage: /allocate SKU TO UNITS"),
        ("/threshold VIP partner1 -1", "Not a valid number"),
        ("/threshold NOPE 1", "No product NOPE."),
    ]:
        await admin.send(command)
        assert answer in (await admin.expect()).plain, command
    assert await pool(core) == before

    await admin.send("/takeback VIP partner1 2")
    await admin.expect("Took 2 × VIP back from partner1")
    await admin.send("/threshold VIP partner1 1")
    await admin.expect("The alert of VIP on partner1 is now 1.")
    await admin.send("/threshold VIP 2")
    await admin.expect("The pool alert of VIP is now 2.")
    level = await pool(core)
    assert (level.threshold, level.allocations[0].threshold, level.allocations[0].remaining) == (2, 1, 1)


async def test_an_invite_link_is_usable_once_and_a_top_up_shows_in_the_list(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", units=1)
    async with core.db.transaction() as session:  # the tiers have a margin: the invites are made at once
        await distributors.set_cost_price(session, "VIP", 1000, tier="gold")
        await distributors.set_cost_price(session, "VIP", 1200, tier="default")
    admin = shop.user(ADMIN, "en")
    await admin.send("/invite gold 2")
    message = await admin.expect("invite link")
    assert "Tier gold" in message.plain and "may invite 2" in message.plain and "valid until" in message.plain
    token = LINK.search(message.plain).group(1)
    async with core.db.transaction() as session:
        await remember_user(session, Buyer(AGENT, AGENT, "en", "agent_alice"))
        agent = await distributors.accept_invite(session, token, user_id=AGENT, name="Alice", currency="CNY")
    assert (agent.tier, agent.invite_limit, agent.depth, agent.parent_id) == ("gold", 2, 1, None)
    async with core.db.read() as session:
        invite = await session.scalar(select(DistributorInvite).where(DistributorInvite.token == token))
    assert invite.created_by == f"operator:{ADMIN}"
    with pytest.raises(distributors.InviteInvalid):
        async with core.db.transaction() as session:
            await distributors.accept_invite(session, token, user_id=556, name="Bob", currency="CNY")

    await admin.send("/admin")
    menu = await admin.expect(lambda m: bool(m.buttons()))
    await admin.press(menu, "🎟 Invite distributor")
    pressed = await admin.expect("invite link")
    assert "Tier default" in pressed.plain and LINK.search(pressed.plain).group(1) != token

    for command, answer in [
        ("/topup 555 abc", "Not a valid amount: abc."),
        ("/topup 555 0", "Not a valid amount"),
        ("/topup 777 10", "No channel or distributor 777."),
        ("/topup @nobody 10", "No channel or distributor @nobody."),
        ("/invite gold -1", "Usage: /invite"),
    ]:
        await admin.send(command)
        assert answer in (await admin.expect()).plain, command
    await admin.send("/topup @agent_alice 100.50")
    await admin.expect("Topped up Alice with ¥100.50; balance now ¥100.50.")
    async with core.db.read() as session:
        entries = (await session.execute(select(BalanceEntry.amount, BalanceEntry.reason, BalanceEntry.actor))).all()
    assert entries == [(10050, "top_up", f"operator:{ADMIN}")]

    await admin.press(menu, "👥 Distributors")
    listing = await admin.expect(lambda m: m.kind == "edit")
    assert "1 in all, 1 top-level" in listing.plain
    assert "Alice · @agent_alice · tier gold · parent operator · balance ¥100.50 · subs 0/2" in listing.plain


async def test_channels_are_listed_added_and_priced_never_under_the_floor(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, units=1)
    async with core.db.transaction() as session:
        (await session.scalar(select(Product).where(Product.sku == "VIP"))).floor_price = 1000
    admin = shop.user(ADMIN, "zh")

    await admin.send("/channel_add Partner1 合作方 一号")
    await admin.expect("已新增合作渠道 partner1（合作方 一号）")
    await admin.send("/channel_add partner1 again")
    assert (await admin.expect()).plain == "渠道 partner1 已存在。未做任何更改。"
    await admin.send("/channel_add Bad!Code x")
    assert "用法：/channel_add" in (await admin.expect()).plain

    await admin.send("/channel_price partner1 VIP 9.99")
    assert (await admin.expect()).plain == "已拒绝：价格低于底价 ¥10.00。未做任何更改。"
    await admin.send("/channel_price partner1 VIP 9.999")
    assert "金额无效" in (await admin.expect()).plain
    async with core.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(ChannelPrice)) == 0
    await admin.send("/channel_price partner1 VIP 12.00")
    await admin.expect("partner1 的 VIP 价格设为 ¥12.00")
    async with core.db.read() as session:
        assert (await session.execute(select(ChannelPrice.price))).scalars().all() == [1200]

    await admin.send("/admin")
    menu = await admin.expect(lambda m: bool(m.buttons()))
    await admin.press(menu, "🔗 渠道")
    listing = await admin.expect(lambda m: m.kind == "edit")
    assert "bot · 机器人 · Telegram bot" in listing.plain
    assert "partner1 · 合作方 · 合作方 一号" in listing.plain
    await admin.press(listing, "« 返回")
    back = await admin.expect(lambda m: m.kind == "edit")
    assert back.button("🔗 渠道")


async def test_non_operators_get_no_operator_data_and_change_nothing(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, units=5)
    await add_partner(core)
    agent = await invite_agent(core)
    buyer = shop.user(1001, "zh")
    for command in ("/admin", "/stock", "/allocate VIP partner1 1", "/invite", "/topup 555 100", "/threshold VIP 1"):
        await buyer.send(command)
        reply = await buyer.expect()
        assert "没看懂" in reply.plain, command
        assert "partner1" not in reply.plain and "t.me" not in reply.plain

    admin = shop.user(ADMIN, "zh")
    await admin.send("/admin")
    menu = await admin.expect(lambda m: bool(m.buttons()))
    detail = await open_detail(admin, "📦 VIP membership", "zh")
    # The buyer forges the operator's buttons (callback data is easy to guess).
    for message, label in [
        (menu, "🎟 邀请代理"),
        (menu, "👥 代理"),
        (menu, "📦 库存与配额"),
        (detail, "➕ partner1"),
        (detail, "🔓 共享 partner1"),
    ]:
        pressed = await buyer.press(message, label)
        assert (await shop.callback_answer(pressed))["text"] == raw_t("zh", "error_generic"), label
    await buyer.send("3")  # no units form was opened for the buyer
    assert "没看懂" in (await buyer.expect()).plain
    await asyncio.sleep(0.1)
    assert [m for m in shop.messages_to(buyer.id) if "partner1" in m.plain or "t.me" in m.plain] == []

    async with core.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Allocation)) == 0
        assert await session.scalar(select(func.count()).select_from(DistributorInvite)) == 1  # the test's own
        assert await session.scalar(select(Distributor.balance).where(Distributor.id == agent.id)) == 0


async def test_a_low_stock_alert_reaches_the_operator_and_the_distributor_once(core, tg, tmp_path):
    await product_with_stock(core, tmp_path, units=10)
    agent = await invite_agent(core, language="en")
    async with core.db.transaction() as session:
        await remember_user(session, Buyer(ADMIN, ADMIN, "zh"))
        await channels.allocate(session, "VIP", str(AGENT), 4)
        await channels.set_threshold(session, "VIP", 2, holder=str(AGENT))
        await channels.set_threshold(session, "VIP", 5)
        await remember_user(session, Buyer(1001, 1001, "zh"))
        await distributors.record_referral(session, 1001, agent.referral_code)
    jobs = Jobs(core)
    assert await jobs.stock_alerts() == []  # nothing is low yet

    bot = build_bot(core.settings.model_copy(update={"bot_token": tg.token, "telegram_api_base": tg.base}))
    sender = OutboxSender(core, bot, poll_interval=0.05)
    running = asyncio.create_task(sender.run())
    try:
        # The distributor's customer buys 2 from its allocation: 2 left, at its threshold.
        placed = await new_order(core, quantity=2, user_id=1001)
        await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))
        raised = await jobs.stock_alerts()
        assert [(a.sku, a.channel, a.left, a.threshold) for a in raised] == [("VIP", f"agent-{AGENT}", 2, 2)]
        to_admin = await tg.wait_for(lambda m: "库存预警" in m.plain, chat_id=ADMIN)
        assert to_admin.plain == "⚠️ 库存预警：VIP membership（VIP）在渠道 agent-555 的配额仅剩 2 件（预警值 2）。"
        to_agent = await tg.wait_for(lambda m: "Low stock" in m.plain, chat_id=AGENT)
        assert to_agent.plain == (
            "⚠️ Low stock: VIP membership (VIP): only 2 left in the allocation of channel agent-555 (alert at 2)."
        )

        assert await jobs.stock_alerts() == []  # a second run: nothing more
        # Someone else buys 3 from the bot's shared pool: the pool drops to its threshold.
        other = await new_order(core, quantity=3, user_id=2002)
        await core.fulfiller.submit(sandbox_event(other.order.number, other.order.amount))
        raised = await jobs.stock_alerts()
        assert [(a.channel, a.left) for a in raised] == [(None, 5)]
        await tg.wait_for(lambda m: "总库存仅剩 5 件（预警值 5）" in m.plain, chat_id=ADMIN)
        assert await jobs.stock_alerts() == []

        async def unsent() -> int:
            async with core.db.read() as session:
                query = select(func.count()).where(OutboxMessage.status != "sent")
                return int(await session.scalar(query) or 0)

        await tg.wait_until(lambda: len(tg.messages_to(2002)) >= 1)  # the last delivery went out too
        for _ in range(50):
            if await unsent() == 0:
                break
            await asyncio.sleep(0.05)
        assert await unsent() == 0
    finally:
        sender.stop()
        await asyncio.wait_for(running, 5)
        await bot.session.close()

    async with core.db.read() as session:
        alerts = (
            await session.execute(
                select(OutboxMessage.chat_id, OutboxMessage.status).where(OutboxMessage.kind == "stock_low")
            )
        ).all()
    assert sorted(alerts) == [(AGENT, "sent"), (ADMIN, "sent"), (ADMIN, "sent")]
    assert len([m for m in tg.messages_to(ADMIN) if "库存预警" in m.plain]) == 2
    assert len([m for m in tg.messages_to(AGENT) if "Low stock" in m.plain]) == 1
    assert [c.description for c in tg.calls if c.status != 200] == []
