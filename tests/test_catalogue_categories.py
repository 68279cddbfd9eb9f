"""The bot's catalogue groups products by the category an operator sets (`quanyi product update SKU
--category NAME`), flat as before when none has one; an optional shop notice stands above it; and
/orders shows the payment's transaction number that /paysupport asks for. Through the real
dispatcher, in zh and en."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from quanyi.core.catalog.service import ProductChanges
from quanyi.core.platform.config import Settings
from quanyi.core.sales.fulfilment import PaymentOutcome
from quanyi.core.services import Core
from quanyi.i18n import raw_t, t
from tests.conftest import make_settings
from tests.fakebot import BotMessage, FakeUser, visible_text
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_bot_chat import catalogue_shown, shop, tg  # noqa: F401  (fixtures)
from tests.test_cli import LocalCli
from tests.test_cli_channels import _open
from tests.test_cli_pricing import _products

chat = pytest.mark.parametrize("backend", ["sqlite"])  # chat texts do not depend on the database
BUYER = 1001


def plain(lang: str, key: str, **values: object) -> str:
    return visible_text(t(lang, key, **values), "HTML")


def labels(message: BotMessage) -> list[str]:
    return [b["text"] for b in message.buttons()]


async def three_products(core: Core, tmp_path: Path) -> None:
    await product_with_stock(core, tmp_path, sku="VIP", units=5)
    await product_with_stock(core, tmp_path, sku="MUSIC", price="9.90", units=2)
    await product_with_stock(core, tmp_path, sku="GAME", price="30.00", units=1)


async def set_category(core: Core, sku: str, category: str) -> None:
    # The use case `quanyi product update SKU --category NAME` calls (its CLI test is below).
    await core.catalog.update_product(sku, ProductChanges(category=category))


async def open_catalogue(user: FakeUser) -> BotMessage:
    await user.send("/start")
    return await user.expect(catalogue_shown_or_grouped)


def catalogue_shown_or_grouped(message: BotMessage) -> bool:
    return any(b.get("callback_data", "").startswith(("p:", "cg:")) for b in message.buttons())


@chat
@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_the_catalogue_groups_products_by_category_with_a_way_back(core, shop, tmp_path, lang):
    await three_products(core, tmp_path)
    await set_category(core, "VIP", "影音会员")
    await set_category(core, "MUSIC", "影音会员")
    buyer = shop.user(BUYER, lang)

    catalogue = await open_catalogue(buyer)
    sold = {"zh": "剩", "en": "left"}[lang]
    game = "GAME membership · ¥30.00 · 剩 1" if lang == "zh" else "GAME membership · ¥30.00 · 1 left"
    assert labels(catalogue) == [
        raw_t(lang, "category.button", name="影音会员", count=2),
        game,  # a product without a category is listed as before
        raw_t(lang, "support.button"),
    ]
    await buyer.press(catalogue, raw_t(lang, "category.button", name="影音会员", count=2))
    group = await buyer.expect(lambda m: m.kind == "edit")
    assert group.plain.startswith("📂 影音会员")
    back = raw_t(lang, "back_button")
    assert [label.split(" · ")[0] for label in labels(group)] == ["VIP membership", "MUSIC membership", back]
    assert sold in labels(group)[0]

    # A product opened from its category goes back to the category, and the category to the catalogue.
    await buyer.press(group, "VIP membership")
    card = await buyer.expect(lambda m: m.kind == "edit" and "VIP membership" in m.plain)
    await buyer.press(card, raw_t(lang, "back_button"))
    assert (await buyer.expect(lambda m: m.kind == "edit")).plain.startswith("📂 影音会员")
    await buyer.press(group, raw_t(lang, "back_button"))
    assert labels(await buyer.expect(lambda m: m.kind == "edit"))[0].startswith("📂 影音会员")


@chat
async def test_without_categories_the_catalogue_is_flat_and_a_category_emptied_meanwhile_is_explained(
    core, shop, tmp_path
):
    await three_products(core, tmp_path)
    await set_category(core, "GAME", "游戏")
    buyer = shop.user(BUYER, "zh")
    catalogue = await open_catalogue(buyer)
    assert labels(catalogue)[0] == "📂 游戏（1）"

    await set_category(core, "GAME", "")  # `--category ""` clears it: the catalogue is flat again
    answer = await shop.callback_answer(await buyer.press(catalogue, "📂 游戏（1）"))  # a stale button
    assert answer["text"] == raw_t("zh", "category.empty") and answer["show_alert"]
    flat = await open_catalogue(buyer)
    assert labels(flat) == [
        "VIP membership · ¥15.00 · 剩 5",
        "MUSIC membership · ¥9.90 · 剩 2",
        "GAME membership · ¥30.00 · 剩 1",
        raw_t("zh", "support.button"),
    ]


# --- the shop notice ---------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path, shop_notice="春节期间发货可能延迟 <请耐心等待>", shop_notice_en="Deliveries may be late this week."
    )


@chat
@pytest.mark.parametrize(
    ("lang", "notice"),
    [("zh", "📢 春节期间发货可能延迟 <请耐心等待>"), ("en", "📢 Deliveries may be late this week.")],
)
async def test_the_shop_notice_stands_above_the_catalogue_in_the_buyers_language(core, shop, tmp_path, lang, notice):
    await product_with_stock(core, tmp_path, units=1)
    buyer = shop.user(BUYER, lang)
    catalogue = await open_catalogue(buyer)
    assert catalogue.plain.startswith(notice + "\n\n" + plain(lang, "catalogue_title"))
    # Back to the catalogue from a product: the notice is there again.
    await buyer.press(catalogue, "VIP membership")
    card = await buyer.expect(lambda m: m.kind == "edit")
    await buyer.press(card, raw_t(lang, "back_button"))
    assert (await buyer.expect(lambda m: m.kind == "edit")).plain.startswith(notice)


@chat
async def test_without_an_english_notice_everyone_sees_the_one_notice(core, shop, tmp_path):
    core.settings = core.settings.model_copy(update={"shop_notice": "Open 9:00-23:00", "shop_notice_en": ""})
    await product_with_stock(core, tmp_path, units=1)
    catalogue = await open_catalogue(shop.user(BUYER, "en"))
    assert catalogue.plain.startswith("📢 Open 9:00-23:00\n\n")


# --- the transaction number on the order -----------------------------------------------------


@chat
@pytest.mark.parametrize(("lang", "line"), [("zh", "  交易号 SBX-777"), ("en", "  transaction SBX-777")])
async def test_orders_show_the_transaction_number_paysupport_asks_for(core, shop, tmp_path, lang, line):
    await product_with_stock(core, tmp_path, units=3)
    paid = await new_order(core, quantity=1, user_id=BUYER)
    event = sandbox_event(paid.order.number, paid.order.amount, txn="SBX-777")
    assert await core.fulfiller.submit(event) == PaymentOutcome.DELIVERED
    unpaid = await new_order(core, quantity=1, user_id=BUYER)
    buyer = shop.user(BUYER, lang)
    await buyer.send("/orders")
    listed = (await buyer.expect(paid.order.number)).plain.splitlines()
    row = next(n for n, text in enumerate(listed) if paid.order.number in text)
    assert listed[row + 1] == line
    unpaid_row = next(n for n, text in enumerate(listed) if unpaid.order.number in text)
    assert unpaid_row + 1 == len(listed) or "SBX" not in listed[unpaid_row + 1]  # nothing paid: no number


# --- the operator's command ---------------------------------------------------------------------


async def test_product_update_category_sets_and_clears_the_catalogue_group(tmp_path, monkeypatch):
    runner = LocalCli(tmp_path)
    for key in [k for k in os.environ if k.startswith("QUANYI_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("QUANYI_DATA_DIR", str(runner.data_dir))
    monkeypatch.chdir(tmp_path)
    await _products(tmp_path, ("VIP", "15.00", None), ("MUS", "10.00", None))

    assert runner.ok("product", "update", "VIP", "--category", "影音会员").startswith("updated VIP:")
    assert re.search(r"^VIP\s.*\s影音会员\s+VIP month$", runner.ok("product", "list"), re.M)
    core = await _open(tmp_path)
    try:
        assert {e.sku: e.category for e in await core.sales.buyer_catalogue(BUYER)} == {"VIP": "影音会员", "MUS": None}
    finally:
        await core.close()
    assert runner.ok("product", "update", "VIP", "--category", "").startswith("updated VIP:")
    core = await _open(tmp_path)
    try:
        assert {e.sku: e.category for e in await core.sales.buyer_catalogue(BUYER)} == {"VIP": None, "MUS": None}
    finally:
        await core.close()
    assert "at most 64 characters" in runner.fails("product", "update", "VIP", "--category", "x" * 65)
