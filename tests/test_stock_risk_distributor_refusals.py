"""Refusals of the stock, risk and distributor domains said in the reader's language (issue 17,
"one language per message"): an operator's stock file, channel and blocklist refusals and a
distributor's risk refusal reach a Chinese reader in Chinese only and an English reader in English."""

from __future__ import annotations

from pathlib import Path

import pytest

from quanyi.core.platform.config import Settings
from quanyi.i18n import raw_t
from tests.conftest import make_settings
from tests.fakebot import BotMessage
from tests.helpers import product_with_stock
from tests.test_agent_chat import ALICE, join, open_panel, set_up_seller
from tests.test_bot_chat import shop, tg  # noqa: F401  (fixtures)
from tests.test_one_language import CJK, NAMES, _words

ADMIN = 9000  # make_settings puts this id in QUANYI_ADMIN_IDS

# The chat flow is the same on both backends; the core tests run on both.
pytestmark = pytest.mark.parametrize("backend", ["sqlite"])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, outbox_per_chat_interval=0.0)


def one_language(lang: str, message: BotMessage, *typed: str) -> None:
    """The reply is in ``lang`` alone: no English words in a Chinese one (less what the reader
    typed and the shop's names), no Chinese in an English one."""
    if lang == "zh":
        words = set(_words(message.text)) - NAMES - set(typed)
        assert not words, (words, message.plain)
        assert CJK.search(message.plain)
    else:
        assert not CJK.search(message.plain), message.plain


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_a_refused_stock_file_and_its_refused_lines_are_said_in_the_operators_language(
    core, shop, tmp_path, lang
):
    await product_with_stock(core, tmp_path, sku="VIP", units=0)
    admin = shop.user(ADMIN, lang)

    # A line of three fields: the file is refused whole, the line named.
    await admin.send_document(b"CODE-1\nS2 CODE-2 extra\n", "codes.txt", "/import VIP")
    refused = await admin.expect(lambda m: raw_t(lang, "err_stock.txt_fields", found=3) in m.plain)
    assert raw_t(lang, "phoneops.at_line", line=2, reason=raw_t(lang, "err_stock.txt_fields", found=3)) in refused.plain
    one_language(lang, refused, "VIP")

    # Lines left out of an import that went ahead: each said in the operator's words.
    await admin.send_document(
        b"serial,secret,expires_at\nS1,CODE-1,2001-01-01\nS2,,\nS3,CODE-3,\n", "codes.csv", "/import VIP"
    )
    done = await admin.expect(lambda m: raw_t(lang, "err_stock.line_expired") in m.plain)
    assert raw_t(lang, "err_stock.line_empty") in done.plain
    one_language(lang, done, "VIP")

    # A product that does not exist.
    await admin.send_document(b"CODE-9\n", "codes.txt", "/import NOPE")
    missing = await admin.expect(lambda m: raw_t(lang, "err_stock.no_product", sku="NOPE") in m.plain)
    one_language(lang, missing, "NOPE")


@pytest.mark.parametrize(
    ("lang", "said"),
    [("zh", "渠道代码须为 2 到 32 个小写字母、数字、_ 或 -。"), ("en", "A channel code is 2 to 32 lowercase letters")],
)
async def test_a_refused_channel_code_is_said_in_the_operators_language(core, shop, lang, said):
    admin = shop.user(ADMIN, lang)
    await admin.send("/channel_add x 小店")
    refused = await admin.expect(said)
    one_language(lang, refused)


@pytest.mark.parametrize(
    ("lang", "said"),
    [
        ("zh", "用户须为 Telegram 用户 ID（一个数字），而不是“12-34”。"),
        ("en", "A user is a Telegram user id (a number)"),
    ],
)
async def test_a_refused_block_is_said_in_the_operators_language(core, shop, lang, said):
    admin = shop.user(ADMIN, lang)
    await admin.send("/block user 12-34 刷单")
    refused = await admin.expect(said)
    one_language(lang, refused)
    assert await core.risk.blocks() == []


@pytest.mark.parametrize(("lang", "said"), [("zh", "购买数量超出限制"), ("en", "the quantity is over the limit")])
async def test_a_distributors_bulk_buy_refused_by_a_rule_says_the_rules_reason_in_their_language(
    core, shop, tmp_path, lang, said
):
    await product_with_stock(core, tmp_path, sku="VIP", price="15.00", units=6)
    alice = await join(shop, core, ALICE, "Alice", lang=lang)
    await set_up_seller(core, allocated=4, balance="100.00")
    await core.risk.add_rule(name="bulk-cap", metric="quantity", threshold=2, action="block")

    panel = await open_panel(alice)
    await alice.press(panel, raw_t(lang, "agent.bulk_button"))
    menu = await alice.expect(lambda m: m.kind == "edit" and len(m.buttons()) > 1)
    await alice.press(menu, "VIP")
    await alice.expect(lambda m: "1" in m.plain and "/cancel" in m.plain)
    await alice.send("3")
    confirm = await alice.expect(lambda m: bool(m.buttons()))
    await alice.press(confirm, "✅")
    refused = await alice.expect(lambda m: m.kind == "edit" and "⛔" in m.plain)
    assert said in refused.plain and ".." not in refused.plain and "。。" not in refused.plain
    one_language(lang, refused)
