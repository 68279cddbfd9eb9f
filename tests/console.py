"""Helpers for the web console's tests: a Quart test client signed in as a staff member the way a
person is (a one-time link, the login page, its form), and the CSRF token its pages carry."""

from __future__ import annotations

import re
from typing import Any

from quanyi.core.services import Core
from quanyi.core.staff.roles import Role
from quanyi.webhooks import create_app

OWNER = 9000  # make_settings puts this id in QUANYI_ADMIN_IDS


def link_token(url: str) -> str:
    assert "#t=" in url, url
    return url.split("#t=", 1)[1]


async def login_form(client: Any) -> str:
    """The login page's form value that must come back with the token (login CSRF)."""
    page = await client.get("/admin/login")
    found = re.search(r'name="pre" value="([^"]+)"', await page.get_data(as_text=True))
    assert found, "the login page has its form"
    return found.group(1)


async def post_token(client: Any, token: str, *, next_path: str = "/admin/") -> Any:
    pre = await login_form(client)
    return await client.post("/admin/login", form={"pre": pre, "token": token, "next": next_path})


async def csrf_of(client: Any, path: str = "/admin/") -> str:
    page = await client.get(path)
    found = re.search(r'data-csrf="([^"]+)"', await page.get_data(as_text=True))
    assert found, f"{path} is a signed-in page ({page.status_code})"
    return found.group(1)


async def signed_in(core: Core, user_id: int = OWNER, role: Role | None = None) -> tuple[Any, str]:
    """A test client signed in as ``user_id`` (given ``role`` first when it is not an owner) and
    its CSRF token."""
    if role is not None and role is not Role.OWNER:
        await core.staff.add(user_id, role, refund_limit=5000, actor="test", front="cli")
    client = create_app(core).test_client()
    answer = await post_token(client, link_token(await core.staff.login_link(user_id, actor="test", front="cli")))
    assert answer.status_code == 303, await answer.get_data(as_text=True)
    return client, await csrf_of(client)
