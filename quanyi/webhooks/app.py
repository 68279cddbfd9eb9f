"""The Quart application factory."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from quart import Quart, Response, jsonify, request

from quanyi.core.ratelimit import make_limiter
from quanyi.core.services import Core
from quanyi.webhooks import api, pay, recharge, redeem, site

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "web"
MAX_BODY = 64 * 1024
# Callbacks and the partner API, limited per client IP (the redemption pages have their own).
LIMITED_PREFIXES = ("/pay/", "/recharge/", "/api/v1/")
JSON_PREFIXES = ("/recharge/", "/api/v1/", "/pay/stripe/", "/pay/cryptobot/")

TelegramFeed = Callable[[dict[str, Any]], Awaitable[None]]


def create_app(core: Core, *, telegram_feed: TelegramFeed | None = None) -> Quart:
    app = Quart(__name__, template_folder=str(TEMPLATES))
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.config["BODY_TIMEOUT"] = 10
    app.extensions["quanyi.core"] = core

    @app.get("/healthz")
    async def healthz() -> tuple[Response, int]:
        try:
            await core.db.ping()
        except Exception:  # the database does not answer: say so, do not crash
            log.warning("health check: database unreachable")
            return jsonify({"status": "unavailable"}), 503
        return jsonify({"status": "ok"}), 200

    _limit_edges(app, core)
    app.register_blueprint(site.blueprint)
    app.register_blueprint(pay.blueprint)
    app.register_blueprint(redeem.blueprint)
    app.register_blueprint(recharge.blueprint)
    app.register_blueprint(api.blueprint)
    if telegram_feed is not None:
        _add_telegram_webhook(app, core, telegram_feed)

    @app.errorhandler(413)
    async def too_large(_error: Exception) -> tuple[str, int]:
        return "request body too large", 413

    @app.errorhandler(404)
    async def not_found(_error: Exception) -> tuple[str, int]:
        return "not found", 404

    @app.errorhandler(405)
    async def bad_method(_error: Exception) -> tuple[str, int]:
        return "method not allowed", 405

    return app


def _add_telegram_webhook(app: Quart, core: Core, feed: TelegramFeed) -> None:
    import hmac

    secret = core.settings.bot_webhook_secret

    @app.post("/telegram/webhook")
    async def telegram_webhook() -> tuple[str, int]:
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not secret or not hmac.compare_digest(given.encode(), secret.encode()):
            log.warning("telegram webhook: bad secret token from %s", request.remote_addr)
            return "forbidden", 403
        update = await request.get_json(silent=True)
        if not isinstance(update, dict):
            return "bad update", 400
        await feed(update)
        return "", 200


def _limit_edges(app: Quart, core: Core) -> None:
    limiter = make_limiter(core.settings.redis_url, "http", core.settings.callback_requests_per_minute)

    @app.before_request
    async def limit() -> tuple[Response | str, int, dict[str, str]] | None:
        if (request.content_length or 0) > MAX_BODY:
            # Refused up front: an endpoint that never reads the body would otherwise answer it.
            return "request body too large", 413, {"Content-Type": "text/plain; charset=utf-8"}
        path = request.path
        if not path.startswith(LIMITED_PREFIXES):
            return None
        client = redeem.client_address()
        wait = await limiter.hit(client)
        if not wait:
            return None
        log.warning("rate limit reached for %s on %r", client, path.split("/")[2][:20])
        headers = {"Retry-After": str(wait)}
        if path.startswith(JSON_PREFIXES):
            message = f"more than {core.settings.callback_requests_per_minute} requests a minute; retry in {wait} s"
            return jsonify({"error": "too_many_requests", "message": message}), 429, headers
        return "too many requests", 429, {**headers, "Content-Type": "text/plain; charset=utf-8"}
