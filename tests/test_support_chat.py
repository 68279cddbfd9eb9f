"""A human when needed: pleas for help ("客服", "help me", "卡密用不了") and ``/support`` reach the
support contact and a ticket form; a ticket goes to the operators with its order, status and
transaction number, their reply comes back to the buyer (and the buyer's answer to them), tickets
close; a buyer cannot flood. Through the real dispatcher and the outbox sender, in zh and en."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from quanyi.bot.buyer.support import asks_for_help
from quanyi.bot.outbox_sender import OutboxSender
from quanyi.bot.runner import build_bot
from quanyi.core.errors import Forbidden, InvalidInput, LimitReached
from quanyi.core.models import AuditRecord, Order, Ticket, TicketMessage
from quanyi.core.platform.config import Settings
from quanyi.core.sales.fulfilment import PaymentOutcome
from quanyi.core.sales.orders import Buyer
from quanyi.core.services import Core
from quanyi.core.support.tickets import MAX_MESSAGES_PER_HOUR, MAX_OPEN
from quanyi.i18n import raw_t, t
from tests.conftest import make_settings
from tests.fakebot import BotMessage, FakeTelegram, FakeUser, visible_text
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_bot_chat import catalogue_shown, shop, tg  # noqa: F401  (fixtures)

ADMIN = 9000  # make_settings puts this id in QUANYI_ADMIN_IDS
BUYER = 1001
TXN = "SBX-TXN-0001"
chat = pytest.mark.parametrize("backend", ["sqlite"])  # chat texts do not depend on the database


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, outbox_per_chat_interval=0.0)


@pytest.fixture
async def sender(core: Core, tg: FakeTelegram) -> AsyncIterator[OutboxSender]:
    bot = build_bot(core.settings.model_copy(update={"bot_token": tg.token, "telegram_api_base": tg.base}))
    yield OutboxSender(core, bot, poll_interval=0.05)
    await bot.session.close()


def plain(lang: str, key: str, **values: object) -> str:
    return visible_text(t(lang, key, **values), "HTML")


async def paid_order(core: Core, tmp_path: Path, *, user_id: int = BUYER, txn: str = TXN) -> Order:
    await product_with_stock(core, tmp_path, units=3)
    placed = await new_order(core, quantity=2, user_id=user_id)
    event = sandbox_event(placed.order.number, placed.order.amount, txn=txn)
    assert await core.fulfiller.submit(event) == PaymentOutcome.DELIVERED
    return placed.order


async def speaks(user: FakeUser) -> None:
    """The user talks to the bot once, so the operators' messages come in its language."""
    await user.send("/start")
    await user.expect()


def ticket_number(message: BotMessage) -> int:
    found = re.search(r"#(\d+)", message.plain)
    assert found, message.plain
    return int(found.group(1))


async def reply_to(user: FakeUser, message: BotMessage, text: str) -> None:
    """A Telegram reply (long press → Reply) to one of the bot's messages."""
    user.cursor = user.server.mark()
    await user.server.push_update(user.message_update(text, reply_to_message=user.server.current(message)))


# --- reaching support -------------------------------------------------------------------------


PLEAS = [
    "客服",
    "人工",
    "联系客服",
    "卡密用不了",
    "无法兑换",
    "我没收到卡密",
    "help",
    "Help me!",
    "support",
    "human",
    "refund?",
]


def test_the_pleas_buyers_write_are_recognised_and_ordinary_words_are_not():
    assert all(asks_for_help(text) for text in [*PLEAS, "the code is not working", "I didn't receive it"])
    assert not any(asks_for_help(text) for text in ["hello", "helpful", "supported", "VIP", "多少钱", "12345"])


@chat
@pytest.mark.parametrize("plea", PLEAS)
async def test_a_plea_for_a_human_shows_the_support_contact_and_the_form(core, shop, plea):
    lang = "zh" if re.search(r"[\u4e00-\u9fff]", plea) else "en"
    buyer = shop.user(BUYER, lang)
    await buyer.send(plea)
    screen = await buyer.expect()
    assert plain(lang, "support.title") in screen.plain
    assert plain(lang, "support.contact", contact="@quanyi_support") in screen.plain
    assert [b["text"] for b in screen.buttons()] == [raw_t(lang, "support.write_button"), raw_t(lang, "back_button")]


