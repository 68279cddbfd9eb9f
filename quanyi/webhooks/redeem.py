"""Redemption link pages: ``/r/<token>`` shows a link and confirms one use; its QR image.

Every lookup (page, confirmation, QR image) counts against a per-IP sliding window,
so tokens cannot be guessed by brute force. Tokens never reach a log line.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

from quart import Blueprint, Response, current_app, redirect, render_template, request
from quart.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from quanyi.core.errors import NotFound, TokenUnusable
from quanyi.core.platform.ratelimit import Limiter, make_limiter
from quanyi.core.sales.order_lookup import TokenState, TokenView
from quanyi.i18n import raw_t
from quanyi.webhooks.site import core, page_language

log = logging.getLogger(__name__)
blueprint = Blueprint("redeem", __name__)

_LIMITER = "quanyi.redeem_limiter"
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'"
    ),
}


def _limiter() -> Limiter:
    limiter = current_app.extensions.get(_LIMITER)
    if limiter is None:
        settings = core().settings
        limiter = make_limiter(settings.redis_url, "redeem", settings.redeem_lookups_per_minute)
        current_app.extensions[_LIMITER] = limiter
    return limiter


def _texts(lang: str) -> dict[str, str]:
    keys = ("lang", "grants", "product", "uses_left", "expires", "confirm", "confirm_note", "qr_alt", "qr_note")
    return {key: raw_t(lang, f"redeem.{key}") for key in keys}


def _local(moment: datetime) -> tuple[str, str]:
    zone = core().settings.timezone
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M"), zone


async def _message(status: int, key: str, **values: object) -> tuple[str, int]:
    lang = page_language()
    title = raw_t(lang, f"redeem.{key}_title")
    text = raw_t(lang, f"redeem.{key}", **values)
    page = await render_template("message.html", tx=_texts(lang), title=title, text=text, bad=True)
    return page, status


async def _refusal(state: str, max_uses: int, expires_at: datetime | None) -> tuple[str, int]:
    """410 for a link that exists but takes no more uses; ``state`` is a TokenState value."""
    if state == TokenState.USED_UP:
        return await _message(410, "used_up", max=max_uses)
    if state == TokenState.EXPIRED and expires_at is not None:
        local, zone = _local(expires_at)
        return await _message(410, "expired", time=local, zone=zone)
    return await _message(410, "void")


async def _page(token: str, view: TokenView, *, done: bool) -> tuple[str, int]:
    lang = page_language()
    uses = raw_t(lang, "redeem.uses_value", left=view.uses_left, max=view.max_uses)
    if view.expires_at is None:
        expires = raw_t(lang, "redeem.never_expires")
    else:
        local, zone = _local(view.expires_at)
        expires = raw_t(lang, "redeem.expires_value", time=local, zone=zone)
    page = await render_template(
        "redeem.html",
        tx=_texts(lang),
        title=raw_t(lang, "redeem.done_title" if done else "redeem.title"),
        done=raw_t(lang, "redeem.done_note", use_no=view.use_no, max=view.max_uses) if done else "",
        view=view,
        uses=uses,
        expires=expires,
        confirmable=not done and view.state == TokenState.VALID,
        qr_url=f"/r/{token}/qr.png" if view.state == TokenState.VALID else "",
    )
    return page, 200


def client_address() -> str:
    """The client's address: the peer, or, when the peer is a trusted proxy, the nearest
    address in X-Forwarded-For that is not one of our proxies (clients can prepend anything)."""
    peer = request.remote_addr or "unknown"
    trusted = core().settings.trusted_proxy_list
    if peer not in trusted:
        return peer
    hops = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop[:64]
    return peer


@blueprint.before_request
async def rate_limit() -> tuple[str, int, dict[str, str]] | None:
    client = client_address()
    wait = await _limiter().hit(client)
    if not wait:
        return None
    log.warning("redeem: rate limit reached for %s", client)
    page, status = await _message(429, "too_many")
    return page, status, {"Retry-After": str(wait)}


@blueprint.after_request
async def security_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


@blueprint.errorhandler(Exception)
async def failed(error: Exception) -> HTTPException | tuple[str, int]:
    if isinstance(error, HTTPException):
        return error
    # Quart's own report of an unhandled error names the request path, which holds the token.
    log.error("redeem: page failed with %s", type(error).__name__)
    return await _message(500, "failed")


@blueprint.get("/r/<token>")
async def show(token: str) -> tuple[str, int]:
    try:
        view = await core().sales.inspect_link(token)
    except NotFound:
        return await _message(404, "not_found")
    # ``?used=N`` is where a confirmation lands (POST, then redirect): it says which use was
    # recorded and takes nothing, so reloading the page never takes another use.
    used = request.args.get("used", "")
    if used.isascii() and used.isdigit() and 1 <= int(used) <= view.uses:
        return await _page(token, replace(view, use_no=int(used)), done=True)
    if view.state != TokenState.VALID:
        return await _refusal(view.state, view.max_uses, view.expires_at)
    return await _page(token, view, done=False)


@blueprint.post("/r/<token>")
async def confirm(token: str) -> ResponseReturnValue:
    by = f"web:{client_address()}"
    try:
        view = await core().sales.redeem_link(token, by=by, channel="web")
    except NotFound:
        return await _message(404, "not_found")
    except TokenUnusable as exc:
        return await _refusal(exc.code.removeprefix("token_"), exc.max_uses, exc.expires_at)
    log.info("redeem: link %d use %d of %d taken from the web", view.token_id, view.use_no or 0, view.max_uses)
    return redirect(f"/r/{token}?used={view.use_no or view.uses}", code=303)


@blueprint.get("/r/<token>/qr.png")
async def qr(token: str) -> Response | tuple[str, int]:
    try:
        png = await core().sales.link_qr(token)
    except NotFound:
        return await _message(404, "not_found")
    return Response(png, mimetype="image/png")
