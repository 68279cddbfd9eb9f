"""Risk control in chat: the buyer's check question, holds approved or rejected by an operator,
refusals, and the operators' rules and blocklist — the real aiogram client against the fake Bot API."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from quanyi.bot.outbox_sender import OutboxSender
from quanyi.bot.runner import build_bot
from quanyi.core.models import BlockEntry, Order, RiskDecision, RiskRule
from quanyi.core.platform.config import Settings
from quanyi.core.risk import rules as risk
from quanyi.core.services import Core
from quanyi.i18n import raw_t
from tests.conftest import make_settings
from tests.fakebot import BotMessage, FakeTelegram, FakeUser
from tests.helpers import product_with_stock
from tests.test_agent_chat import alerted, forge
from tests.test_bot_chat import NUMBER, choose, open_product, shop, stock_of, tg  # noqa: F401  (fixtures)

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])  # the core's risk tests run on both databases

ADMIN = 9000  # make_settings puts this id in QUANYI_ADMIN_IDS
BUYER = 1001
QUESTION = re.compile(r"(\d+) \+ (\d+) = \?")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, outbox_per_chat_interval=0.0)


@pytest.fixture
async def sender(core: Core, tg: FakeTelegram) -> AsyncIterator[OutboxSender]:
    bot = build_bot(core.settings.model_copy(update={"bot_token": tg.token, "telegram_api_base": tg.base}))
    yield OutboxSender(core, bot, poll_interval=0.05)
    await bot.session.close()


async def add_rule(core: Core, name: str, metric: str, threshold: int, action: str, window: int | None = None) -> None:
    async with core.db.transaction() as session:
        await risk.add_rule(
            session, name=name, metric=metric, threshold=threshold, action=action, window_seconds=window
        )


async def order_two(user: FakeUser, lang: str = "zh") -> BotMessage:
    """Open VIP, choose 2, pay by sandbox: the bot's answer (a risk message, or the order screen)."""
    card = await open_product(user, "VIP membership")
    methods = await choose(user, card, "2")
    await user.press(methods, raw_t(lang, "method_sandbox"))
    return await user.expect(lambda m: m.kind == "send" or NUMBER.search(m.plain) is not None)


async def orders(core: Core) -> int:
    async with core.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(Order)) or 0)


async def decision_statuses(core: Core) -> list[tuple[str, str]]:
    async with core.db.read() as session:
        rows = await session.execute(select(RiskDecision.action, RiskDecision.status).order_by(RiskDecision.id))
        return [(a, s) for a, s in rows.all()]


def answer_of(message: BotMessage) -> int:
    match = QUESTION.search(message.plain)
    assert match, message.plain
    return int(match.group(1)) + int(match.group(2))


def has_button(prefix: str):
    return lambda m: any(b.get("callback_data", "").startswith(prefix) for b in m.buttons())


async def test_a_challenged_buyer_answers_wrong_then_right_and_the_same_order_goes_through_once(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, units=6)
    await add_rule(core, "every-order", "orders_per_user", 0, "challenge", 60)
    buyer = shop.user(BUYER, "zh")

    asked = await order_two(buyer)
    assert "下单前需要一个简单验证" in asked.plain
    right = answer_of(asked)
    assert await orders(core) == 0 and await stock_of(core, "reserved") == 0  # nothing held while asking

    await buyer.send(str(right + 1))
    assert (await buyer.expect()).plain == "答案不对。还可以尝试 2 次，请重新输入数字。"
    await buyer.send("abc")
    assert (await buyer.expect()).plain == "答案不对。还可以尝试 1 次，请重新输入数字。"
    await buyer.send(f" {right} ")
    created = await buyer.expect(lambda m: NUMBER.search(m.plain) is not None)
    assert "¥30.00" in created.plain  # 2 × ¥15.00
    assert await orders(core) == 1 and await stock_of(core, "reserved") == 2
    assert await decision_statuses(core) == [("challenge", "used")]

    # The pass was spent: the next order asks again, and three wrong answers refuse it.
    asked = await order_two(buyer)
    wrong = str(answer_of(asked) + 1)
    for _ in range(2):
        await buyer.send(wrong)
        await buyer.expect("答案不对")
    await buyer.send(wrong)
    assert (await buyer.expect()).plain == "❌ 答错次数过多，本次下单已被拒绝，未锁定任何库存。"
    assert await orders(core) == 1 and await stock_of(core, "reserved") == 2
    assert await decision_statuses(core) == [("challenge", "used"), ("challenge", "rejected")]
    # The form is closed: a number typed now is no answer.
    await buyer.send(wrong)
    assert "没看懂" in (await buyer.expect()).plain