@chat
async def test_other_text_is_not_taken_for_a_plea(core, shop):
    buyer = shop.user(BUYER, "en")
    await buyer.send("hello there")
    assert (await buyer.expect()).plain == plain("en", "unknown_input")


@chat
@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_support_is_a_command_and_a_button_on_the_start_and_help_screens(core, shop, tmp_path, lang):
    await product_with_stock(core, tmp_path, units=2)
    buyer = shop.user(BUYER, lang)
    await buyer.send("/support")
    assert plain(lang, "support.title") in (await buyer.expect()).plain

    await buyer.send("/start")
    catalogue = await buyer.expect(catalogue_shown)
    await buyer.press(catalogue, raw_t(lang, "support.button"))
    screen = await buyer.expect(lambda m: m.kind == "edit")
    assert plain(lang, "support.title") in screen.plain
    await buyer.press(screen, raw_t(lang, "back_button"))  # and back to the catalogue
    assert catalogue_shown(await buyer.expect(lambda m: m.kind == "edit"))

    await buyer.send("/help")
    help_ = await buyer.expect("/support")
    await buyer.press(help_, raw_t(lang, "support.button"))
    assert plain(lang, "support.title") in (await buyer.expect(lambda m: m.kind == "edit")).plain


@chat
async def test_a_plea_typed_inside_the_order_form_stays_in_the_form(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, units=3)
    buyer = shop.user(BUYER, "en")
    await buyer.send("/start")
    await buyer.press(await buyer.expect(catalogue_shown), "VIP membership")
    card = await buyer.expect(lambda m: m.kind == "edit")
    await buyer.press(card, "2")
    methods = await buyer.expect(lambda m: any(b.get("callback_data", "").startswith("cp:") for b in m.buttons()))
    await buyer.press(methods, raw_t("en", "pricing.coupon_button"))
    await buyer.expect()
    await buyer.send("HELP")  # a coupon code, however it reads
    answer = await buyer.expect()
    assert plain("en", "support.title") not in answer.plain and "HELP" in answer.plain


# --- the ticket, there and back ----------------------------------------------------------------


