"""The finance, report, risk and audit pages in a real browser (issue 18, item 7): finance
approves a distributor's withdrawal and sees it approved, its ledger moved, and its record on the
audit log; the pages photographed with realistic data for docs/console/."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from quanyi.core.errors import HeldForReview
from quanyi.core.models import Order, RiskRule, Withdrawal
from quanyi.core.services import Core
from quanyi.core.staff.roles import Role
from tests.browser import (  # noqa: F401  (fixtures)
    backend,  # noqa: F401  (SQLite only)
    browser,
    new_page,
    served,
    shoot,
    sign_in,
)
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_distributors import make_distributor
from tests.test_withdrawals import ask, grant

FINANCE = 7301
AGENTS = (2401, 2402)


async def test_a_withdrawal_approved_by_finance_moves_the_ledger_and_is_on_the_audit_log(core: Core, served, browser):
    asked: list[Withdrawal] = []
    for n, agent in enumerate(AGENTS):
        distributor = await make_distributor(core, agent)
        await grant(core, distributor, 50_000, ref=f"test:grant:{agent}")
        for amount in (12_000, 3_500 + n * 1_000):
            made = await ask(core, "commission", amount, user_id=agent)
            assert isinstance(made, Withdrawal)
            asked.append(made)
    chosen = asked[0]
    await core.staff.add(FINANCE, Role.FINANCE, actor="test", front="cli")
    page = await new_page(browser)
    page.on("dialog", lambda dialog: dialog.accept())
    await sign_in(page, core, FINANCE)

    await page.goto(f"{served}/admin/books")
    await page.click("[data-testid=tile-pending]")
    await page.wait_for_selector(f"tr[data-withdrawal='{chosen.id}']")
    await shoot(page, "withdrawals")
    await page.click(f"tr[data-withdrawal='{chosen.id}'] [data-testid=approve]")
    await page.wait_for_selector("[data-testid=notice]")
    assert "已批准待打款" in await page.inner_text("h1 [data-testid=state]")
    distributor_id = chosen.distributor_id
    frozen = await page.inner_text(f"tr[data-account='distributor:{distributor_id}:frozen'] td.num")
    assert frozen == "-¥35.00"  # 120.00 paid out; 35.00 of the other request still frozen (a credit)
    assert f"withdrawal:{chosen.id}:payout" in await page.inner_text("main")

    await page.click("[data-testid=audit-link]")
    await page.wait_for_selector("[data-testid=trail] tr[data-seq]")
    trail = await page.inner_text("[data-testid=trail]")
    assert f"提现 {chosen.id}" in trail and str(FINANCE) in trail and "网页" in trail
    assert "状态 待审批 → 已批准" in trail
    await page.click("[data-testid=verify]")
    assert "审计链完整" in await page.inner_text("[data-testid=verdict]")
    await shoot(page, "audit")

    await page.goto(f"{served}/admin/books/withdrawals?status=pending")
    assert await page.query_selector(f"tr[data-withdrawal='{chosen.id}']") is None


async def test_the_report_and_risk_pages_with_a_month_of_sales_and_a_held_order(core: Core, served, browser, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", price="15.00", units=40)
    await product_with_stock(core, tmp_path, sku="MUSIC", price="8.80", units=30)
    now = datetime.now(UTC)
    for n in range(24):
        sku = "VIP" if n % 3 else "MUSIC"
        placed = await new_order(core, sku=sku, quantity=1 + n % 2, user_id=3000 + n)
        await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))
        async with core.db.transaction() as session:
            moved = now - timedelta(days=(n * 7) % 20, hours=n % 5)
            await session.execute(update(Order).where(Order.id == placed.order.id).values(paid_at=moved))
    async with core.db.transaction() as session:
        session.add(
            RiskRule(
                name="big-orders",
                metric="quantity",
                threshold=3,
                action="hold",
                active=True,
                channels="",
                skus="",
                created_at=now,
            )
        )
    with contextlib.suppress(HeldForReview):
        await new_order(core, sku="VIP", quantity=4, user_id=4001)
    await core.risk.block("ip", "203.0.113.7", reason="card testing", actor="operator:9000")

    page = await new_page(browser)
    await sign_in(page, core)
    await page.goto(f"{served}/admin/reports")
    await page.wait_for_selector("[data-testid=chart] svg")
    assert await page.locator("[data-testid=chart] svg rect.bar").count() >= 10
    await shoot(page, "reports")
    await page.select_option("select[name=by]", "product")
    await page.click("form.grid-form button[type=submit]")
    await page.wait_for_selector("[data-testid=report]")
    assert "MUSIC" in await page.inner_text("[data-testid=report]")

    await page.goto(f"{served}/admin/risk")
    await page.wait_for_selector("#held tr[data-decision]")
    await shoot(page, "risk")
    await page.fill("#held tr[data-decision] input[name=reason]", "please order fewer")
    await page.click("#held tr[data-decision] button.danger")
    await page.wait_for_selector("[data-testid=notice]")
    assert await page.query_selector("#held tr[data-decision]") is None

    # A provider's statement uploaded from the reconcile page: the mismatches come back as a list.
    upload = tmp_path / "statement.csv"
    upload.write_text(
        f"provider_txn_id,order_number,amount,status,time\nT-X,Q-NOT-OURS,9.00,success,{now.isoformat()}\n"
    )
    await page.goto(f"{served}/admin/books/reconcile")
    await page.select_option("select[name=provider]", "sandbox")
    await page.set_input_files("input[type=file]", str(upload))
    await page.click("#reconcile-form button[type=submit]")
    await page.wait_for_selector("[data-testid=mismatch-count]")
    assert await page.locator("tr[data-mismatch=missing_with_us]").count() == 1
    assert "Q-NOT-OURS" in await page.inner_text("[data-testid=reconcile-result]")