async def test_a_hold_approved_by_an_operators_tap_lets_the_buyer_order(core, shop, sender, tmp_path):
    await product_with_stock(core, tmp_path, units=6)
    await add_rule(core, "big-orders", "quantity", 1, "hold")
    operator = shop.user(ADMIN, "en")
    await operator.send("/start")  # the bot remembers the operator's language
    await operator.expect()
    buyer = shop.user(BUYER, "en")

    held = await order_two(buyer, "en")
    assert held.plain == "⏳ Your order needs a quick check by the shop; you'll be told here. Nothing was reserved yet."
    assert await orders(core) == 0 and await stock_of(core, "reserved") == 0

    await sender.run_once()
    hold = await operator.expect(has_button("rk:approve:"))
    assert "Order held for review #1" in hold.plain
    assert f"Buyer: {BUYER}" in hold.plain and "VIP × 2" in hold.plain and "Amount: ¥30.00" in hold.plain
    assert "Why: the quantity is over the limit" in hold.plain

    await operator.press(hold, "✅ Approve")
    approved = await operator.expect(lambda m: m.kind == "edit")
    assert approved.plain == f"✅ Hold #1 approved; the buyer {BUYER} was told to order again."
    assert approved.buttons() == []
    await sender.run_once()
    told = await buyer.expect("approved")
    assert told.plain == "✅ The shop approved your order of 2 × VIP. Order again now with /start; it will go through."

    # A second tap on the decided hold changes nothing and says so.
    assert alerted(await shop.callback_answer(await operator.press(hold, "✅ Approve")))

    created = await order_two(buyer, "en")
    assert NUMBER.search(created.plain) and "¥30.00" in created.plain
    assert await orders(core) == 1 and await stock_of(core, "reserved") == 2
    assert await decision_statuses(core) == [("hold", "used")]


async def test_a_hold_rejected_with_a_typed_reason_tells_the_buyer(core, shop, sender, tmp_path):
    await product_with_stock(core, tmp_path, units=6)
    await add_rule(core, "big-orders", "quantity", 1, "hold")
    operator = shop.user(ADMIN, "zh")
    buyer = shop.user(BUYER, "zh")

    held = await order_two(buyer)
    assert "需要店铺快速审核" in held.plain
    await sender.run_once()
    hold = await operator.expect(has_button("rk:reject:"))
    await operator.press(hold, "❌ 拒绝")
    await operator.expect("拒绝审核 #1")
    await operator.send("   ")
    await operator.expect("需要 1-255 个字符的原因")
    assert await decision_statuses(core) == [("hold", "open")]
    await operator.send("no <b>resellers</b>")
    assert (await operator.expect()).plain == f"❌ 审核 #1 已拒绝，已通知买家 {BUYER}。"
    assert await decision_statuses(core) == [("hold", "rejected")]

    await sender.run_once()
    told = await buyer.expect("拒绝")
    assert told.plain == "❌ 店铺拒绝了您的订单（VIP × 2）：no <b>resellers</b>"
    # Rejected is no pass: the same order is held again.
    again = await order_two(buyer)
    assert "需要店铺快速审核" in again.plain
    assert await orders(core) == 0


async def test_a_blocked_buyer_is_refused_with_the_reason(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, units=6)
    async with core.db.transaction() as session:
        await risk.block(session, "user", str(BUYER), reason="chargebacks <3>", actor="test")
    buyer = shop.user(BUYER, "en")

    refused = await order_two(buyer, "en")
    assert refused.plain == "⛔ This order can't be placed: chargebacks <3>"
    assert await orders(core) == 0 and await stock_of(core, "reserved") == 0
    assert await decision_statuses(core) == [("block", "rejected")]

    # A rule's block names the limit in the buyer's language, not the rule.
    async with core.db.transaction() as session:
        await risk.unblock(session, "user", str(BUYER))
    await add_rule(core, "unpaid-orders", "unpaid_per_user", 0, "block")
    zh_buyer = shop.user(1002, "zh")
    refused = await order_two(zh_buyer)
    assert refused.plain == "⛔ 无法下单：未支付订单过多（最多 0 个），请先在 /orders 中支付或取消一个。"
    assert "unpaid-orders" not in refused.plain
    assert await orders(core) == 0


