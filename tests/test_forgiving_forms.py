"""Forms that forgive, in the operator and distributor chats: a refused value asks again instead
of ending the form, commands without arguments answer their usage, ``/order`` without a number
asks for one, and every menu screen has a way back to its parent."""

from __future__ import annotations

from pathlib import Path

import pytest

from quanyi.core.platform.config import Settings
from quanyi.i18n import raw_t, t
from tests.conftest import make_settings
from tests.fakebot import BotMessage, FakeUser, visible_text
from tests.helpers import product_with_stock
from tests.test_admin_chat import delivered_order, refunds
from tests.test_agent_chat import join, open_panel
from tests.test_bot_chat import shop, tg  # noqa: F401  (fixtures)
from tests.test_ops_chat import add_partner, open_detail, pool
from tests.test_withdrawals import distributors_row, grant, has_button

ADMIN = 9000  # make_settings puts this id in QUANYI_ADMIN_IDS
AGENT = 2101  # the distributor tests.test_withdrawals.distributors_row looks up

# The chat flow is the same on both backends; the core tests run on both.
pytestmark = pytest.mark.parametrize("backend", ["sqlite"])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, outbox_per_chat_interval=0.0)


def plain(lang: str, key: str, **values: str) -> str:
    return visible_text(t(lang, key, **values), "HTML")


def callbacks(message: BotMessage) -> list[str]:
    return [str(b.get("callback_data", "")) for b in message.buttons()]


# --- a refused value asks again --------------------------------------------------------------


async def test_an_allocation_over_what_is_left_asks_again_and_the_next_count_succeeds(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, units=10)
    await add_partner(core)
    admin = shop.user(ADMIN, "en")

    detail = await open_detail(admin, "📦 VIP membership", "en")
    await admin.press(detail, "➕ partner1")
    await admin.expect("How many units")
    await admin.send("15")  # only 10 are unallocated
    refused = await admin.expect()
    assert refused.plain == plain("en", "ops.err.pool_short", sku="VIP", available="10")
    await admin.send("4")
    await admin.expect("Allocated 4 × VIP to partner1")
    level = await pool(core)
    assert (level.allocated_remaining, level.unallocated) == (4, 6)

    # Taking back more than the quota has left is refused the same way, and forgiven.
    detail = await open_detail(admin, "📦 VIP membership", "en")
    await admin.press(detail, "↩️ Take back partner1")
    await admin.expect("How many units")
    await admin.send("9")
    refused = await admin.expect()
    assert "only 4 units of VIP left" in refused.plain
    await admin.send("3")
    await admin.expect("Took 3 × VIP back from partner1")
    level = await pool(core)
    assert (level.allocated_remaining, level.unallocated) == (1, 9)

    # Once done, the form is closed: a number is no longer read as units.
    await admin.send("2")
    assert "Allocated" not in (await admin.expect()).plain
    assert (await pool(core)).allocated_remaining == 1


async def test_cancel_ends_a_refused_allocation_form(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, units=10)
    await add_partner(core)
    admin = shop.user(ADMIN, "zh")

    detail = await open_detail(admin, "📦 VIP membership", "zh")
    await admin.press(detail, "➕ partner1")
    await admin.expect("分配多少件")
    await admin.send("50")
    await admin.expect("未分配的只剩 10 件")
    await admin.send("/cancel")
    assert (await admin.expect()).plain == plain("zh", "ops.cancelled")
    await admin.send("4")
    assert "已给" not in (await admin.expect()).plain
    assert (await pool(core)).unallocated == 10


async def test_a_bad_withdrawal_amount_asks_again_and_the_form_goes_on(core, shop):
    alice = await join(shop, core, AGENT, "Alice")
    await grant(core, await distributors_row(core), 10_000)

    panel = await open_panel(alice)
    await alice.press(panel, "💸 Withdraw")
    start = await alice.expect(has_button("wd:src:"))
    await alice.press(start, "From commission")
    await alice.expect("How much")
    for bad in ("abc", "0", "-5", "1.234"):
        await alice.send(bad)
        assert "How much" not in (await alice.expect()).plain, bad
    await alice.send("500")  # more than the ¥100.00 there is
    assert "only ¥100.00 is available" in (await alice.expect()).plain
    await alice.send("30")
    await alice.expect("payout account")


async def test_a_refund_without_a_reason_asks_again_and_cancel_ends_the_form(core, shop, tmp_path):
    order = await delivered_order(core, tmp_path)
    admin = shop.user(ADMIN, "en")
    await admin.send(f"/order {order.number}")
    sheet = await admin.expect(order.number)

    await admin.press(sheet, raw_t("en", "admin_refund_order"))
    await admin.expect("reason for refunding")
    await admin.send("   ")
    assert "needs a reason" in (await admin.expect()).plain
    await admin.send("/cancel")  # never taken as the reason
    assert (await admin.expect()).plain == plain("en", "admin_cancelled")
    assert await refunds(core) == 0

    await admin.press(sheet, raw_t("en", "admin_refund_order"))
    await admin.expect("reason for refunding")
    await admin.send(" ")
    await admin.expect("needs a reason")
    await admin.send("the code does not redeem")
    await admin.expect("refunded (paid back by the provider)")
    assert await refunds(core) == 1


# --- commands without arguments answer their usage --------------------------------------------


