"""The sandbox beside a real payment method is for operators only (issue 15, item 11): a buyer is
never offered a way to pay nothing, and cannot reach one by forging a button or a URL. The sandbox
alone (the demo) stays offered to everyone."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import pytest
from markupsafe import escape
from sqlalchemy import func, select

from quanyi.bot.callbacks import MethodCb
from quanyi.core.models import Order
from quanyi.core.payments import build_payment_hub
from quanyi.core.platform.config import Settings
from quanyi.core.services import build_core
from quanyi.i18n import raw_t
from quanyi.webhooks import create_app
from tests.conftest import make_keyring, make_settings
from tests.helpers import new_order, product_with_stock
from tests.test_bot_chat import choose, open_product, shop, tg  # noqa: F401  (fixtures)
from tests.test_http_payments import FORM, SANDBOX_NOTIFY, epay_settings, sandbox_of

OPERATOR = 9000  # QUANYI_ADMIN_IDS in make_settings
BUYER = 1001
TOLD = str(escape(raw_t("en", "web.sandbox_operators_only")))  # as the page template escapes it


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return epay_settings(tmp_path)  # EPay, a real method, and the sandbox beside it


def test_beside_a_real_method_the_sandbox_is_offered_to_operators_only(tmp_path):
    hub = build_payment_hub(epay_settings(tmp_path), make_keyring())
    assert hub.choices(BUYER) == [("epay", "alipay"), ("epay", "wxpay")]
    assert hub.choices(None) == [("epay", "alipay"), ("epay", "wxpay")]
    assert hub.choices(OPERATOR) == [("epay", "alipay"), ("epay", "wxpay"), ("sandbox", "sandbox")]
    assert not hub.offered("sandbox", BUYER) and hub.offered("sandbox", OPERATOR)
    # Telegram Stars is real money too.
    stars = build_payment_hub(make_settings(tmp_path, bot_token="123456:TEST"), make_keyring())
    assert [method for method, _ in stars.choices(BUYER)] == ["stars"]
    assert [method for method, _ in stars.choices(OPERATOR)] == ["stars", "sandbox"]


def test_the_sandbox_alone_the_demo_is_offered_to_everyone(tmp_path):
    hub = build_payment_hub(make_settings(tmp_path), make_keyring())
    assert hub.choices(BUYER) == hub.choices(OPERATOR) == [("sandbox", "sandbox")]
    assert hub.offered("sandbox", None)


async def test_a_buyer_sees_no_sandbox_button_and_a_forged_one_places_no_order(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, units=5)
    buyer = shop.user(BUYER, "en")
    methods = await choose(buyer, await open_product(buyer, "VIP membership"), "2")
    labels = [b["text"] for b in methods.buttons()]
    assert raw_t("en", "method_sandbox") not in labels
    assert raw_t("en", "method_epay_alipay") in labels

    # The button a modified client could send anyway.
    update = buyer.callback_update(methods, raw_t("en", "method_epay_alipay"))
    product_id = MethodCb.unpack(update["callback_query"]["data"]).id
    update["callback_query"]["data"] = MethodCb(
        id=product_id, n=2, method="sandbox", option="sandbox", key="forged"
    ).pack()
    await shop.push_update(update)
    answer = await shop.callback_answer(update["callback_query"]["id"])
    assert answer.get("show_alert") and answer.get("text") == raw_t("en", "no_methods")
    async with core.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 0

    operator = shop.user(OPERATOR, "en")
    methods = await choose(operator, await open_product(operator, "VIP membership"), "1")
    assert raw_t("en", "method_sandbox") in [b["text"] for b in methods.buttons()]


async def test_the_sandbox_page_button_and_notify_refuse_a_buyers_order(core, tmp_path):
    client = create_app(core).test_client()
    await product_with_stock(core, tmp_path, units=2)
    # Placed as a crafted request would (the chat no longer offers it): the pages are the backstop.
    placed = await new_order(core, method="sandbox", user_id=BUYER)
    url = f"/pay/sandbox/{placed.order.number}"
    en = {"Accept-Language": "en"}

    page = await client.get(url, headers=en)
    body = await page.get_data(as_text=True)
    assert page.status_code == 403 and TOLD in body and "<button" not in body
    assert (await client.post(url, headers=en)).status_code == 403
    # Even a correctly signed notify (only our own server could sign it) pays nothing.
    params = sandbox_of(core).callback_params(placed.order.number, "15.00", "CNY")
    response = await client.post(SANDBOX_NOTIFY, data=urlencode(params).encode(), headers=FORM)
    assert (response.status_code, await response.get_data(as_text=True)) == (400, "fail")
    async with core.db.read() as session:
        assert await session.scalar(select(Order.status).where(Order.number == placed.order.number)) == "pending"

    # An operator's sandbox order still pays.
    mine = await new_order(core, method="sandbox", user_id=OPERATOR)
    assert (await client.get(f"/pay/sandbox/{mine.order.number}", headers=en)).status_code == 200
    params = sandbox_of(core).callback_params(mine.order.number, "15.00", "CNY")
    response = await client.post(SANDBOX_NOTIFY, data=urlencode(params).encode(), headers=FORM)
    assert (response.status_code, await response.get_data(as_text=True)) == (200, "success")


async def test_the_demo_sandbox_pages_serve_any_buyer(db, keyring, tmp_path):
    demo = build_core(make_settings(tmp_path), db=db, keyring=keyring)  # the sandbox, no real method
    client = create_app(demo).test_client()
    await product_with_stock(demo, tmp_path, units=1)
    placed = await new_order(demo, method="sandbox", user_id=BUYER)
    page = await client.get(f"/pay/sandbox/{placed.order.number}")
    assert page.status_code == 200 and "<button" in await page.get_data(as_text=True)
    params = sandbox_of(demo).callback_params(placed.order.number, "15.00", "CNY")
    response = await client.post(SANDBOX_NOTIFY, data=urlencode(params).encode(), headers=FORM)
    assert (response.status_code, await response.get_data(as_text=True)) == (200, "success")
