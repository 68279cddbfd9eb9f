"""Owners' page: who may sign in with which role (support's refund limit), open sessions, ending
them. The same rules as ``quanyi admin`` (core.staff)."""

from __future__ import annotations

from typing import Any

from quart import redirect, request, url_for

from quanyi.core.errors import QuanyiError
from quanyi.core.money import parse_minor
from quanyi.core.staff.roles import ROLES, Area, parse_role
from quanyi.webhooks.console import blueprint
from quanyi.webhooks.console.shell import core, guard, me, page, reason


@blueprint.get("/staff")
@guard(Area.STAFF)
async def staff() -> Any:
    return await _staff_page()


async def _staff_page(error: str = "", notice: str = "", status: int = 200) -> Any:
    return await page(
        "console/staff.html",
        status=status,
        members=await core().staff.members(),
        sessions=await core().staff.sessions(),
        roles=[role.value for role in ROLES],
        error=error,
        notice=notice,
    )


@blueprint.post("/staff")
@guard(Area.STAFF, write=True)
async def staff_add() -> Any:
    form = await request.form
    try:
        user_id = int(form.get("user_id", "").strip())
        role = parse_role(form.get("role", ""))
        limit_text = form.get("refund_limit", "").strip()
        limit = parse_minor(limit_text, core().settings.currency) if limit_text else 0
        await core().staff.add(user_id, role, refund_limit=limit, actor=me().actor, front="web")
    except ValueError:
        return await _staff_page(error=_("console.staff_bad_id"), status=400)
    except QuanyiError as exc:
        return await _staff_page(error=reason(exc), status=400)
    return redirect(url_for("console.staff"), 303)


@blueprint.post("/staff/<int:user_id>/remove")
@guard(Area.STAFF, write=True)
async def staff_remove(user_id: int) -> Any:
    try:
        await core().staff.remove(user_id, actor=me().actor, front="web")
    except QuanyiError as exc:
        return await _staff_page(error=reason(exc), status=400)
    return redirect(url_for("console.staff"), 303)


@blueprint.post("/staff/logout-all")
@guard(Area.STAFF, write=True)
async def staff_logout_all() -> Any:
    form = await request.form
    user = form.get("user_id", "").strip()
    await core().staff.logout_all(int(user) if user.isdigit() else None, actor=me().actor, front="web")
    return redirect(url_for("console.staff"), 303)


def _(key: str) -> str:
    from quanyi.webhooks.console.shell import text

    return text(key)
