"""Per-client limits at the HTTP edges (the redemption pages keep their own, in ``redeem``).

Three kinds of path, three rules:

- callbacks (payment notifies and webhooks, supplier callbacks): a gateway sends every notify
  from a few addresses, so requests are never counted as such. Only a callback that fails
  verification counts, against a budget per client IP; past it, failures answer 429 instead of
  their 4xx. A callback that verifies is never refused, however many arrive.
- the partner API: every request counts, in the same window as the callback failures (one
  budget per address, ``QUANYI_CALLBACK_REQUESTS_PER_MINUTE``).
- public pages (the catalogue, the sandbox pay pages, the pay return page): every request
  counts against ``QUANYI_PAGE_REQUESTS_PER_MINUTE``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from quart import Quart, Response, current_app, jsonify, render_template, request

from quanyi.core.platform.config import Settings
from quanyi.core.platform.ratelimit import Limiter, make_limiter
from quanyi.webhooks.redeem import client_address
from quanyi.webhooks.site import page_texts

log = logging.getLogger(__name__)

CALLBACK_PATHS = frozenset({"/pay/epay/notify", "/pay/stripe/webhook", "/pay/cryptobot/webhook", "/pay/sandbox/notify"})
API_PREFIX = "/api/v1/"
JSON_PREFIXES = ("/recharge/", API_PREFIX, "/pay/stripe/", "/pay/cryptobot/")
PLAIN = {"Content-Type": "text/plain; charset=utf-8"}
_KEY = "quanyi.edge_limits"

Answer = tuple[Response | str, int, dict[str, str]]


@dataclass(frozen=True)
class EdgeLimits:
    # Partner API requests and failed callbacks, per client IP (one window: an address that
    # floods either is slowed on both).
    requests: Limiter
    pages: Limiter
    settings: Settings


def install(app: Quart, settings: Settings) -> None:
    """Build the limiters once per app (shared through Redis when ``QUANYI_REDIS_URL`` is set)."""
    app.extensions[_KEY] = EdgeLimits(
        requests=make_limiter(settings.redis_url, "http", settings.callback_requests_per_minute),
        pages=make_limiter(settings.redis_url, "pages", settings.page_requests_per_minute),
        settings=settings,
    )


def is_callback(path: str) -> bool:
    return path in CALLBACK_PATHS or path.startswith("/recharge/")


def is_page(path: str) -> bool:
    """Public pages, and the console's sign-in pages (the rest of the console needs a session)."""
    if path.startswith("/admin/login"):
        return True
    return path == "/" or (path.startswith("/pay/") and path not in CALLBACK_PATHS)


def _limits() -> EdgeLimits:
    limits: EdgeLimits = current_app.extensions[_KEY]
    return limits


async def before_request(path: str) -> Answer | None:
    """Count a partner API request or a page view; the answer when over the limit."""
    limits = _limits()
    if path.startswith(API_PREFIX):
        limiter, per_minute = limits.requests, limits.settings.callback_requests_per_minute
    elif is_page(path):
        limiter, per_minute = limits.pages, limits.settings.page_requests_per_minute
    else:
        return None  # callbacks count their failures only (count_failure), other paths nothing
    client = client_address()
    wait = await limiter.hit(client)
    if not wait:
        return None
    log.warning("rate limit reached for %s on %r", client, path[:40])
    if path.startswith(API_PREFIX):
        return too_many(path, wait, f"more than {per_minute} requests a minute")
    tx = page_texts()
    page = await render_template("message.html", tx=tx, title=tx["too_many_title"], text=tx["too_many"], bad=True)
    return page, 429, {"Retry-After": str(wait)}


async def count_failure() -> Answer | None:
    """Count one callback that failed verification from this client: the 429 answer to give
    instead of the refusal once the client's budget of failures is spent, else None."""
    limits = _limits()
    client = client_address()
    wait = await limits.requests.hit(client)
    if not wait:
        return None
    log.warning("failed callbacks from %s past the limit on %r", client, request.path.split("/")[2][:20])
    per_minute = limits.settings.callback_requests_per_minute
    return too_many(request.path, wait, f"more than {per_minute} refused callbacks a minute")


def too_many(path: str, wait: int, what: str) -> Answer:
    """429 with Retry-After: JSON where the path speaks JSON, else plain text."""
    headers = {"Retry-After": str(wait)}
    if path.startswith(JSON_PREFIXES):
        message = f"{what}; retry in {wait} s"
        return jsonify({"error": "too_many_requests", "message": message}), 429, headers
    return "too many requests", 429, {**headers, **PLAIN}
