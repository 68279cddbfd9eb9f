"""Partners (API 合作方): the list, adding one, its keys (a new secret is shown once, on the
answer to the request that made it, never stored in the clear nor shown again), top-ups, the
webhook URL, enabling and disabling, and webhook deliveries that keep failing. The use cases of
``quanyi partner`` and the admin chat's ``/partner_*``."""

from __future__ import annotations

from typing import Any

from quart import redirect, request, url_for

from quanyi.core.errors import QuanyiError
from quanyi.core.staff.roles import Area
from quanyi.webhooks.console import blueprint
from quanyi.webhooks.console.people_forms import BadForm, done_notice, field, required, status_of
from quanyi.webhooks.console.shell import core, guard, page, reason

# The answer carrying a secret is kept by no cache, history or proxy.
SECRET_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@blueprint.get("/partners")
@guard(Area.PARTNERS)
async def partners() -> Any:
    return await _partners_page()


async def _partners_page(error: str = "", status: int = 200, values: dict[str, str] | None = None) -> Any:
    return await page(
        "console/partners.html",
        status=status,
        partners=await core().partners.partners(),
        failing=await core().partners.failing_deliveries(),
        currency=core().settings.currency,
        error=error,
        notice=done_notice(),
        values=values or {},
    )


@blueprint.post("/partners")
@guard(Area.PARTNERS, write=True)
async def partner_add() -> Any:
    form = await request.form
    values = {name: field(form, name) for name in ("code", "name", "currency", "webhook")}
    try:
        added = await core().partners.add_partner(
            required(form, "code"),
            required(form, "name"),
            currency=(field(form, "currency") or core().settings.currency).upper(),
            webhook_url=field(form, "webhook") or None,
        )
    except BadForm as exc:
        return await _partners_page(exc.text(), 400, values)
    except QuanyiError as exc:
        return await _partners_page(reason(exc), status_of(exc), values)
    return await _secret_page(added.code, added.access_key, added.secret, added=True)


async def _secret_page(code: str, access_key: str, secret: str, *, added: bool) -> Any:
    html, status, headers = await page(
        "console/partner_secret.html", code=code, access_key=access_key, secret=secret, added=added
    )
    return html, status, {**headers, **SECRET_HEADERS}


@blueprint.get("/partners/<code>")
@guard(Area.PARTNERS)
async def partner(code: str) -> Any:
    return await _partner_page(code)


async def _partner_page(code: str, error: str = "", status: int = 200) -> Any:
    try:
        detail = await core().partners.partner(code)
    except QuanyiError as exc:
        return await _partners_page(reason(exc), status_of(exc))
    return await page(
        "console/partner.html",
        status=status,
        partner=detail,
        failing=await core().partners.failing_deliveries(partner=detail.code),
        error=error,
        notice=done_notice(),
    )


@blueprint.post("/partners/<code>/keys")
@guard(Area.PARTNERS, write=True)
async def partner_key_add(code: str) -> Any:
    try:
        key = await core().partners.add_key(code)
    except QuanyiError as exc:
        return await _partner_page(code, reason(exc), status_of(exc))
    return await _secret_page(key.code, key.access_key, key.secret, added=False)


@blueprint.post("/partners/<code>/keys/revoke")
@guard(Area.PARTNERS, write=True)
async def partner_key_revoke(code: str) -> Any:
    form = await request.form
    try:
        await core().partners.revoke_key(code, required(form, "access_key"))
    except BadForm as exc:
        return await _partner_page(code, exc.text(), 400)
    except QuanyiError as exc:
        return await _partner_page(code, reason(exc), status_of(exc))
    return redirect(url_for("console.partner", code=code, done="key_revoked"), 303)


@blueprint.post("/partners/<code>/topup")
@guard(Area.PARTNERS, write=True)
async def partner_topup(code: str) -> Any:
    form = await request.form
    try:
        await core().partners.top_up(code, required(form, "amount"), note=field(form, "note"))
    except BadForm as exc:
        return await _partner_page(code, exc.text(), 400)
    except QuanyiError as exc:
        return await _partner_page(code, reason(exc), status_of(exc))
    return redirect(url_for("console.partner", code=code, done="topped_up"), 303)


@blueprint.post("/partners/<code>/webhook")
@guard(Area.PARTNERS, write=True)
async def partner_webhook(code: str) -> Any:
    form = await request.form
    try:
        await core().partners.set_webhook(code, field(form, "url") or None)
    except QuanyiError as exc:
        return await _partner_page(code, reason(exc), status_of(exc))
    return redirect(url_for("console.partner", code=code, done="webhook_set"), 303)


@blueprint.post("/partners/<code>/active")
@guard(Area.PARTNERS, write=True)
async def partner_active(code: str) -> Any:
    form = await request.form
    state = field(form, "active")
    if state not in ("1", "0"):
        return await _partner_page(code, BadForm("choice", field=state).text(), 400)
    try:
        await core().partners.set_active(code, state == "1")
    except QuanyiError as exc:
        return await _partner_page(code, reason(exc), status_of(exc))
    return redirect(url_for("console.partner", code=code, done="enabled" if state == "1" else "disabled"), 303)