async def test_an_operator_edits_rules_and_the_blocklist_in_chat(core, shop, tmp_path):
    await add_rule(core, "burst", "orders_per_user", 5, "challenge", 60)
    await add_rule(core, "amount-per-day", "amount_per_user", 500_000, "hold", 86400)
    operator = shop.user(ADMIN, "en")

    await operator.send("/admin")
    menu = await operator.expect(lambda m: bool(m.buttons()))
    await operator.press(menu, "🛡 Risk")
    view = await operator.expect(lambda m: m.kind == "edit")
    assert "🟢 burst: orders_per_user per 1m > 5 → check" in view.plain
    assert "🟢 amount-per-day: amount_per_user per 1d > 5000.00 → hold" in view.plain

    await operator.press(view, "🟢 burst")
    switched = await operator.expect(lambda m: m.kind == "edit")
    assert "⚪ burst" in switched.plain
    async with core.db.read() as session:
        rule = await session.scalar(select(RiskRule).where(RiskRule.name == "burst"))
        assert rule is not None and not rule.active

    await operator.send("/risk_rule burst threshold=3 action=hold window=1h")
    saved = await operator.expect("Rule saved")
    assert "⚪ burst: orders_per_user per 1h > 3 → hold" in saved.plain
    await operator.send("/risk_rule amount-per-day threshold=1234.50")
    assert "amount_per_user per 1d > 1234.50 → hold" in (await operator.expect("Rule saved")).plain
    for bad in ("/risk_rule burst action=maybe", "/risk_rule burst threshold=-1", "/risk_rule burst window=0"):
        await operator.send(bad)
        assert (await operator.expect()).plain.startswith("Not changed:"), bad
    await operator.send("/risk_rule nope threshold=1")
    assert (await operator.expect()).plain == "There is no rule named nope."
    async with core.db.read() as session:
        rules = {r.name: (r.threshold, r.action, r.window_seconds) for r in await risk.list_rules(session)}
    assert rules == {"burst": (3, "hold", 3600), "amount-per-day": (123_450, "hold", 86400)}

    await operator.send("/block user 1001 card testing <bulk>")
    assert (await operator.expect()).plain == "⛔ Blocked user 1001: card testing <bulk>"
    await operator.send("/block ip 10.0.0.1")
    assert (await operator.expect()).plain.startswith("Usage:")
    await operator.send("/block user alice spam")
    assert (await operator.expect()).plain.startswith("Not changed:")
    await operator.send("/blocks")
    listed = await operator.expect("Blocklist")
    assert "user 1001 · card testing <bulk> · operator:9000" in listed.plain
    async with core.db.read() as session:
        assert [(b.kind, b.value) for b in await risk.list_blocks(session)] == [("user", "1001")]
    await operator.send("/unblock user 1001")
    assert (await operator.expect()).plain == "✅ Unblocked user 1001."
    await operator.send("/unblock user 1001")
    assert (await operator.expect()).plain == "user 1001 was not blocked; nothing changed."
    await operator.send("/blocks")
    assert (await operator.expect()).plain == "The blocklist is empty."


async def test_decisions_list_open_holds_with_buttons_and_recent_ones(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, units=6)
    await add_rule(core, "big-orders", "quantity", 1, "hold")
    operator = shop.user(ADMIN, "en")
    await operator.send("/decisions")
    assert (await operator.expect()).plain == "No risk decisions yet."
    await order_two(shop.user(BUYER, "en"), "en")
    await order_two(shop.user(1002, "en"), "en")
    async with core.db.transaction() as session:
        await risk.reject(session, 1, actor="test", reason="duplicate")

    await operator.send("/decisions")
    listed = await operator.expect("Risk decisions")
    assert "#2 · hold · open · buyer 1002 · VIP × 2 · ¥30.00 · bot" in listed.plain
    assert "#1 · hold · rejected · buyer 1001" in listed.plain and "duplicate" in listed.plain
    assert [b["text"] for b in listed.buttons()] == ["✅ Approve #2", "❌ Reject #2"]
    await operator.press(listed, "✅ Approve #2")
    assert "Hold #2 approved" in (await operator.expect(lambda m: m.kind == "send")).plain
    assert await decision_statuses(core) == [("hold", "rejected"), ("hold", "approved")]


async def test_a_non_operator_sees_no_risk_commands_and_forged_buttons_change_nothing(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, units=6)
    await add_rule(core, "big-orders", "quantity", 1, "hold")
    buyer = shop.user(BUYER, "en")
    await order_two(buyer, "en")  # held: decision #1 is open

    for command in ("/risk", "/decisions", "/blocks", "/block user 1001 x", "/risk_rule big-orders threshold=9"):
        await buyer.send(command)
        assert "Risk" not in (await buyer.expect()).plain, command
    card = await open_product(buyer, "VIP membership")
    for data in ("rk:toggle:1", "rk:approve:1", "rk:reject:1", "rk:rules:0"):
        answer = await forge(buyer, card, data)
        await shop.callback_answer(answer)
    async with core.db.read() as session:
        rule = await session.scalar(select(RiskRule))
        assert rule is not None and (rule.active, rule.threshold) == (True, 1)
        assert await session.scalar(select(func.count()).select_from(BlockEntry)) == 0
    assert await decision_statuses(core) == [("hold", "open")]
