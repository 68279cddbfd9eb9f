"""The Quart application factory."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from quart import Quart, Response, current_app, jsonify, request

from quanyi.core.errors import QuanyiError
from quanyi.core.platform.jsonsafe import loads_limited
from quanyi.core.services import Core
from quanyi.webhooks import api, console, limits, pay, recharge, redeem, site, uploads

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "web"
MAX_BODY = 64 * 1024

TelegramFeed = Callable[[dict[str, Any]], Awaitable[None]]


def create_app(core: Core, *, telegram_feed: TelegramFeed | None = None) -> Quart:
    app = Quart(__name__, template_folder=str(TEMPLATES))
    app.request_class = uploads.request_class(core.settings.max_stock_file_mb * 1024 * 1024)
    app.asgi_app = uploads.PacedUploads(app.asgi_app)  # type: ignore[method-assign]
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.config["BODY_TIMEOUT"] = 10
    app.extensions["quanyi.core"] = core

    @app.get("/healthz")
    async def healthz() -> tuple[Response, int]:
        if not await core.platform.alive():  # the database does not answer: say so, do not crash
            log.warning("health check: database unreachable")
            return jsonify({"status": "unavailable"}), 503
        return jsonify({"status": "ok"}), 200

    _refuse_large_bodies(app)  # first: an oversized request is answered before any other hook
    _limit_edges(app, core)
    app.register_blueprint(site.blueprint)
    app.register_blueprint(pay.blueprint)
    app.register_blueprint(redeem.blueprint)
    app.register_blueprint(recharge.blueprint)
    app.register_blueprint(api.blueprint)
    app.register_blueprint(console.load_pages())
    if telegram_feed is not None:
        _add_telegram_webhook(app, core, telegram_feed)

    @app.errorhandler(413)
    async def too_large(_error: Exception) -> tuple[Response | str, int, dict[str, str]]:
        return too_large_answer()  # a body without Content-Length found too large while read

    @app.errorhandler(404)
    async def not_found(_error: Exception) -> tuple[str, int]:
        return "not found", 404

    @app.errorhandler(405)
    async def bad_method(_error: Exception) -> tuple[str, int]:
        return "method not allowed", 405

    return app


def too_large_answer() -> tuple[Response | str, int, dict[str, str]]:
    """413 in the caller's own language: JSON ``payload_too_large`` on the JSON endpoints (the
    partner API, supplier, Stripe and Crypto Pay callbacks), plain text elsewhere (EPay's notify
    reads only ``success``/``fail``, so it gets ``fail``; pages)."""
    if request.path.startswith(uploads.UPLOAD_PREFIX):
        return _upload_too_large()
    if request.path.startswith(limits.JSON_PREFIXES):
        message = f"the request body is over {MAX_BODY // 1024} KB"
        return jsonify({"error": "payload_too_large", "message": message}), 413, {}
    text = "fail" if request.path.startswith("/pay/epay/") else "request body too large"
    return text, 413, {"Content-Type": "text/plain; charset=utf-8"}


UPLOAD_PREFIX = uploads.UPLOAD_PREFIX  # the console's file uploads: stock files, statements


def _refuse_large_bodies(app: Quart) -> None:
    @app.before_request
    async def refuse_large_body() -> tuple[Response | str, int, dict[str, str]] | None:
        if request.path.startswith(UPLOAD_PREFIX):
            return _allow_upload()
        # Refused up front: an endpoint that never reads the body would otherwise answer it.
        return too_large_answer() if (request.content_length or 0) > MAX_BODY else None


def _allow_upload() -> tuple[Response | str, int, dict[str, str]] | None:
    """A console upload may be as large as ``QUANYI_MAX_STOCK_FILE_MB`` (the views stream it to
    disk, never into memory; ``uploads.request_class`` gave it that limit); a larger declared
    length is refused before anything reads the body."""
    limit = current_app.extensions["quanyi.core"].settings.max_stock_file_mb * 1024 * 1024
    return _upload_too_large() if (request.content_length or 0) > limit else None


def _upload_too_large() -> tuple[Response | str, int, dict[str, str]]:
    """The console shows this answer where the upload's report would go: in the reader's language."""
    from quanyi.webhooks.console.shell import text

    limit = current_app.extensions["quanyi.core"].settings.max_stock_file_mb
    return text("console.upload_too_large", mb=limit), 413, {"Content-Type": "text/plain; charset=utf-8"}


def _add_telegram_webhook(app: Quart, core: Core, feed: TelegramFeed) -> None:
    import hmac

    secret = core.settings.bot_webhook_secret

    @app.post("/telegram/webhook")
    async def telegram_webhook() -> tuple[str, int]:
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not secret or not hmac.compare_digest(given.encode(), secret.encode()):
            log.warning("telegram webhook: bad secret token from %s", request.remote_addr)
            return "forbidden", 403
        try:
            update = loads_limited(await request.get_data())
        except QuanyiError:  # not JSON, or nested past any update Telegram sends
            return "bad update", 400
        if not isinstance(update, dict):
            return "bad update", 400
        await feed(update)
        return "", 200


def _limit_edges(app: Quart, core: Core) -> None:
    limits.install(app, core.settings)

    @app.before_request
    async def limit() -> tuple[Response | str, int, dict[str, str]] | None:
        # Pages and the partner API count requests; callbacks count only their failures (limits).
        return await limits.before_request(request.path)
