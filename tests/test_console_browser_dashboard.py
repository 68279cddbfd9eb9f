"""The dashboard in a real browser (issue 18, item 4): its figures equal those of a scripted set of
sales, refunds and a failed order; it updates itself (a sale scripted after the page opened shows
within the polling interval, with no reload); it fits a phone's screen."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from quanyi.core.models import utcnow
from quanyi.core.services import Core
from tests.browser import (  # noqa: F401  (fixtures)
    backend,  # noqa: F401  (SQLite only)
    browser,
    new_page,
    served,
    shoot,
    sign_in,
)
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_console_dashboard import cny, expected, script
from tests.test_reports import paid


async def history(core: Core, tmp_path: Path) -> None:
    """Sales over the last days and yesterday's hours, so the charts have something to draw."""
    await product_with_stock(core, tmp_path, sku="MUSIC", price="12.00", units=16)
    now = utcnow()
    for n in range(14):
        placed = await new_order(core, sku="MUSIC", user_id=4000 + n)
        at = now - timedelta(days=1 + (n * 3) % 20, hours=(n * 5) % 11)
        await paid(core, placed.order.number, placed.order.amount, at)


async def figure(page, name: str) -> str:  # type: ignore[no-untyped-def]
    return (await page.inner_text(f"[data-testid={name}]")).strip()


async def test_the_dashboards_figures_equal_those_of_a_scripted_set_of_sales_refunds_and_a_failed_order(
    core: Core, served, browser, tmp_path
):
    scripted = await script(core, tmp_path)
    await history(core, tmp_path)
    page = await new_page(browser)
    await sign_in(page, core)
    await page.goto(f"{served}/admin/")
    board = await core.books.dashboard()
    want = expected(await script_rows(core, scripted), board.now)
    assert await figure(page, "today-orders-CNY") == str(want["today"].orders)
    assert await figure(page, "today-paid-CNY") == cny(want["today"].paid)
    assert await figure(page, "today-refunds-CNY") == cny(want["today"].refunds)
    assert await figure(page, "today-net-CNY") == cny(want["today"].net)
    assert await figure(page, "month-net-CNY") == cny(want["month"].net)
    assert await page.is_visible("tr.quota.low[data-holder=partner1]")
    assert await page.is_visible("tr.product.low[data-sku=GOLD]")
    for key, count in (("failed", 1), ("review", 1), ("withdrawals", 1), ("risk_held", 1)):
        assert await page.inner_text(f"[data-testid=attention-{key}] .figure") == str(count)
    await shoot(page, "dashboard")

    # One more sale, scripted through core after the page opened: the page shows it by itself.
    before = want["today"].orders
    placed = await new_order(core, sku="VIP", user_id=5001)
    await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))
    await page.wait_for_function(
        "([sel, want]) => document.querySelector(sel)?.textContent.trim() === want",
        arg=["[data-testid=today-orders-CNY]", str(before + 1)],
        timeout=12_000,
    )
    assert await figure(page, "today-paid-CNY") == cny(want["today"].paid + placed.order.amount)


async def script_rows(core: Core, scripted: dict[str, object]) -> dict[str, object]:
    """The script's rows with the history's sales, read again (the history added some)."""
    from sqlalchemy import select

    from quanyi.core.models import Order
    from tests.test_console_dashboard import Sale

    async with core.db.read() as session:
        rows = (
            await session.execute(
                select(
                    Order.number, Order.channel, Order.distributor_id, Order.paid_at, Order.list_amount,
                    Order.discount_amount,
                ).where(Order.paid_at.is_not(None))
            )
        ).all()  # fmt: skip
    sales = [Sale(n, ch, str(d) if d else "-", at, g, dis) for n, ch, d, at, g, dis in rows]
    return {**scripted, "sales": sales}


async def test_the_dashboard_fits_a_phone(core: Core, served, browser, tmp_path):
    await script(core, tmp_path)
    await history(core, tmp_path)
    page = await new_page(browser, phone=True)
    await sign_in(page, core)
    await page.goto(f"{served}/admin/")
    await page.wait_for_selector("[data-testid=today-orders-CNY]")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # the tables scroll inside their boxes, the charts shrink
    await shoot(page, "dashboard-phone")
