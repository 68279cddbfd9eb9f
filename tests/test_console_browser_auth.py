"""Signing in to the console in a real browser (issue 18, item 8): a link signs in, the same link
again and an expired one are refused with words, a role is refused a page, and the console is
usable on a phone's screen."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from quanyi.core.models import LoginLink, utcnow
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

READER = 7003


async def test_a_link_signs_in_and_the_same_link_again_is_refused(core: Core, served, browser):
    page = await new_page(browser)
    url = await core.staff.login_link(9000, actor="test", front="cli")
    await page.goto(url)
    await page.wait_for_selector("[data-testid=me]")
    assert "#t=" not in page.url  # the token left the address bar
    assert "所有者" in await page.inner_text("[data-testid=me]")
    other = await new_page(browser)
    await other.goto(url)
    error = await other.wait_for_selector("[data-testid=login-error]")
    assert "已经用过" in await error.inner_text()
    await shoot(other, "login-refused")


async def test_an_expired_link_is_refused_in_english_for_an_english_browser(core: Core, served, browser):
    url = await core.staff.login_link(9000, actor="test", front="cli")
    async with core.db.transaction() as session:
        await session.execute(update(LoginLink).values(expires_at=utcnow() - timedelta(seconds=5)))
    page = await new_page(browser, lang="en-US")
    await page.goto(url)
    error = await page.wait_for_selector("[data-testid=login-error]")
    assert "expired" in await error.inner_text()


async def test_a_read_only_person_is_refused_the_staff_page_and_the_menu_works_on_a_phone(core: Core, served, browser):
    await core.staff.add(READER, Role.READ_ONLY, actor="test", front="cli")
    page = await new_page(browser, phone=True)
    await sign_in(page, core, READER)
    answer = await page.goto(f"{served}/admin/staff")
    assert answer is not None and answer.status == 403
    assert "只读" in await page.inner_text("[data-testid=message]")
    await page.goto(f"{served}/admin/")
    await page.click("details.menu summary")
    assert await page.is_visible("details.menu nav a")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # nothing wider than the phone's screen


async def test_a_post_without_the_csrf_token_is_refused_and_a_role_is_refused_an_action(core: Core, served, browser):
    page = await new_page(browser)
    await sign_in(page, core)
    # The page's own form (with its token) works; the same POST without the token does not.
    bare = await page.evaluate(
        """async () => (await fetch('/admin/staff', {method: 'POST',
             headers: {'Content-Type': 'application/x-www-form-urlencoded'},
             body: 'user_id=7010&role=operator'})).status"""
    )
    assert bare == 403 and await core.staff.role_of(7010) is None
    await page.goto(f"{served}/admin/staff")
    await page.fill("input[name=user_id]", "7010")
    await page.select_option("select[name=role]", "read_only")
    await page.click("form.grid-form button[type=submit]")
    await page.wait_for_selector("tr[data-user='7010']")
    assert await core.staff.role_of(7010) is Role.READ_ONLY
    await shoot(page, "staff")
    # A read-only person posting the same form with its own valid token is refused the action.
    reader = await new_page(browser)
    await sign_in(reader, core, 7010)
    refused = await reader.evaluate(
        """async () => (await fetch('/admin/staff', {method: 'POST',
             headers: {'Content-Type': 'application/x-www-form-urlencoded',
                       'X-CSRF-Token': document.body.dataset.csrf},
             body: 'user_id=7011&role=owner'})).status"""
    )
    assert refused == 403 and await core.staff.role_of(7011) is None
