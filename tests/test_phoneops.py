"""Running the shop from the phone: products added and edited in the operator chat, stock files
imported and voided as documents with a progress message, /help for operators, and operators
told of each paid order (or a digest) and of each failed one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from quanyi.bot.operator import stock_files
from quanyi.bot.outbox_sender import OutboxSender
from quanyi.bot.runner import build_bot
from quanyi.core.models import AuditRecord, Order, OutboxMessage, Product, StockItem
from quanyi.core.platform.config import Settings
from quanyi.core.platform.scheduler import Jobs, build_scheduler
from quanyi.core.sales import paid_notices
from quanyi.core.sales.fulfilment import PaymentOutcome
from quanyi.core.services import Core
from quanyi.i18n import raw_t, t
from tests.conftest import make_settings
from tests.fakebot import BotMessage, FakeTelegram
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_bot_chat import shop, tg  # noqa: F401  (fixtures)

ADMIN = 9000  # make_settings puts this id in QUANYI_ADMIN_IDS
BUYER = 1001


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The outbox sender's pacing per chat would only slow the test down.
    return make_settings(tmp_path, outbox_per_chat_interval=0.0)


@pytest.fixture
async def sender(core: Core, tg: FakeTelegram) -> AsyncIterator[OutboxSender]:
    bot = build_bot(core.settings.model_copy(update={"bot_token": tg.token, "telegram_api_base": tg.base}))
    yield OutboxSender(core, bot, poll_interval=0.05)
    await bot.session.close()


async def product(core: Core, sku: str) -> Product | None:
    async with core.db.read() as session:
        return await session.scalar(select(Product).where(Product.sku == sku))


async def count(core: Core, model: type, *where: object) -> int:
    async with core.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def has_buttons(message: BotMessage) -> bool:
    return bool(message.buttons())


# --- adding and editing products -------------------------------------------------------------


async def test_an_operator_adds_a_card_key_product_and_a_refused_value_asks_again(core, shop):
    admin = shop.user(ADMIN, "zh")
    await admin.send("/product_add")
    kinds = await admin.expect("新建商品")
    await admin.press(kinds, "卡密")
    await admin.expect("请输入 SKU")
    await admin.send("月卡 VIP")  # not a SKU: asked again
    await admin.expect("无效")
    await admin.send("VIP2")
    await admin.expect("请输入商品名称")
    await admin.send("视频月卡")
    await admin.expect("请输入价格")
    await admin.send("十五块")  # not an amount: asked again
    await admin.expect("价格无效")
    await admin.send("0")
    await admin.expect("价格无效")
    await admin.send("￥１５.５元")  # full-width digits, a currency sign and 元 are forgiven
    asked = await admin.expect("请输入分类")
    assert "¥15.50" in asked.plain
    await admin.press(asked, "不设分类")
    added = await admin.expect("已添加商品")
    assert "视频月卡" in added.plain and "¥15.50" in added.plain and "/import VIP2" in added.plain
    assert added.button("🔴 下架")  # the edit screen, at once

    made = await product(core, "VIP2")
    assert made is not None
    assert (made.name, made.kind, made.price, made.active, made.category) == ("视频月卡", "card_key", 1550, True, None)
    async with core.db.read() as session:
        record = await session.scalar(select(AuditRecord).where(AuditRecord.object_type == "product"))
    assert record is not None and record.actor == f"operator:{ADMIN}" and record.front == "chat"


async def test_an_sku_taken_asks_for_another_and_keeps_the_rest_in_english(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", units=0)
    admin = shop.user(ADMIN, "en")
    await admin.send("/product_add")
    kinds = await admin.expect("New product")
    await admin.press(kinds, "redemption link")
    await admin.expect("Type the SKU")
    await admin.send("VIP")
    await admin.expect("Type the product's name")
    await admin.send("Music link")
    await admin.expect("Type the price")
    await admin.send("1,200.5")
    await admin.expect("Type a category")
    await admin.send("Music")
    await admin.expect("is taken")
    await admin.send("MUSIC-LINK")
    added = await admin.expect("added")
    assert "Music link" in added.plain and "¥1200.50" in added.plain and "music" in added.plain

    made = await product(core, "MUSIC-LINK")
    assert made is not None and (made.kind, made.price, made.category) == ("redeem_link", 120050, "music")


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_an_operator_edits_name_price_category_and_takes_it_off_sale(core, shop, tmp_path, lang):
    await product_with_stock(core, tmp_path, sku="VIP", units=2)
    admin = shop.user(ADMIN, lang)
    await admin.send("/products")
    listed = await admin.expect(has_buttons)
    await admin.press(listed, "VIP membership")
    card = await admin.expect(lambda m: m.kind == "edit" and "VIP membership" in m.plain)
    assert "¥15.00" in card.plain

    await admin.press(card, raw_t(lang, "phoneops.btn_price"))
    await admin.expect("¥15.00")
    await admin.send("abc")
    await admin.expect(raw_t(lang, "phoneops.bad_price", text="abc").split("<code>")[0])
    await admin.send("12")
    changed = await admin.expect(has_buttons)
    assert "¥12.00" in changed.plain and t(lang, "phoneops.changed_price").strip("✅ ") in changed.plain

    await admin.press(changed, raw_t(lang, "phoneops.btn_name"))
    await admin.expect("VIP membership")
    await admin.send("VIP 月卡" if lang == "zh" else "VIP monthly")
    renamed = await admin.expect(has_buttons)

    await admin.press(renamed, raw_t(lang, "phoneops.btn_category"))
    await admin.expect(raw_t(lang, "phoneops.no_category"))
    await admin.send("video")
    categorised = await admin.expect(has_buttons)
    assert "video" in categorised.plain

    await admin.press(categorised, raw_t(lang, "phoneops.btn_off"))
    off = await admin.expect(lambda m: m.kind == "edit" and raw_t(lang, "phoneops.off_sale") in m.plain)
    assert off.button(raw_t(lang, "phoneops.btn_on"))

    made = await product(core, "VIP")
    assert made is not None
    assert (made.price, made.category, made.active) == (1200, "video", False)
    assert made.name == ("VIP 月卡" if lang == "zh" else "VIP monthly")
    async with core.db.read() as session:
        changes = list(
            await session.scalars(
                select(AuditRecord).where(AuditRecord.object_type == "product").order_by(AuditRecord.seq)
            )
        )
    olds = [json.loads(r.old or "{}") for r in changes]
    news = [json.loads(r.new or "{}") for r in changes]
    assert {"price": 1500} in olds and {"price": 1200} in news
    assert {"active": False} in news
    assert all(r.actor == f"operator:{ADMIN}" for r in changes)


async def test_a_buyer_cannot_reach_the_product_commands(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", units=1)
    buyer = shop.user(BUYER, "zh")
    await buyer.send("/product_add")
    answer = await buyer.expect()
    assert "新建商品" not in answer.plain
    await buyer.send("/product VIP")
    assert "🔴" not in (await buyer.expect()).plain


# --- stock files ------------------------------------------------------------------------------


async def test_an_import_file_edits_one_progress_message_and_ends_with_the_report(core, shop, tmp_path, monkeypatch):
    monkeypatch.setattr(stock_files, "PROGRESS_EVERY", 0.0)
    await product_with_stock(core, tmp_path, sku="VIP", units=0)
    codes = [f"CODE-{n:06d}" for n in range(12_000)]
    data = ("\n".join(codes[:6000] + [""] + codes[6000:] + [codes[0], "x" * 600]) + "\n").encode()
    admin = shop.user(ADMIN, "zh")

    await admin.send_document(data, "codes.txt", "/import VIP")
    first = await admin.expect("检查文件")
    done = await admin.expect(lambda m: m.kind == "edit" and "导入完成" in m.plain, timeout=60)
    assert done.message_id == first.message_id
    assert "新增 12000" in done.plain and "重复 1" in done.plain and "拒绝 1" in done.plain
    assert "第 12003 行被拒绝：卡密超过 512 个字符" in done.plain
    edits = [m for m in shop.messages if m.kind == "edit" and m.message_id == first.message_id]
    progress = [m.plain for m in edits if "已处理到第" in m.plain]
    assert progress and "5,000" in progress[0] and "%" in progress[0]
    assert edits[-1] is done  # the report comes last
    assert await count(core, StockItem, StockItem.status == "available") == 12_000


async def test_a_malformed_file_imports_nothing_and_says_why(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", units=0)
    admin = shop.user(ADMIN, "en")
    await admin.send_document(b"GOOD-1\nGOOD-2\nbad\x00line\n", "codes.txt", "/import VIP")
    refused = await admin.expect(lambda m: "not imported" in m.plain)
    assert "line 3: contains a NUL byte" in refused.plain
    zh = shop.user(ADMIN + 0, "zh")
    await zh.send_document(b"serial,secret\nS1,GOOD\n", "codes.csv", "/import NOPE")
    assert "没有商品 NOPE" in (await zh.expect("未导入")).plain
    assert await count(core, StockItem) == 0


async def test_a_void_file_reports_voided_missing_and_sold(core, shop, tmp_path):
    codes = await product_with_stock(core, tmp_path, sku="VIP", units=3)
    placed = await new_order(core, user_id=BUYER)
    assert await core.fulfiller.submit(sandbox_event(placed.order.number, 1500)) == PaymentOutcome.DELIVERED
    async with core.db.read() as session:
        sold = (await session.scalars(select(StockItem.id).where(StockItem.status == "sold"))).all()
    assert len(sold) == 1
    admin = shop.user(ADMIN, "en")
    data = ("\n".join([*codes, "NOT-A-CODE"]) + "\n").encode()
    await admin.send_document(data, "leaked.txt", "/void VIP")
    first = await admin.expect("checking the file")
    report = await admin.expect(lambda m: m.kind == "edit" and "voided:" in m.plain)
    assert report.message_id == first.message_id
    assert "2 voided, 0 already void, 1 not found, 1 already sold" in report.plain
    assert placed.order.number in report.plain
    assert await count(core, StockItem, StockItem.status == "void") == 2


async def test_wrong_captions_answer_the_usage_and_a_buyers_file_is_not_imported(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", units=0)
    admin = shop.user(ADMIN, "zh")
    await admin.send_document(b"A1\n", "codes.txt", "/import")
    assert "/import SKU" in (await admin.expect()).plain
    await admin.send_document(b"A1\n", "codes.txt")
    assert "/void SKU" in (await admin.expect()).plain
    await admin.send("/void VIP")
    assert "/import SKU" in (await admin.expect()).plain
    await admin.send_document(b"A1\n", "codes.xlsx", "/import VIP")
    assert ".txt" in (await admin.expect()).plain
    await admin.send_document(b"A1\n", "codes.txt", "/import VIP", file_size=50 * 2**20)
    assert "20 MB" in (await admin.expect("文件太大")).plain

    buyer = shop.user(BUYER, "zh")
    await buyer.send_document(b"FREE-CODE\n", "codes.txt", "/import VIP")
    answer = await buyer.expect()
    assert "导入" not in answer.plain
    assert await count(core, StockItem) == 0


# --- /help ------------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_help_shows_operators_their_commands_and_buyers_the_buyers_help(core, shop, lang):
    admin = shop.user(ADMIN, lang)
    await admin.send("/help")
    shown = await admin.expect()
    assert "/product_add" in shown.plain and "/import SKU" in shown.plain and "/order" in shown.plain
    assert "/queue" in shown.plain and "/tickets" in shown.plain  # the manual queue and support tickets
    assert shown.plain.startswith("🛠")
    buyer = shop.user(BUYER, lang)
    await buyer.send("/help")
    answer = await buyer.expect()
    assert answer.text == t(lang, "help") and "/product_add" not in answer.plain


# --- operators told of paid and failed orders -------------------------------------------------


async def paid_order(core: Core, quantity: int = 2, user_id: int = BUYER) -> str:
    placed = await new_order(core, quantity=quantity, user_id=user_id)
    outcome = await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))
    assert outcome == PaymentOutcome.DELIVERED
    return placed.order.number


async def admin_messages(core: Core, kind: str) -> int:
    return await count(core, OutboxMessage, OutboxMessage.kind == kind, OutboxMessage.chat_id == ADMIN)


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_operators_are_told_of_each_paid_order_once(core, shop, sender, tmp_path, lang):
    await product_with_stock(core, tmp_path, sku="VIP", units=5)
    admin = shop.user(ADMIN, lang)
    await admin.send("/start")  # the bot learns the operator's language
    await admin.expect()
    number = await paid_order(core)

    jobs = Jobs(core)
    assert await jobs.paid_orders() == 1
    await jobs.resign()  # a restart: the next scheduler tells nothing again
    jobs = Jobs(core)
    assert await jobs.paid_orders() == 0
    assert await admin_messages(core, "admin_order_paid") == 1
    admin.cursor = shop.mark()
    await sender.run_once()
    told = await admin.expect(number)
    assert "VIP membership × 2" in told.plain and "¥30.00" in told.plain and str(BUYER) in told.plain
    assert ("新订单已付款" if lang == "zh" else "Order paid") in told.plain
    assert ("机器人" if lang == "zh" else "channel bot") in told.plain

    other = await paid_order(core, quantity=1, user_id=BUYER + 1)
    assert await jobs.paid_orders() == 1
    admin.cursor = shop.mark()
    await sender.run_once()
    assert "¥15.00" in (await admin.expect(other)).plain


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_a_digest_tells_the_orders_paid_since_the_last_one_without_gaps_or_repeats(
    core, shop, sender, tmp_path, monkeypatch, lang
):
    monkeypatch.setattr(core.settings, "operator_order_notice", "digest")
    await product_with_stock(core, tmp_path, sku="VIP", units=6)
    admin = shop.user(ADMIN, lang)
    await admin.send("/start")
    await admin.expect()
    numbers = [await paid_order(core, quantity=1, user_id=BUYER + n) for n in range(3)]

    jobs = Jobs(core)
    assert await jobs.paid_orders() == 3
    assert await admin_messages(core, "admin_order_paid") == 0
    assert await admin_messages(core, "admin_orders_digest") == 1
    admin.cursor = shop.mark()
    await sender.run_once()
    digest = await admin.expect(numbers[0])
    assert all(number in digest.plain for number in numbers)
    assert ("共 3 单，合计 ¥45.00" if lang == "zh" else "3 orders, ¥45.00 in all") in digest.plain

    assert await jobs.paid_orders() == 0  # nothing new: no empty digest
    later = await paid_order(core, quantity=2, user_id=BUYER + 9)
    await jobs.resign()  # a restart: the new scheduler starts where the last one stopped
    assert await Jobs(core).paid_orders() == 1
    admin.cursor = shop.mark()
    await sender.run_once()
    second = await admin.expect(later)
    assert not any(number in second.plain for number in numbers)
    assert await admin_messages(core, "admin_orders_digest") == 2


async def test_notices_off_tells_nothing(core, tmp_path, monkeypatch):
    monkeypatch.setattr(core.settings, "operator_order_notice", "off")
    await product_with_stock(core, tmp_path, sku="VIP", units=1)
    await paid_order(core, quantity=1)
    assert await Jobs(core).paid_orders() == 0
    assert await count(core, OutboxMessage, OutboxMessage.chat_id == ADMIN) == 0


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_operators_are_told_of_a_failed_order_and_not_as_paid(core, shop, sender, tmp_path, lang):
    codes = await product_with_stock(core, tmp_path, sku="VIP", units=1)
    admin = shop.user(ADMIN, lang)
    await admin.send("/start")
    await admin.expect()
    placed = await new_order(core, quantity=1, user_id=BUYER)
    leaked = tmp_path / "leaked.txt"
    leaked.write_text(codes[0] + "\n")
    await core.stock.void_file("VIP", leaked)  # the reserved code is voided: nothing left to fill it
    outcome = await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))
    assert outcome == PaymentOutcome.FAILED

    assert await Jobs(core).paid_orders() == 1  # marked told, but as failed only
    assert await admin_messages(core, "admin_order_paid") == 0
    assert await admin_messages(core, "admin_order_failed") == 1
    admin.cursor = shop.mark()
    await sender.run_once()
    told = await admin.expect(placed.order.number)
    assert ("库存不足" if lang == "zh" else "stock ran out") in told.plain
    async with core.db.read() as session:
        assert await session.scalar(select(Order.status).where(Order.id == placed.order.id)) == "failed"


async def test_two_runs_at_once_tell_each_paid_order_once(core, tmp_path):
    """Two schedulers racing (a lease handed over mid-run): the conditional mark lets one tell each order."""
    await product_with_stock(core, tmp_path, sku="VIP", units=6)
    numbers = [await paid_order(core, quantity=1, user_id=BUYER + n) for n in range(6)]

    async def run() -> int:
        async with core.db.transaction() as session:
            return await paid_notices.tell_paid(session, [ADMIN], digest=False)

    told = await asyncio.gather(run(), run(), run())
    assert sum(told) == len(numbers)
    async with core.db.read() as session:
        payloads = (
            await session.scalars(select(OutboxMessage.payload).where(OutboxMessage.kind == "admin_order_paid"))
        ).all()
    assert sorted(json.loads(p)["number"] for p in payloads) == sorted(numbers)


async def test_a_backlog_in_each_mode_comes_as_one_digest(core, tmp_path, monkeypatch):
    monkeypatch.setattr(paid_notices, "EACH_LIMIT", 2)
    await product_with_stock(core, tmp_path, sku="VIP", units=3)
    for n in range(3):
        await paid_order(core, quantity=1, user_id=BUYER + n)
    assert await Jobs(core).paid_orders() == 3
    assert await admin_messages(core, "admin_order_paid") == 0
    assert await admin_messages(core, "admin_orders_digest") == 1


def test_the_notice_setting_is_checked_and_sets_the_jobs_interval(tmp_path):
    with pytest.raises(ValueError, match="each, digest or off"):
        make_settings(tmp_path, operator_order_notice="sometimes")
    plans = {}
    for mode in ("each", "digest", "off"):
        settings = make_settings(tmp_path, operator_order_notice=mode.upper(), operator_digest_minutes=15)
        jobs = Jobs(SimpleNamespace(settings=settings))  # type: ignore[arg-type]
        job = build_scheduler(jobs).get_job("paid_orders")
        plans[mode] = None if job is None else job.trigger.interval.total_seconds()
    assert plans == {"each": 10, "digest": 15 * 60, "off": None}


async def test_the_operator_menu_leads_to_the_products_and_back(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", units=1)
    admin = shop.user(ADMIN, "en")
    await admin.send("/admin")
    menu = await admin.expect(has_buttons)
    await admin.press(menu, "🛍 Products")
    listed = await admin.expect(lambda m: "Products" in m.plain and m.kind == "send")
    await admin.press(listed, "VIP membership")
    card = await admin.expect(lambda m: m.kind == "edit" and "Sellable: 1" in m.plain)
    await admin.press(card, "« Products")
    back = await admin.expect(lambda m: m.kind == "edit" and m.message_id == card.message_id)
    await admin.press(back, raw_t("en", "ops.btn_back"))
    await admin.expect(lambda m: m.kind == "edit" and m.button("🛍 Products") is not None)
