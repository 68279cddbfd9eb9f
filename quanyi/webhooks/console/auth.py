"""Signing in and out of the console, and the checks every console request passes.

- A one-time link (``/login`` in the bot, ``quanyi admin login-link``) carries its token in the
  URL fragment: the login page's script posts it, so it never reaches a server log. The form also
  carries a value matching a cookie set with the page (login CSRF: another site cannot sign a
  browser in as someone else).
- The Telegram Login Widget, when the bot's username is set, answers at ``/admin/login/telegram``.
- The session cookie is HttpOnly, SameSite=Strict, Secure behind https, scoped to ``/admin``.
- Every request but the sign-in pages needs a live session; every POST needs the session's CSRF
  token (form field ``csrf`` or header ``X-CSRF-Token``).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Any

from quart import Response, g, redirect, request, url_for

from quanyi.core.errors import Forbidden, NotFound, QuanyiError, SignInRefused
from quanyi.webhooks.console import blueprint
from quanyi.webhooks.console.shell import LANG_COOKIE, core, me, message, page, text
from quanyi.webhooks.redeem import client_address

log = logging.getLogger(__name__)

COOKIE = "qy_console"
PRE_COOKIE = "qy_login"
OPEN_ENDPOINTS = frozenset(
    {"console.login", "console.login_post", "console.login_telegram", "console.static", "console.set_language"}
)
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# The login page with the widget also loads Telegram's script and its frame.
CSP_WIDGET = CSP.replace("script-src 'self'", "script-src 'self' https://telegram.org") + (
    "; frame-src https://oauth.telegram.org"
)


def _secure() -> bool:
    forwarded = request.headers.get("X-Forwarded-Proto", "")
    return request.scheme == "https" or forwarded == "https" or core().settings.public_url.startswith("https://")


def _widget_on() -> bool:
    settings = core().settings
    return bool(settings.bot_username and settings.bot_token)


@blueprint.before_request
async def require_session() -> Any:
    if await _has_nul():
        # No text a person types holds a NUL, and PostgreSQL stores none: refused whole, up front.
        log.warning("console: a request to %s carrying a NUL character", request.path[:60].replace("\x00", "?"))
        return await message(text("console.nul_title"), text("console.nul_body"), status=400, bad=True)
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    staff = await core().staff.signed(request.cookies.get(COOKIE, ""))
    if staff is None:
        return _to_login()
    g.staff = staff
    if request.method not in _SAFE and not await _csrf_ok(staff.csrf):
        log.warning("console: a %s to %s without a valid CSRF token", request.method, request.path[:60])
        return await message(text("console.csrf_title"), text("console.csrf_body"), status=403, bad=True)
    return None


async def _has_nul() -> bool:
    """A NUL in the path, the query or a posted form (an upload's raw body is a file: not read here)."""
    if "\x00" in request.path or any("\x00" in key + value for key, value in request.args.items(multi=True)):
        return True
    if request.method in _SAFE or request.mimetype not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return False
    return any("\x00" in key + value for key, value in (await request.form).items(multi=True))


async def _csrf_ok(expected: str) -> bool:
    given = request.headers.get("X-CSRF-Token", "")
    if not given and request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        given = (await request.form).get("csrf", "")
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


def _to_login() -> Any:
    target = url_for("console.login", next=request.full_path.rstrip("?") if request.method == "GET" else None)
    if request.headers.get("HX-Request"):  # a live part of a page: take the whole page to sign-in
        return Response("", 401, {"HX-Redirect": target})
    if request.method == "GET":
        return redirect(target, 303)
    return Response(text("console.signed_out"), 401, {"Content-Type": "text/plain; charset=utf-8"})


@blueprint.after_request
async def harden(response: Response) -> Response:
    """No console page is cached or framed; scripts come only from the console itself."""
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    widget = request.endpoint == "console.login" and _widget_on()
    response.headers.setdefault("Content-Security-Policy", CSP_WIDGET if widget else CSP)
    return response


def _next_path(raw: str | None) -> str:
    """Where to go after sign-in: a console path only (never another site)."""
    if raw and raw.startswith("/admin") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return url_for("console.dashboard") if "console.dashboard" in _views() else "/admin/"


def _views() -> Any:
    from quart import current_app

    return current_app.view_functions


@blueprint.get("/login")
async def login() -> Any:
    return await _login_page()


async def _login_page(error: str = "", status: int = 200) -> Any:
    pre = secrets.token_urlsafe(24)
    settings = core().settings
    body, code, headers = await page(
        "console/login.html",
        status=status,
        pre=pre,
        error=error,
        next=_next_path(request.args.get("next")),
        widget_bot=settings.bot_username if _widget_on() else "",
        widget_url=f"{settings.public_url.rstrip('/')}/admin/login/telegram",
    )
    response = Response(body, code, headers)
    response.set_cookie(PRE_COOKIE, pre, httponly=True, samesite="Strict", secure=_secure(), path="/admin/login")
    return response


def _token_of(raw: str) -> str:
    """The token from what was posted: the token itself, or the whole link pasted."""
    raw = raw.strip()
    for marker in ("#t=", "?t=", "&t="):
        if marker in raw:
            raw = raw.split(marker, 1)[1]
    return raw.split("&", 1)[0].strip()


@blueprint.post("/login")
async def login_post() -> Any:
    form = await request.form
    pre = request.cookies.get(PRE_COOKIE, "")
    if not pre or not hmac.compare_digest(pre.encode(), form.get("pre", "").encode()):
        return await _login_page(text("console.login_stale"), 403)
    token = _token_of(form.get("token", ""))
    if not token or len(token) > 200:
        return await _login_page(text("console.login_missing"), 400)
    try:
        session_token, staff = await core().staff.sign_in(token, client=_client())
    except (SignInRefused, NotFound, Forbidden) as exc:
        log.info("console sign-in refused: %s", exc.message)
        return await _login_page(_reason(exc), 403)
    log.info("console: operator %s signed in by link", staff.user_id)
    return _signed_in(session_token, _next_path(form.get("next")))


@blueprint.get("/login/telegram")
async def login_telegram() -> Any:
    if not _widget_on():
        return await _login_page(text("console.widget_off"), 404)
    fields = {key: value for key, value in request.args.items() if key != "next"}
    try:
        session_token, staff = await core().staff.sign_in_telegram(fields, client=_client())
    except (Forbidden, NotFound) as exc:
        log.info("console Telegram sign-in refused: %s", exc.message)
        return await _login_page(_reason(exc), 403)
    log.info("console: operator %s signed in with Telegram", staff.user_id)
    return _signed_in(session_token, _next_path(None))


def _reason(exc: QuanyiError) -> str:
    from quanyi.webhooks.console.shell import reason

    return reason(exc)


def _client() -> str:
    agent = request.headers.get("User-Agent", "")[:80]
    return f"{client_address()} {agent}".strip()


def _signed_in(session_token: str, target: str) -> Any:
    response = redirect(target, 303)
    response.set_cookie(COOKIE, session_token, httponly=True, samesite="Strict", secure=_secure(), path="/admin")
    response.delete_cookie(PRE_COOKIE, path="/admin/login")
    return response


@blueprint.post("/logout")
async def logout() -> Any:
    await core().staff.sign_out(request.cookies.get(COOKIE, ""))
    log.info("console: operator %s signed out", me().user_id)
    response = redirect(url_for("console.login"), 303)
    response.delete_cookie(COOKIE, path="/admin")
    return response


@blueprint.get("/lang/<code>")
async def set_language(code: str) -> Any:
    target = _next_path(request.args.get("next"))
    response = redirect(target, 303)
    if code in ("zh", "en"):
        response.set_cookie(LANG_COOKIE, code, max_age=365 * 86400, samesite="Lax", secure=_secure(), path="/admin")
    return response
