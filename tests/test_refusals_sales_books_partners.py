"""Refusals of sales, books and partners in the operator's language (issue 17, one language per
message): core's English message stays for the CLI and the API, a chat shows the refusal's own
text in zh or en, and a zh reply carries no English words but the values it names."""

from __future__ import annotations

import pytest

from quanyi.bot.buyer.checkout import _order_refusal
from quanyi.core.errors import InsufficientBalance, InvalidInput
from quanyi.core.sales.orders import Buyer
from quanyi.core.services import Core
from quanyi.i18n import raw_t
from tests.fakebot import FakeTelegram
from tests.test_admin_chat import delivered_order
from tests.test_bot_chat import shop, tg  # noqa: F401  (fixtures)
from tests.test_links_chat import add_recharge_product
from tests.test_one_language import CJK, NAMES, _words
from tests.test_reconcile import paid_orders, statement, statement_rows

ADMIN = 9000  # make_settings puts this id in QUANYI_ADMIN_IDS

# The chat flow is the same on both backends; the core tests run on both.
pytestmark = pytest.mark.parametrize("backend", ["sqlite"])


def said(lang: str, reply: str, key: str, english: str, **values: object) -> None:
    """``reply`` shows the refusal ``key`` in ``lang``; in zh its line has no English word but the
    values, and core's English message is nowhere; in en no Chinese."""
    text = raw_t(lang, key, **values)
    assert text in reply, reply
    if lang == "zh":
        # The refusal's line (a usage line after it spells a command's arguments as typed).
        rest = next(line for line in reply.splitlines() if text in line)
        for value in values.values():
            rest = rest.replace(str(value), " ")
        assert english not in reply
        assert set(_words(rest)) - NAMES == set(), reply
    else:
        assert not CJK.search(reply), reply


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_partner_refusals_in_the_operators_language(core: Core, shop: FakeTelegram, lang: str) -> None:
    admin = shop.user(ADMIN, lang)
    await admin.send("/partner_new acme Acme")
    await admin.expect(lambda m: "acme" in m.plain and "ak_" in m.plain)

    await admin.send("/partner_new acme Acme again")
    said(lang, (await admin.expect()).plain, "err_partners.exists", "already exists", partner="acme")

    await admin.send("/partner_topup nobody 10.00")
    said(lang, (await admin.expect()).plain, "err_partners.no_partner", "no partner", partner="nobody")

    await admin.send("/partner_topup acme -20.00")  # a balance of ¥0.00 cannot give back ¥20.00
    reply = (await admin.expect()).plain
    said(lang, reply, "err_partners.balance_short", "is short of", held="¥0.00", wanted="¥20.00")

    await admin.send("/partner_revoke acme ak_nothere")
    reply = (await admin.expect()).plain
    said(lang, reply, "err_partners.no_key", "has no key", partner="acme", access_key="ak_nothere")

    await admin.send("/partner_webhook acme ftp://example.com/hook")
    said(lang, (await admin.expect()).plain, "err_partners.bad_webhook_url", "webhook URL: an http(s)")


async def test_a_partner_s_short_balance_keeps_its_english_message_and_figures(core: Core) -> None:
    await core.partners.add_partner("acme", "Acme")
    with pytest.raises(InsufficientBalance) as caught:
        await core.partners.top_up("acme", "-20.00", note="test")
    assert caught.value.message == "balance ¥0.00 is short of ¥20.00"
    assert caught.value.details["balance"] == 0 and caught.value.details["needed"] == 2000


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_a_statement_for_an_unknown_provider_is_refused_in_the_operators_language(
    core: Core, shop: FakeTelegram, tmp_path, lang: str
) -> None:
    await paid_orders(core, tmp_path, 1)
    rows = await statement_rows(core)
    admin = shop.user(ADMIN, lang)
    await admin.send_document(statement(rows), "statement.csv", "/reconcile alipay")
    reply = (await admin.expect()).plain
    choices = ", ".join(sorted(core.payments.names()))
    said(lang, reply, "err_books.no_method", "no payment method", method="alipay", choices=choices)


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_a_refund_without_a_reason_is_refused_in_the_operators_language(
    core: Core, shop: FakeTelegram, tmp_path, lang: str
) -> None:
    order = await delivered_order(core, tmp_path)
    admin = shop.user(ADMIN, lang)
    await admin.send(f"/order {order.number}")
    sheet = await admin.expect(order.number)
    await admin.press(sheet, raw_t(lang, "admin_refund_order"))
    await admin.expect(order.number)
    await admin.send("   ")
    said(lang, (await admin.expect()).plain, "err_sales.refund_needs_reason", "a refund needs a reason")


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_a_buyer_refused_for_another_reason_than_the_quantity_is_told_that_reason(core: Core, lang: str) -> None:
    # A forged quantity on a recharge (one account per order): core's refusal, in the buyer's words,
    # not "not a valid quantity".
    await add_recharge_product(core)
    [entry] = await core.sales.buyer_catalogue(1001)
    with pytest.raises(InvalidInput) as caught:
        await core.sales.place_chat_order(Buyer(1001, 1001, lang), entry.id, 2, "sandbox", account="13800138000")
    toast = _order_refusal(lang, caught.value, core, plain=True)
    said(lang, toast, "err_sales.recharge_one", "credits one account", max_quantity=1)
    assert toast.startswith(raw_t(lang, "order_refused", reason="").strip())
    assert toast != raw_t(lang, "bad_quantity", max=core.settings.max_quantity)
