"""Orders in a real browser (issue 18, item 5): a refund from an order page — sign in, search the
order, open it, refund it with a reason, see it refunded — and the pages' screenshots."""

from __future__ import annotations

from pathlib import Path

from quanyi.core.services import Core
from tests.browser import (  # noqa: F401  (fixtures)
    backend,  # noqa: F401  (SQLite only)
    browser,
    new_page,
    served,
    shoot,
    sign_in,
)
from tests.test_console_orders import buy, paid, shop


async def test_a_refund_from_an_order_page(core: Core, served, browser, tmp_path: Path):
    s = await shop(core, tmp_path)
    for n in range(4):  # a page of orders worth looking at
        await paid(core, await buy(core, 5000 + n, "VIP" if n % 2 else "MUSIC", 1, username=f"buyer{n}"))
    page = await new_page(browser)
    page.on("dialog", lambda dialog: dialog.accept())
    await sign_in(page, core)
    await page.goto(f"{served}/admin/orders")
    await page.wait_for_selector("[data-testid=orders] tbody tr[data-number]")
    await shoot(page, "orders")

    await page.fill("input[name=q]", "@alice_w")
    await page.click("[data-testid=search] button[type=submit]")
    await page.wait_for_selector("[data-testid=matched]")
    rows = await page.query_selector_all("[data-testid=orders] tbody tr[data-number]")
    assert [await row.get_attribute("data-number") for row in rows] == [s["alice"]]

    await page.click(f"[data-testid=orders] a:has-text('{s['alice']}')")
    await page.wait_for_selector("[data-testid=lines]")
    assert "已发货" in await page.inner_text("[data-testid=status]")
    await shoot(page, "order")

    await page.fill("[data-testid=refund-order] input[name=reason]", "买家无法兑换")
    await page.click("[data-testid=refund-order] button[type=submit]")
    await page.wait_for_selector("[data-testid=notice]")
    assert "已退款" in await page.inner_text("[data-testid=status]")
    refunds = await page.inner_text("[data-testid=refunds]")
    assert "买家无法兑换" in refunds and "operator:9000" in refunds
    assert "web refund" in await page.inner_text("[data-testid=trail]")
