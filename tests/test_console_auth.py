"""The web console's door (issue 18, items 2 and 3): one-time sign-in links from the bot and the
CLI, the Telegram Login Widget, sessions that idle out and can be revoked, CSRF on every POST,
and the five roles, in the console and in the admin chat."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from quanyi.core.errors import Forbidden
from quanyi.core.models import AuditRecord, ConsoleSession, LoginLink, utcnow
from quanyi.core.services import Core
from quanyi.core.staff.roles import Area, Role, may
from quanyi.i18n import raw_t
from quanyi.webhooks import create_app
from tests.console import OWNER, link_token, post_token, signed_in
from tests.test_bot_chat import shop, tg  # noqa: F401  (fixtures)
from tests.test_cli import local_cli  # noqa: F401  (fixture)

FINANCE = 7001
SUPPORT = 7002
READER = 7003


async def test_a_link_signs_in_once_and_the_session_cookie_is_strict_and_http_only(core: Core):
    url = await core.staff.login_link(OWNER, actor="cli", front="cli")
    assert url.startswith(core.settings.public_url) and "/admin/login#t=" in url  # the token rides in the fragment
    client = create_app(core).test_client()
    answer = await post_token(client, link_token(url))
    assert answer.status_code == 303
    cookie = answer.headers["Set-Cookie"]
    assert "qy_console=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin" in cookie
    home = await client.get("/admin/")
    assert home.status_code == 200 and home.headers["Cache-Control"] == "no-store"
    # The same link again, from another browser: refused, and says why.
    other = create_app(core).test_client()
    again = await post_token(other, link_token(url))
    assert again.status_code == 403
    assert "已经用过" in await again.get_data(as_text=True)
    assert (await other.get("/admin/")).status_code == 303  # not signed in: sent to the login page
    async with core.db.read() as session:
        stored = (await session.execute(select(LoginLink.digest))).scalars().all()
    assert link_token(url) not in stored and hashlib.sha256(link_token(url).encode()).hexdigest() in stored


async def test_an_expired_a_forged_and_a_foreign_link_are_refused(core: Core):
    url = await core.staff.login_link(OWNER, actor="cli", front="cli")
    async with core.db.transaction() as session:
        await session.execute(update(LoginLink).values(expires_at=utcnow() - timedelta(seconds=1)))
    client = create_app(core).test_client()
    expired = await post_token(client, link_token(url))
    assert expired.status_code == 403 and "已过期" in await expired.get_data(as_text=True)
    forged = await post_token(client, "A" * 43)
    assert forged.status_code == 403 and "无效" in await forged.get_data(as_text=True)
    # Nobody without a role gets a link.
    with pytest.raises(Forbidden):
        await core.staff.login_link(4242, actor="cli", front="cli")
    # The login form without the value set with the page (another site posting it) is refused.
    fresh = await core.staff.login_link(OWNER, actor="cli", front="cli")
    stray = await create_app(core).test_client().post("/admin/login", form={"pre": "x", "token": link_token(fresh)})
    assert stray.status_code == 403
    async with core.db.read() as session:
        assert (await session.scalar(select(func.count()).select_from(ConsoleSession))) == 0


async def test_a_whole_pasted_link_signs_in_and_next_stays_inside_the_console(core: Core):
    url = await core.staff.login_link(OWNER, actor="cli", front="cli")
    client = create_app(core).test_client()
    answer = await post_token(client, url, next_path="https://evil.example/")
    assert answer.status_code == 303 and answer.headers["Location"].startswith("/admin")


async def test_a_post_without_or_with_a_wrong_csrf_token_is_refused_and_changes_nothing(core: Core):
    client, csrf = await signed_in(core)
    bare = await client.post("/admin/staff", form={"user_id": "555", "role": "operator"})
    wrong = await client.post("/admin/staff", form={"user_id": "555", "role": "operator", "csrf": "0" * 40})
    assert bare.status_code == 403 and wrong.status_code == 403
    assert "安全校验码" in await bare.get_data(as_text=True)
    assert await core.staff.role_of(555) is None
    right = await client.post("/admin/staff", form={"user_id": "555", "role": "operator", "csrf": csrf})
    assert right.status_code == 303 and await core.staff.role_of(555) is Role.OPERATOR
    header = await client.post(
        "/admin/staff", form={"user_id": "556", "role": "finance"}, headers={"X-CSRF-Token": csrf}
    )
    assert header.status_code == 303 and await core.staff.role_of(556) is Role.FINANCE
    async with core.db.read() as session:
        trail = (await session.execute(select(AuditRecord).where(AuditRecord.object_type == "staff"))).scalars().all()
    added = [r for r in trail if r.action == "create staff" and r.object_id == "555"]
    assert added and added[0].actor == f"operator:{OWNER}" and added[0].front == "web"


async def test_sessions_idle_out_and_logout_all_ends_them(core: Core):
    client, _ = await signed_in(core)
    assert (await client.get("/admin/")).status_code == 200
    async with core.db.transaction() as session:
        await session.execute(update(ConsoleSession).values(last_seen_at=utcnow() - timedelta(minutes=31)))
    assert (await client.get("/admin/")).status_code == 303  # idle past QUANYI_CONSOLE_IDLE_MINUTES
    client, _ = await signed_in(core)
    other, _ = await signed_in(core)
    assert len(await core.staff.sessions()) == 2
    assert await core.staff.logout_all(actor="cli", front="cli") == 2
    assert (await client.get("/admin/")).status_code == 303 and (await other.get("/admin/")).status_code == 303


async def test_signing_out_ends_the_session(core: Core):
    client, csrf = await signed_in(core)
    out = await client.post("/admin/logout", form={"csrf": csrf})
    assert out.status_code == 303
    assert await core.staff.sessions() == []


async def test_a_removed_person_is_signed_out_at_once(core: Core):
    client, _ = await signed_in(core, FINANCE, Role.FINANCE)
    assert (await client.get("/admin/")).status_code == 200
    assert await core.staff.remove(FINANCE, actor="cli", front="cli") == 1
    assert (await client.get("/admin/")).status_code == 303


def _widget_fields(token: str, user_id: int, *, age: int = 0) -> dict[str, str]:
    fields = {"id": str(user_id), "first_name": "Ann", "username": "ann", "auth_date": str(int(time.time()) - age)}
    check = "\n".join(f"{k}={fields[k]}" for k in sorted(fields))
    fields["hash"] = hmac.new(hashlib.sha256(token.encode()).digest(), check.encode(), hashlib.sha256).hexdigest()
    return fields


async def test_the_telegram_login_widget_signs_in_staff_and_refuses_forged_or_old_answers(core: Core):
    core.settings = core.settings.model_copy(update={"bot_token": "123:ABC", "bot_username": "quanyi_bot"})
    client = create_app(core).test_client()
    login = await client.get("/admin/login")
    assert 'data-telegram-login="quanyi_bot"' in await login.get_data(as_text=True)
    assert "https://telegram.org" in login.headers["Content-Security-Policy"]
    forged = _widget_fields("999:OTHER", OWNER)
    assert (await client.get("/admin/login/telegram", query_string=forged)).status_code == 403
    old = _widget_fields("123:ABC", OWNER, age=3600)
    assert (await client.get("/admin/login/telegram", query_string=old)).status_code == 403
    stranger = _widget_fields("123:ABC", 4242)
    assert (await client.get("/admin/login/telegram", query_string=stranger)).status_code == 403
    good = await client.get("/admin/login/telegram", query_string=_widget_fields("123:ABC", OWNER))
    assert good.status_code == 303 and (await client.get("/admin/")).status_code == 200


async def test_without_a_bot_username_the_widget_is_off(core: Core):
    client = create_app(core).test_client()
    assert "telegram-widget" not in await (await client.get("/admin/login")).get_data(as_text=True)
    assert (await client.get("/admin/login/telegram", query_string={"id": "1"})).status_code == 404


# --- roles -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "area", "write", "allowed"),
    [
        (Role.OWNER, Area.STAFF, True, True),
        (Role.OPERATOR, Area.STAFF, False, False),
        (Role.OPERATOR, Area.STOCK, True, True),
        (Role.OPERATOR, Area.BOOKS, True, False),
        (Role.FINANCE, Area.BOOKS, True, True),
        (Role.FINANCE, Area.CATALOG, True, False),
        (Role.FINANCE, Area.CATALOG, False, True),
        (Role.SUPPORT, Area.ORDERS, True, True),
        (Role.SUPPORT, Area.BOOKS, False, False),
        (Role.SUPPORT, Area.CATALOG, False, False),
        (Role.READ_ONLY, Area.ORDERS, False, True),
        (Role.READ_ONLY, Area.ORDERS, True, False),
        (Role.READ_ONLY, Area.STAFF, False, False),
    ],
)
def test_what_each_role_may_do(role, area, write, allowed):
    assert may(role, area, write=write) is allowed


async def test_only_owners_see_the_staff_page_and_the_refusal_names_the_role(core: Core):
    client, csrf = await signed_in(core, READER, Role.READ_ONLY)
    page = await client.get("/admin/staff")
    assert page.status_code == 403 and "只读" in await page.get_data(as_text=True)
    posted = await client.post("/admin/staff", form={"user_id": "555", "role": "owner", "csrf": csrf})
    assert posted.status_code == 403 and await core.staff.role_of(555) is None
    assert "人员与权限" not in await (await client.get("/admin/")).get_data(as_text=True)  # not in the menu


async def test_owners_of_the_setting_cannot_be_changed_and_the_page_lists_everyone(core: Core):
    client, csrf = await signed_in(core)
    refused = await client.post("/admin/staff", form={"user_id": str(OWNER), "role": "support", "csrf": csrf})
    assert refused.status_code == 400 and await core.staff.role_of(OWNER) is Role.OWNER
    await client.post(
        "/admin/staff", form={"user_id": str(SUPPORT), "role": "support", "refund_limit": "20", "csrf": csrf}
    )
    page = await (await client.get("/admin/staff")).get_data(as_text=True)
    assert str(OWNER) in page and str(SUPPORT) in page and "¥20.00" in page


async def test_support_refunds_only_up_to_its_limit(core: Core):
    await core.staff.add(SUPPORT, Role.SUPPORT, refund_limit=1000, actor="cli", front="cli")
    await core.staff.require_refund(SUPPORT, 1000)
    with pytest.raises(Forbidden) as refused:
        await core.staff.require_refund(SUPPORT, 1001)
    assert refused.value.key == "err_staff.over_refund_limit"
    await core.staff.add(FINANCE, Role.FINANCE, actor="cli", front="cli")
    with pytest.raises(Forbidden):
        await core.staff.require_refund(FINANCE, 1)
    await core.staff.require_refund(OWNER, 10**9)


# --- the command line ------------------------------------------------------------------------


def test_admin_commands_add_list_link_sessions_and_remove(local_cli):
    local_cli.ok("db", "upgrade")
    assert "added as read-only" in local_cli.ok("admin", "add", "7100", "--role", "read-only")
    assert "30.00" in local_cli.ok("admin", "add", "7101", "--role", "support", "--refund-limit", "30")
    listed = local_cli.ok("admin", "list")
    assert "7100" in listed and "read-only" in listed and "7101" in listed and "support" in listed
    assert "unknown role" in local_cli.fails("admin", "add", "7102", "--role", "boss")
    printed = local_cli.ok("admin", "login-link", "--user", "7100")
    assert "/admin/login#t=" in printed and "one use" in printed
    assert "no back-office role" in local_cli.fails("admin", "login-link", "--user", "4242")
    assert "session" in local_cli.ok("admin", "sessions")
    assert "0 console session(s) of everyone ended" in local_cli.ok("admin", "logout-all")
    assert "removed" in local_cli.ok("admin", "remove", "7100")
    assert "not on the staff" in local_cli.fails("admin", "remove", "7100")


# --- the admin chat --------------------------------------------------------------------------


async def test_login_in_the_bot_sends_a_link_for_that_user_only(core: Core, shop):
    owner = shop.user(OWNER, "zh")
    await owner.send("/login")
    sent = await owner.expect("登录运营后台")
    url = re.search(r'href="([^"]+)"', sent.text).group(1)  # the HTML the bot sent
    client = create_app(core).test_client()
    assert (await post_token(client, link_token(url))).status_code == 303
    assert (await client.get("/admin/")).status_code == 200
    buyer = shop.user(1001, "zh")
    await buyer.send("/login")
    reply = await buyer.expect("")
    assert "登录运营后台" not in reply.text


async def test_roles_apply_in_the_admin_chat(core: Core, shop):
    await core.staff.add(FINANCE, Role.FINANCE, actor="cli", front="cli")
    await core.staff.add(SUPPORT, Role.SUPPORT, actor="cli", front="cli")
    finance = shop.user(FINANCE, "zh")
    await finance.send("/products")
    refused = await finance.expect("不能使用这个命令")
    assert "财务" in refused.text and "商品" in refused.text
    await finance.send("/withdrawals")  # finance's own area
    assert "不能使用" not in (await finance.expect("")).text
    support = shop.user(SUPPORT, "zh")
    await support.send("/stock")
    assert "客服" in (await support.expect("不能使用这个命令")).text
    await support.send("/admin")
    menu = await support.expect("")
    assert "不能使用" not in menu.text and menu.buttons() == []  # no button support may use
    await finance.send("/admin")
    labels = [b["text"] for b in (await finance.expect("")).buttons()]
    assert labels == [raw_t("zh", "reports.btn_menu")]  # finance: the report only
    # A menu sent before the role changed: its buttons are refused once the role no longer allows them.
    await core.staff.add(READER, Role.OPERATOR, actor="cli", front="cli")
    reader = shop.user(READER, "zh")
    await reader.send("/admin")
    menu = await reader.expect("")
    assert len(menu.buttons()) == 8
    await core.staff.add(READER, Role.READ_ONLY, actor="cli", front="cli")
    pressed = await reader.press(menu, data=menu.buttons()[0]["callback_data"])  # the stock view
    answer = await shop.callback_answer(pressed)
    assert "不能使用这个按钮" in answer["text"] and answer.get("show_alert")


async def test_behind_https_the_cookie_is_secure_and_a_session_ends_at_its_lifetime(core: Core):
    client = create_app(core).test_client()
    url = await core.staff.login_link(OWNER, actor="cli", front="cli")
    page = await client.get("/admin/login", headers={"X-Forwarded-Proto": "https"})
    pre = re.search(r'name="pre" value="([^"]+)"', await page.get_data(as_text=True)).group(1)
    answer = await client.post(
        "/admin/login", form={"pre": pre, "token": link_token(url)}, headers={"X-Forwarded-Proto": "https"}
    )
    assert answer.status_code == 303 and "Secure" in answer.headers["Set-Cookie"]
    client, _ = await signed_in(core)
    async with core.db.transaction() as session:
        await session.execute(update(ConsoleSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert (await client.get("/admin/")).status_code == 303  # past QUANYI_CONSOLE_SESSION_HOURS


async def test_operator_alerts_reach_the_staff_whose_role_acts_on_them(core: Core):
    from quanyi.core.models import OutboxMessage
    from quanyi.core.platform import outbox

    await core.staff.add(FINANCE, Role.FINANCE, actor="cli", front="cli")
    await core.staff.add(SUPPORT, Role.SUPPORT, actor="cli", front="cli")
    await core.staff.add(READER, Role.READ_ONLY, actor="cli", front="cli")
    await core.staff.add(7004, Role.OPERATOR, actor="cli", front="cli")
    async with core.db.transaction() as session:
        for kind in ("admin_order_failed", "admin_withdrawal_request", "support_ticket", "stock_low"):
            await outbox.enqueue_admins(session, [OWNER], kind, {"order_id": 1})
    async with core.db.read() as session:
        rows = (await session.execute(select(OutboxMessage.kind, OutboxMessage.chat_id))).all()
    told = {kind: sorted(chat for k, chat in rows if k == kind) for kind, _ in rows}
    assert told["admin_order_failed"] == sorted([OWNER, SUPPORT, 7004])  # orders: operators and support
    assert told["admin_withdrawal_request"] == sorted([OWNER, FINANCE])  # money: finance
    assert told["support_ticket"] == sorted([OWNER, SUPPORT, 7004])
    assert told["stock_low"] == sorted([OWNER, 7004])
    assert all(READER not in chats for chats in told.values())  # read-only is told nothing
