"""The people pages in a real browser (issue 18, item 7): an operator invites a distributor past
the no-margin warning and credits its balance; creates a partner key and sees its secret once;
creates a coupon on the offers page. Screenshots for docs/console/."""

from __future__ import annotations

import re

from sqlalchemy import select

from quanyi.core.catalog.service import NewCoupon
from quanyi.core.distributors import accounts as distributors
from quanyi.core.models import DistributorInvite, Partner, PartnerWebhook, utcnow
from quanyi.core.services import Core
from tests.browser import (  # noqa: F401  (fixtures)
    backend,  # noqa: F401  (SQLite only)
    browser,
    new_page,
    served,
    shoot,
    sign_in,
)
from tests.helpers import new_order, product_with_stock
from tests.test_commission_chain import paid
from tests.test_commissions import LEAF, three_levels
from tests.test_distributors import refer

NEWCOMER = 6060


async def test_an_operator_invites_a_distributor_past_the_warning_and_credits_its_balance(
    core: Core, served, browser, tmp_path
):
    await product_with_stock(core, tmp_path, price="20.00", units=20)
    await three_levels(core)
    leaf = await core.distributors.card(str(LEAF))
    async with core.db.read() as session:
        found = await distributors.get_by_user(session, LEAF)
    assert found is not None and leaf.distributor.user_id == LEAF
    await refer(core, 1001, found)
    await paid(core, 1001)
    page = await new_page(browser)
    await sign_in(page, core)
    await page.goto(f"{served}/admin/distributors")
    await page.fill("[data-testid=invite-form] input[name=tier]", "gold")
    await page.fill("[data-testid=invite-form] input[name=invite_limit]", "3")
    await page.click("[data-testid=invite-form] button[type=submit]")
    warning = await page.wait_for_selector("[data-testid=no-margin]")
    assert "gold" in await warning.inner_text()
    await page.click("[data-testid=no-margin] button[type=submit]")
    link = await (await page.wait_for_selector("[data-testid=invite-link]")).inner_text()
    async with core.db.read() as session:
        invite = (await session.scalars(select(DistributorInvite).where(DistributorInvite.tier == "gold"))).one()
    assert invite.token in link
    async with core.db.transaction() as session:
        await distributors.accept_invite(session, invite.token, user_id=NEWCOMER, name="New Shop", currency="CNY")
    await page.goto(f"{served}/admin/distributors")
    await page.click(f"tr[data-distributor='{NEWCOMER}'] a")
    await page.fill("[data-testid=balance-form] input[name=amount]", "300.00")
    await page.fill("[data-testid=balance-form] input[name=note]", "bank ref 8812")
    await page.click("[data-testid=balance-form] button[type=submit]")
    await page.wait_for_selector("[data-testid=notice]")
    assert await page.inner_text("[data-testid=balance]") == "¥300.00"
    assert "bank ref 8812" in await page.inner_text("[data-testid=balance-lines]")
    await page.goto(f"{served}/admin/distributors")
    levels = await page.eval_on_selector_all(
        "[data-testid=tree] tr[data-level]", "rows => rows.map(r => r.dataset.level)"
    )
    assert levels == ["1", "2", "3", "1"]
    await shoot(page, "distributors")


async def test_a_new_partner_key_s_secret_is_shown_once(core: Core, served, browser, tmp_path):
    await product_with_stock(core, tmp_path, units=2)
    await core.partners.add_partner("shop_a", "Shop A", webhook_url="https://a.example/hook")
    await core.partners.top_up("shop_a", "1200.00")
    order = (await new_order(core)).order
    async with core.db.transaction() as session:
        pid = await session.scalar(select(Partner.id).where(Partner.code == "shop_a"))
        session.add(
            PartnerWebhook(
                partner_id=pid, order_id=order.id, event="order.delivered", payload="{}", attempts=5,
                last_error="HTTP 503", next_attempt_at=utcnow(),
            )
        )  # fmt: skip
    page = await new_page(browser)
    page.on("dialog", lambda dialog: dialog.accept())
    await sign_in(page, core)
    await page.goto(f"{served}/admin/partners")
    assert "HTTP 503" in await page.inner_text("[data-testid=failing]")
    await shoot(page, "partners")
    await page.click("tr[data-partner='shop_a'] a")
    await page.click("[data-testid=key-add]")
    secret = await (await page.wait_for_selector("[data-testid=secret]")).inner_text()
    assert re.fullmatch(r"sk_\S+", secret.strip())
    assert await page.is_visible("[data-testid=once]")
    await page.go_back()
    await page.reload()
    await page.wait_for_selector("[data-testid=keys]")
    assert secret.strip() not in await page.content()
    assert len(await page.query_selector_all("[data-testid=keys] tr[data-key]")) == 2


async def test_an_operator_creates_a_coupon_on_the_offers_page(core: Core, served, browser, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", units=3)
    await core.catalog.create_bundle("DUO", name="VIP duo", price="25.00", parts="VIP:2")
    await core.catalog.add_promotion({"name": "满百减十", "spend": "100.00", "off": "10.00"})
    await core.catalog.create_coupon(NewCoupon({"name": "Welcome", "off": "10%"}, code="WELCOME10"))
    page = await new_page(browser)
    await sign_in(page, core)
    await page.goto(f"{served}/admin/pricing")
    form = "[data-testid=coupon-form]"
    await page.fill(f"{form} input[name=name]", "Spring sale")
    await page.fill(f"{form} input[name=off]", "15%")
    await page.fill(f"{form} input[name=cap]", "8.00")
    await page.fill(f"{form} input[name=skus]", "VIP")
    await page.fill(f"{form} input[name=code]", "SPRING15")
    await page.click(f"{form} button[type=submit]")
    await page.wait_for_selector("[data-testid=notice]")
    coupons = await page.inner_text("[data-testid=coupons]")
    assert "Spring sale" in coupons and "减 15%，最多 ¥8.00" in coupons
    assert await page.get_attribute("[data-testid=bundles] a", "href") == "/admin/products/DUO"
    await shoot(page, "pricing")