@chat
async def test_a_ticket_reaches_the_operators_and_their_reply_comes_back_to_the_buyer(core, shop, sender, tmp_path):
    order = await paid_order(core, tmp_path)
    admin = shop.user(ADMIN, "en")
    await speaks(admin)
    buyer = shop.user(BUYER, "zh")

    await buyer.send("卡密用不了")
    screen = await buyer.expect(plain("zh", "support.title"))
    await buyer.press(screen, raw_t("zh", "support.write_button"))
    picker = await buyer.expect(lambda m: m.kind == "edit" and "哪个订单" in m.plain)
    assert [b["text"] for b in picker.buttons()] == [
        f"{order.number} · VIP membership",
        raw_t("zh", "support.no_order_button"),
        raw_t("zh", "back_button"),
    ]
    await buyer.press(picker, order.number)
    asked = await buyer.expect(lambda m: m.kind == "edit")
    assert order.number in asked.plain and "最多 1000 字" in asked.plain
    await buyer.send("<b>第二个卡密</b> 提示已被使用")
    sent = await buyer.expect("工单号")
    ticket = ticket_number(sent)
    assert sent.plain == plain("zh", "support.sent", ticket=ticket)

    await sender.run_once()
    forwarded = await admin.expect(f"Ticket #{ticket}")
    assert forwarded.plain.splitlines()[:4] == [
        f"🎫 Ticket #{ticket} · new request",
        f"Buyer: {BUYER}",
        f"Order: {order.number} · delivered · ¥30.00",
        f"Transaction: {TXN}",
    ]
    assert forwarded.plain.endswith("<b>第二个卡密</b> 提示已被使用")  # the buyer's words, escaped: shown as typed
    assert [b["text"] for b in forwarded.buttons()] == [f"💬 Reply #{ticket}", f"✅ Close #{ticket}"]

    # The operator replies through the button and a typed text…
    await admin.press(forwarded, f"💬 Reply #{ticket}")
    await admin.expect(f"Type your reply to ticket #{ticket}")
    await admin.send("   ")  # refused, asked again
    assert (await admin.expect()).plain == plain("en", "support.op_bad_reply", max=2000)
    await admin.send("请重新兑换，已为您补发 <新卡密>")
    assert (await admin.expect()).plain == plain("en", "support.op_replied", ticket=ticket)
    await sender.run_once()
    answer = await buyer.expect("客服回复")
    assert answer.plain == f"💬 客服回复（工单 #{ticket}）\n请重新兑换，已为您补发 <新卡密>"
    assert [b["text"] for b in answer.buttons()] == [raw_t("zh", "support.reply_button")]

    # …the buyer answers the reply…
    await buyer.press(answer, raw_t("zh", "support.reply_button"))
    await buyer.expect(f"工单 #{ticket}")
    await buyer.send("好的，谢谢")
    assert (await buyer.expect()).plain == plain("zh", "support.followup_sent", ticket=ticket)
    await sender.run_once()
    again = await admin.expect("the buyer wrote again")
    assert again.plain.endswith("好的，谢谢") and f"Order: {order.number}" in again.plain

    # …and the operator answers that with a Telegram reply to the ticket's message.
    await reply_to(admin, again, "Glad it works.")
    assert (await admin.expect()).plain == plain("en", "support.op_replied", ticket=ticket)
    await sender.run_once()
    glad = await buyer.expect("客服回复")
    assert glad.plain.endswith("Glad it works.")
    # The buyer may answer with a Telegram reply too.
    await reply_to(buyer, glad, "👍")
    assert (await buyer.expect()).plain == plain("zh", "support.followup_sent", ticket=ticket)
    await sender.run_once()
    assert (await admin.expect("the buyer wrote again")).plain.endswith("👍")

    # /tickets lists it as answered; Close closes it once and the buyer is told.
    await admin.send("/tickets")
    listed = await admin.expect("Open tickets")
    assert f"#{ticket} · buyer {BUYER} · {order.number} · 5 message(s) · ⏳ waiting for a reply" in listed.plain
    assert "“👍”" in listed.plain
    await admin.press(listed, f"✅ Close #{ticket}")
    assert (await admin.expect()).plain == plain("en", "support.op_closed", ticket=ticket)
    await admin.press(listed, f"✅ Close #{ticket}")
    assert (await admin.expect()).plain == plain("en", "support.op_was_closed", ticket=ticket)
    await sender.run_once()
    assert (await buyer.expect("已关闭")).plain == plain("zh", "support.closed_to_buyer", ticket=ticket)
    await reply_to(admin, again, "one more thing")
    assert (await admin.expect()).plain == plain("en", "support.op_closed_already", ticket=ticket)
    await admin.send("/tickets")
    assert (await admin.expect()).plain == plain("en", "support.tickets_empty")

    async with core.db.read() as session:
        row = await session.scalar(select(Ticket))
        assert (row.user_id, row.order_id, row.status, row.closed_by) == (
            BUYER,
            order.id,
            "closed",
            f"operator:{ADMIN}",
        )
        authors = list(await session.scalars(select(TicketMessage.author).order_by(TicketMessage.id)))
        assert authors == [f"buyer:{BUYER}", f"operator:{ADMIN}"] * 2 + [f"buyer:{BUYER}"]
        audited = (
            await session.execute(
                select(AuditRecord.actor, AuditRecord.action)
                .where(AuditRecord.object_type == "ticket")
                .order_by(AuditRecord.seq)
            )
        ).all()
    assert audited == [(f"operator:{ADMIN}", "reply ticket")] * 2 + [(f"operator:{ADMIN}", "close ticket")]


