"""Buyer chat through the real aiogram Bot and Dispatcher, polling a fake Bot API server over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from quanyi.bot.runner import build_bot, build_dispatcher
from quanyi.core.catalog.products import add_product
from quanyi.core.models import Order, StockItem
from quanyi.core.money import Money
from quanyi.core.services import Core
from quanyi.core.stock.items import import_stock
from quanyi.i18n import raw_t
from tests.fakebot import BotMessage, FakeTelegram, FakeUser
from tests.helpers import new_order, product_with_stock, sandbox_event

NUMBER = re.compile(r"Q\d{6}[A-Z2-9]{8}")


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest.fixture
async def shop(core: Core, tg: FakeTelegram, caplog: pytest.LogCaptureFixture) -> AsyncIterator[FakeTelegram]:
    """The shop bot polling the fake server; afterwards, Telegram refused nothing and no handler failed."""
    caplog.set_level(logging.WARNING)
    settings = core.settings.model_copy(update={"bot_token": tg.token, "telegram_api_base": tg.base})
    bot = build_bot(settings)
    dp = build_dispatcher(core)
    polling = asyncio.create_task(dp.start_polling(bot, handle_signals=False, close_bot_session=False))
    await tg.wait_call("getUpdates")
    try:
        yield tg
        # Every pressed button was answered (a client shows a spinner until then).
        for callback_id in tg.pushed_callbacks:
            await tg.callback_answer(callback_id, timeout=3)
    finally:
        with contextlib.suppress(RuntimeError):
            await dp.stop_polling()
        await asyncio.wait_for(polling, 5)
        if dp._handle_update_tasks:  # updates still being handled finish first, as in quanyi.app
            await asyncio.wait(set(dp._handle_update_tasks), timeout=5)
        await bot.session.close()
    refused = [
        (c.method, c.description) for c in tg.calls if c.status != 200 and c.description not in tg.expected_refusals
    ]
    assert refused == [], "Telegram would have refused these calls"
    records = [r for phase in ("setup", "call", "teardown") for r in caplog.get_records(phase)]
    failures = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    assert failures == [], "a chat handler failed"


def catalogue_shown(message: BotMessage) -> bool:
    return any(b.get("callback_data", "").startswith("p:") for b in message.buttons())


async def open_product(user: FakeUser, label: str) -> BotMessage:
    await user.send("/start")
    catalogue = await user.expect(catalogue_shown)
    await user.press(catalogue, label)
    return await user.expect(lambda m: m.kind == "edit" and ("库存" in m.plain or "In stock" in m.plain))


async def choose(user: FakeUser, card: BotMessage, quantity: str) -> BotMessage:
    await user.press(card, quantity)
    return await user.expect(lambda m: any(b.get("callback_data", "").startswith("m:") for b in m.buttons()))


async def place_sandbox_order(user: FakeUser, quantity: str = "2") -> tuple[BotMessage, str]:
    card = await open_product(user, "VIP membership")
    methods = await choose(user, card, quantity)
    await user.press(methods, raw_t("zh", "method_sandbox"))
    created = await user.expect(lambda m: NUMBER.search(m.plain) is not None)
    match = NUMBER.search(created.plain)
    assert match
    return created, match.group(0)


async def stock_of(core: Core, status: str, order_number: str | None = None) -> int:
    async with core.db.read() as session:
        query = select(func.count()).select_from(StockItem).where(StockItem.status == status)
        if order_number is not None:
            query = query.join(Order, Order.id == StockItem.order_id).where(Order.number == order_number)
        return int(await session.scalar(query) or 0)


async def test_start_shows_catalogue_with_name_price_and_units_left(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", price="15.00", units=5)
    await product_with_stock(core, tmp_path, sku="MUSIC", price="9.90", units=0)
    user = shop.user(1001, "zh-hans")

    await user.send("/start")
    catalogue = await user.expect(catalogue_shown)

    assert "商品目录" in catalogue.plain
    assert [b["text"] for b in catalogue.buttons()] == [
        "VIP membership · ¥15.00 · 剩 5",
        "MUSIC membership · ¥9.90 · 已售罄",
        "🆘 联系客服",
    ]


@pytest.mark.parametrize("backend", ["sqlite"])  # chat texts do not depend on the database
@pytest.mark.parametrize("code", ["zh-hans", None, "fr", "en-US"])
async def test_language_follows_telegram_language_code_with_zh_by_default(core, shop, tmp_path, code):
    await product_with_stock(core, tmp_path, units=5)
    user = shop.user(1001, code)
    await user.send("/start")
    catalogue = await user.expect(catalogue_shown)
    if code == "en-US":
        assert "Catalogue" in catalogue.plain and catalogue.buttons()[0]["text"] == "VIP membership · ¥15.00 · 5 left"
    else:
        assert "商品目录" in catalogue.plain and catalogue.buttons()[0]["text"] == "VIP membership · ¥15.00 · 剩 5"
    await user.send("/help")
    assert "/orders" in (await user.expect()).plain


async def test_deep_link_opens_the_product_card_and_an_unknown_sku_is_explained(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", units=5)
    await product_with_stock(core, tmp_path, sku="OTHER", units=1)
    user = shop.user(1001, "en")

    await user.send("/start buy_VIP")
    card = await user.expect()
    assert card.kind == "send"
    assert "VIP membership" in card.plain and "Price: ¥15.00" in card.plain and "In stock: 5" in card.plain
    assert [b["text"] for b in card.buttons()] == ["1", "2", "3", "5", "Other quantity", "« Back"]

    await user.send("/start buy_NOPE")
    refused = await user.expect()
    assert refused.plain == "This product can't be bought right now."
    assert catalogue_shown(await user.expect(catalogue_shown))  # and the catalogue to pick from instead


async def test_quantity_buttons_lead_to_payment_method_buttons(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, units=5)
    user = shop.user(1001, "zh")
    card = await open_product(user, "VIP membership")
    assert [b["text"] for b in card.buttons()] == ["1", "2", "3", "5", "其他数量", "« 返回"]

    methods = await choose(user, card, "2")
    assert methods.message_id == card.message_id  # the form is edited in place
    assert "× 2" in methods.plain and "¥30.00" in methods.plain
    assert [b["text"] for b in methods.buttons()] == [raw_t("zh", "method_sandbox"), "🎟 优惠码", "« 返回"]


async def test_typed_quantity_is_checked_against_the_limit_and_the_stock(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, units=5)
    user = shop.user(1001, "zh")
    card = await open_product(user, "VIP membership")
    await user.press(card, "其他数量")
    assert "1–20" in (await user.expect()).plain

    for bad in ["abc", "0", "999", "-1", "2.5", "²"]:
        await user.send(bad)
        reply = await user.expect()
        assert reply.plain == "数量无效：请输入 1 到 20 之间的整数。", bad

    await user.send("7")  # within the limit, beyond the stock
    assert (await user.expect()).plain == "库存不足：仅剩 5 件。"

    await user.send("3")
    methods = await user.expect()
    assert "× 3" in methods.plain and "¥45.00" in methods.plain
    assert methods.button(raw_t("zh", "method_sandbox"))
    # The form is done: the next number is no longer read as a quantity.
    await user.send("4")
    assert "没看懂" in (await user.expect()).plain


async def test_sandbox_order_holds_stock_shows_a_pay_link_and_cancelling_releases_it(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, units=5)
    user = shop.user(1001, "zh")

    created, number = await place_sandbox_order(user, "2")

    assert "¥30.00" in created.plain and "15 分钟" in created.plain
    pay = created.button("去支付")
    assert pay["url"] == f"{core.settings.public_url}/pay/sandbox/{number}"
    async with core.db.read() as session:
        order = await session.scalar(select(Order).where(Order.number == number))
    assert (order.status, order.user_id, order.chat_id, order.amount) == ("pending", 1001, 1001, 3000)
    assert await stock_of(core, "reserved", number) == 2
    await user.send("/start")
    assert (await user.expect(catalogue_shown)).buttons()[0]["text"].endswith("剩 3")

    await user.press(created, "取消订单")
    cancelled = await user.expect(lambda m: m.message_id == created.message_id)
    assert number in cancelled.plain and "已取消" in cancelled.plain
    assert cancelled.buttons() == []
    assert await stock_of(core, "reserved") == 0
    assert await stock_of(core, "available") == 5
    async with core.db.read() as session:
        assert await session.scalar(select(Order.status).where(Order.number == number)) == "cancelled"

    # The old button pressed again: refused with a reason, nothing changes.
    again = await user.press(created, data=f"c:{number}")
    answer = await shop.callback_answer(again)
    assert answer.get("show_alert") in ("true", True) and "无法取消" in answer["text"]
    assert await stock_of(core, "available") == 5


async def test_a_pay_link_telegram_refuses_as_a_button_is_given_as_text(core, shop, tmp_path):
    """Telegram refuses URL buttons to 127.0.0.1 (a demo's default QUANYI_PUBLIC_URL); the order still stands."""
    shop.refuse_local_urls = True
    shop.expected_refusals.add("Bad Request: BUTTON_URL_INVALID")
    await product_with_stock(core, tmp_path, units=5)
    user = shop.user(1001, "en")
    card = await open_product(user, "VIP membership")
    methods = await choose(user, card, "1")
    await user.press(methods, raw_t("en", "method_sandbox"))
    created = await user.expect(lambda m: "Pay here:" in m.plain)
    number = NUMBER.search(created.plain).group(0)
    assert f"{core.settings.public_url}/pay/sandbox/{number}" in created.plain
    assert [b["text"] for b in created.buttons()] == ["Cancel order"]
    assert await stock_of(core, "reserved", number) == 1


async def test_orders_lists_them_and_show_codes_redisplays_codes_to_the_buyer_only(core, shop, tmp_path):
    codes = await product_with_stock(core, tmp_path, units=2)
    await product_with_stock(core, tmp_path, sku="GAME", units=3)
    delivered = await new_order(core, quantity=2, user_id=1001)
    await core.fulfiller.submit(sandbox_event(delivered.order.number, delivered.order.amount))
    pending = await new_order(core, sku="GAME", user_id=1001)
    buyer = shop.user(1001, "zh")

    await buyer.send("/orders")
    listing = await buyer.expect()
    assert delivered.order.number in listing.plain and pending.order.number in listing.plain
    assert "已发货" in listing.plain and "待支付" in listing.plain
    # Pay and Cancel on the unpaid one (issue 17), Show on the delivered one.
    assert [b["text"] for b in listing.buttons()] == [
        f"💳 支付 {pending.order.number}",
        f"✖ 取消 {pending.order.number}",
        f"🔑 查看 {delivered.order.number}",
    ]

    await buyer.press(listing, "🔑 查看")
    shown = await buyer.expect(lambda m: delivered.order.number in m.plain)
    assert all(code in shown.plain for code in codes)

    # Someone else pressing the same button is refused and sees nothing.
    mark = shop.mark()
    stranger = shop.user(2002, "zh")
    pressed = await stranger.press(listing, "🔑 查看")
    answer = await shop.callback_answer(pressed)
    assert answer["text"] == "找不到该订单。" and answer.get("show_alert") in ("true", True)
    await stranger.send("/orders")
    assert "还没有订单" in (await stranger.expect()).plain
    leaked = [m for m in shop.messages[mark:] if any(code in m.plain for code in codes)]
    assert leaked == []


@pytest.mark.parametrize("backend", ["sqlite"])  # chat texts do not depend on the database
@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_strange_input_gets_the_unknown_input_reply_and_the_bot_keeps_working(core, shop, tmp_path, lang):
    await product_with_stock(core, tmp_path, units=1)
    user = shop.user(1001, lang)
    expected = raw_t(lang, "unknown_input")

    for text in ["<b>hi</b>", "x" * 4000, "/nosuchcommand", "&amp; <", "buy_VIP"]:
        await user.send(text)
        assert (await user.expect()).plain == expected, text[:20]
    await user.send_sticker()
    assert (await user.expect()).plain == expected

    await user.send("/start")
    assert catalogue_shown(await user.expect())


async def test_html_in_a_product_name_is_shown_literally_not_interpreted(core, shop, tmp_path):
    name = "<b>Bold</b> & <i>co"
    async with core.db.transaction() as session:
        await add_product(
            session,
            sku="EVIL",
            name=name,
            kind="card_key",
            price=Money.parse("1.00", "CNY"),
            description="<script>alert(1)</script>",
        )
    path = tmp_path / "evil.txt"
    path.write_text("EVIL-CODE-1\nEVIL-CODE-2\n")
    await import_stock(core.db, core.keyring, "EVIL", path)
    user = shop.user(1001, "en")

    await user.send("/start")
    catalogue = await user.expect(catalogue_shown)
    assert catalogue.buttons()[0]["text"].startswith(name)  # button labels are plain text
    card = await open_product(user, "Bold")
    assert name in card.plain and "<script>alert(1)</script>" in card.plain
    assert "&lt;b&gt;Bold&lt;/b&gt; &amp; &lt;i&gt;co" in card.text
    methods = await choose(user, card, "1")
    assert name in methods.plain
    await user.press(methods, raw_t("en", "method_sandbox"))
    created = await user.expect(lambda m: NUMBER.search(m.plain) is not None)
    assert name in created.plain