USAGES = [
    ("/allocate", "ops.usage_allocate", {}),
    ("/takeback", "ops.usage_takeback", {}),
    ("/threshold", "ops.usage_threshold", {}),
    ("/channel_add", "ops.usage_channel_add", {}),
    ("/channel_price", "ops.usage_channel_price", {}),
    ("/topup", "ops.usage_topup", {}),
    ("/partner_new", "partners.new_usage", {}),
    ("/partner_key", "partners.key_usage", {}),
    ("/partner_revoke", "partners.revoke_usage", {}),
    ("/partner_topup", "partners.topup_usage", {}),
    ("/partner_webhook", "partners.webhook_usage", {}),
    ("/coupon_on", "pricing_ops.usage_by_id", {"command": "coupon_on"}),
    ("/coupon_off", "pricing_ops.usage_by_id", {"command": "coupon_off"}),
    ("/coupon_export", "pricing_ops.usage_by_id", {"command": "coupon_export"}),
    ("/coupon_import", "pricing_ops.usage_coupon_import", {}),
    ("/coupon_new", "pricing_ops.usage_coupon_new", {}),
    ("/promo_on", "pricing_ops.usage_by_id", {"command": "promo_on"}),
    ("/promo_off", "pricing_ops.usage_by_id", {"command": "promo_off"}),
    ("/promo_new", "pricing_ops.usage_promo_new", {}),
    ("/bundle_new", "pricing_ops.usage_bundle_new", {}),
    ("/bundle_parts", "pricing_ops.usage_bundle_parts", {}),
    ("/risk_rule", "risk.rule_usage", {}),
    ("/block", "risk.block_usage", {}),
    ("/unblock", "risk.unblock_usage", {}),
    ("/verify", "verify.prompt", {}),
    ("/order", "admin_ask_order", {}),
]


@pytest.mark.parametrize("lang", ["zh", "en"])
@pytest.mark.parametrize(("command", "key", "values"), USAGES, ids=[u[0] for u in USAGES])
async def test_a_command_without_arguments_answers_its_usage(core, shop, lang, command, key, values):
    admin = shop.user(ADMIN, lang)
    await admin.send(command)
    assert (await admin.expect()).plain == plain(lang, key, **values)


# --- /order without a number ------------------------------------------------------------------


async def test_order_without_a_number_asks_for_one_and_shows_the_order_typed_next(core, shop, tmp_path):
    order = await delivered_order(core, tmp_path)
    admin = shop.user(ADMIN, "en")

    await admin.send("/order")
    await admin.expect("type the order number")
    await admin.send("NOPE")  # an unknown number asks again
    assert "Type another order number" in (await admin.expect()).plain
    await admin.send(order.number.lower())
    sheet = await admin.expect(order.number)
    assert "¥30.00" in sheet.plain and "Sandbox pay" in sheet.plain
    # The form is done: the next text is not taken as an order number.
    await admin.send(order.number)
    assert "¥30.00" not in (await admin.expect()).plain


async def test_cancel_ends_the_order_form(core, shop, tmp_path):
    order = await delivered_order(core, tmp_path)
    admin = shop.user(ADMIN, "zh")
    await admin.send("/order")
    await admin.expect("请输入订单号")
    await admin.send("/cancel")
    assert (await admin.expect()).plain == plain("zh", "admin_cancelled")
    await admin.send(order.number)
    assert "¥30.00" not in (await admin.expect()).plain


# --- every menu has a way back ----------------------------------------------------------------


async def back_to_menu(admin: FakeUser, screen: BotMessage) -> None:
    await admin.press(screen, raw_t("en", "ops.btn_back"))
    menu = await admin.expect(lambda m: m.kind == "edit" and m.message_id == screen.message_id)
    assert raw_t("en", "ops.btn_stock") in [b["text"] for b in menu.buttons()]


async def test_the_risk_screen_leads_back_to_the_operator_menu(core, shop):
    admin = shop.user(ADMIN, "en")
    await admin.send("/admin")
    menu = await admin.expect(lambda m: bool(m.buttons()))
    await admin.press(menu, raw_t("en", "risk.btn_menu"))
    risk = await admin.expect(lambda m: m.kind == "edit" and m.message_id == menu.message_id)
    assert "op:menu" in callbacks(risk)
    await back_to_menu(admin, risk)


async def test_the_risk_command_s_screen_leads_to_the_operator_menu(core, shop):
    admin = shop.user(ADMIN, "en")
    await admin.send("/risk")
    risk = await admin.expect(lambda m: bool(m.buttons()))
    await back_to_menu(admin, risk)


async def test_the_report_screen_leads_back_to_the_operator_menu(core, shop):
    admin = shop.user(ADMIN, "en")
    await admin.send("/admin")
    menu = await admin.expect(lambda m: bool(m.buttons()))
    await admin.press(menu, raw_t("en", "reports.btn_menu"))
    report = await admin.expect(lambda m: m.kind == "send" and "op:menu" in callbacks(m))
    await back_to_menu(admin, report)


async def test_the_withdraw_screen_leads_back_to_the_agent_panel(core, shop):
    alice = await join(shop, core, AGENT, "Alice")
    panel = await open_panel(alice)
    await alice.press(panel, "💸 Withdraw")
    start = await alice.expect(has_button("wd:src:"))
    await alice.press(start, raw_t("en", "agent.panel_button"))
    back = await alice.expect(lambda m: m.kind == "edit" and m.message_id == start.message_id)
    assert "ag:prices:0:0" in callbacks(back)