@chat
async def test_an_english_buyer_writes_about_no_order_and_a_chinese_operator_answers(core, shop, sender):
    admin = shop.user(ADMIN, "zh")
    await speaks(admin)
    buyer = shop.user(BUYER, "en")
    await buyer.send("help me")
    await buyer.press(await buyer.expect(plain("en", "support.title")), raw_t("en", "support.write_button"))
    picker = await buyer.expect(lambda m: m.kind == "edit")
    assert [b["text"] for b in picker.buttons()] == ["Not about an order", "« Back"]  # no orders yet
    await buyer.press(picker, "Not about an order")
    await buyer.expect(lambda m: m.kind == "edit" and "Describe the problem" in m.plain)
    await buyer.send("x" * 1001)  # too long: asked again, nothing sent
    assert (await buyer.expect()).plain == plain("en", "support.bad_text", max=1000)
    await buyer.send("Do you sell gift cards for Steam?")
    ticket = ticket_number(await buyer.expect("Sent to support"))

    await sender.run_once()
    forwarded = await admin.expect(f"工单 #{ticket}")
    assert forwarded.plain.splitlines()[:3] == [f"🎫 工单 #{ticket} · 新留言", f"买家：{BUYER}", "订单：无"]
    await admin.send("/tickets")
    listed = await admin.expect("待处理工单")
    assert listed.plain.startswith("📮 待处理工单（1）")
    assert f"#{ticket} · 买家 {BUYER} · 无订单 · 1 条 · ⏳ 待回复" in listed.plain
    await admin.press(listed, f"💬 回复 #{ticket}")
    await admin.expect(f"请输入对工单 #{ticket} 的回复")
    await admin.send("/cancel")
    assert (await admin.expect()).plain == plain("zh", "support.op_cancelled")
    await reply_to(admin, forwarded, "暂时没有，敬请期待。")
    assert (await admin.expect()).plain == plain("zh", "support.op_replied", ticket=ticket)
    await sender.run_once()
    assert (
        await buyer.expect("Support replied")
    ).plain == f"💬 Support replied (request #{ticket})\n暂时没有，敬请期待。"


@chat
async def test_the_form_can_be_cancelled_and_takes_text_only(core, shop):
    buyer = shop.user(BUYER, "zh")
    await buyer.send("/support")
    await buyer.press(await buyer.expect(), raw_t("zh", "support.write_button"))
    await buyer.press(await buyer.expect(lambda m: m.kind == "edit"), raw_t("zh", "support.no_order_button"))
    await buyer.expect(lambda m: m.kind == "edit" and "请写下您的问题" in m.plain)
    await buyer.send_sticker()
    assert (await buyer.expect()).plain == plain("zh", "support.text_only")
    await buyer.send("/cancel")
    assert (await buyer.expect()).plain == plain("zh", "support.cancelled")
    await buyer.send("随便说说")  # no longer a message to support
    assert (await buyer.expect()).plain == plain("zh", "unknown_input")
    async with core.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Ticket)) == 0


@chat
async def test_a_buyer_with_too_many_open_tickets_is_asked_to_wait(core, shop):
    for n in range(MAX_OPEN - 1):
        await core.support.open_ticket(Buyer(BUYER, BUYER, "en"), f"problem {n}")
    buyer = shop.user(BUYER, "en")
    await buyer.send("/support")
    screen = await buyer.expect()
    await buyer.press(screen, raw_t("en", "support.write_button"))
    await buyer.press(await buyer.expect(lambda m: m.kind == "edit"), "Not about an order")
    await buyer.expect(lambda m: m.kind == "edit")
    await core.support.open_ticket(Buyer(BUYER, BUYER, "en"), "the last one allowed")
    await buyer.send("one more")  # the limit is met while the message was being typed
    assert (await buyer.expect()).plain == plain("en", "support.open_limit", max=MAX_OPEN)
    # Asked to write again, the buyer is told before typing anything.
    await buyer.send("/support")
    await buyer.press(await buyer.expect(), raw_t("en", "support.write_button"))
    refused = await buyer.expect(lambda m: m.kind == "edit")
    assert refused.plain == plain("en", "support.open_limit", max=MAX_OPEN)
    await buyer.press(refused, "« Back")  # back to the contact
    assert plain("en", "support.title") in (await buyer.expect(lambda m: m.kind == "edit")).plain


# --- the rules, on both databases ---------------------------------------------------------------


async def tickets_of(core: Core, user_id: int) -> int:
    async with core.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(Ticket).where(Ticket.user_id == user_id)))


async def test_buyers_cannot_flood_the_operators(core):
    buyer = Buyer(BUYER, BUYER, "zh")
    opened = [await core.support.open_ticket(buyer, f"problem {n}") for n in range(MAX_OPEN)]
    with pytest.raises(LimitReached) as refused:
        await core.support.open_ticket(buyer, "another")
    assert refused.value.details == {"limit": "open_tickets", "max": MAX_OPEN}
    for n in range(MAX_MESSAGES_PER_HOUR - MAX_OPEN):
        await core.support.buyer_message(opened[0], BUYER, f"more {n}")
    with pytest.raises(LimitReached) as refused:
        await core.support.buyer_message(opened[1], BUYER, "and more")
    assert refused.value.details["limit"] == "messages"
    assert await core.support.close(opened[2], actor=f"operator:{ADMIN}")
    with pytest.raises(LimitReached):  # a ticket is free again, but the hour's messages are spent
        await core.support.open_ticket(buyer, "again")
    # Another buyer is not held back by this one.
    assert await core.support.open_ticket(Buyer(1002, 1002, "en"), "hello")


async def test_a_ticket_names_only_the_buyers_own_order_and_bounded_text(core, tmp_path):
    order = await paid_order(core, tmp_path, user_id=1002)
    with pytest.raises(Forbidden):
        await core.support.open_ticket(Buyer(BUYER, BUYER, "zh"), "not mine", order_number=order.number)
    for text in ("", "   ", "x" * 1001):
        with pytest.raises(InvalidInput):
            await core.support.open_ticket(Buyer(BUYER, BUYER, "zh"), text)
    assert await tickets_of(core, BUYER) == 0
    ticket = await core.support.open_ticket(Buyer(1002, 1002, "zh"), "  mine  ", order_number=order.number)
    assert (await core.support.message(1)).body == "mine" and ticket == 1
    with pytest.raises(Forbidden):  # someone else's ticket
        await core.support.buyer_message(ticket, BUYER, "hi")
    with pytest.raises(InvalidInput):
        await core.support.reply(ticket, "x" * 2001, actor=f"operator:{ADMIN}")


async def test_concurrent_requests_open_no_more_tickets_than_the_limit(core):
    buyer = Buyer(BUYER, BUYER, "zh")
    results = await asyncio.gather(
        *(core.support.open_ticket(buyer, f"at once {n}") for n in range(MAX_OPEN + 3)), return_exceptions=True
    )
    assert sum(isinstance(r, int) for r in results) == MAX_OPEN
    assert all(isinstance(r, int | LimitReached) for r in results), results
    assert await tickets_of(core, BUYER) == MAX_OPEN


async def test_a_ticket_closes_once_under_a_double_tap_and_a_racing_reply_never_lands_after_it(core):
    ticket = await core.support.open_ticket(Buyer(BUYER, BUYER, "zh"), "help")
    actor = f"operator:{ADMIN}"
    closes = await asyncio.gather(*(core.support.close(ticket, actor=actor) for _ in range(4)))
    assert sorted(closes) == [False, False, False, True]
    with pytest.raises(InvalidInput):
        await core.support.reply(ticket, "too late", actor=actor)
    with pytest.raises(InvalidInput):
        await core.support.buyer_message(ticket, BUYER, "too late")
    async with core.db.read() as session:
        closings = await session.scalar(
            select(func.count()).select_from(AuditRecord).where(AuditRecord.action == "close ticket")
        )
        told = await session.scalar(select(func.count()).select_from(TicketMessage))
    assert (closings, told) == (1, 1)
