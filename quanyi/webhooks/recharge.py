"""Supplier callbacks: ``POST /recharge/<supplier>/callback`` (docs/suppliers.md).

The raw body is verified before anything is read from it; a refused callback changes
nothing and is logged with its reason. Every accepted one is idempotent: a repeat or a
stale report answers 200 too, so the supplier stops sending it.
"""

from __future__ import annotations

import logging

from quart import Blueprint, Response, jsonify, request

from quanyi.core.errors import CallbackRejected, ConfigError, NotFound
from quanyi.webhooks import limits
from quanyi.webhooks.site import core

log = logging.getLogger(__name__)
blueprint = Blueprint("recharge", __name__)


def _error(status: int, code: str) -> tuple[Response, int]:
    return jsonify({"error": code}), status


@blueprint.post("/recharge/<supplier>/callback")
async def callback(supplier: str) -> limits.Answer | tuple[Response, int]:
    # A refusal before the callback verifies (no such supplier, bad signature, unreadable body)
    # counts against the client's budget of failures: past it, 429. A verified one never counts.
    body = await request.get_data(as_text=False)
    assert isinstance(body, bytes)
    try:
        applied = await core().sales.apply_recharge_callback(supplier, dict(request.headers), body)
    except ConfigError:
        return await limits.count_failure() or _error(404, "not_found")
    except CallbackRejected as exc:
        return await _refused(supplier, exc)
    except NotFound as exc:
        log.warning("%s recharge callback for unknown order %r", supplier, str(exc.details.get("order_number"))[:64])
        return _error(404, "not_found")
    log.info("%s recharge callback for %s (%s): %s", supplier, applied.order_number, applied.state, applied.outcome)
    return jsonify({"ok": True}), 200


async def _refused(supplier: str, exc: CallbackRejected) -> limits.Answer | tuple[Response, int]:
    # Signature and clock problems are the sender's credentials; anything else is the body.
    forged = any(word in exc.message for word in ("signature", "timestamp"))
    log.warning("%s recharge callback refused from %s: %r", supplier, request.remote_addr, exc.message[:120])
    if limited := await limits.count_failure():
        return limited
    if forged:
        return _error(401, "bad_signature")
    # JSON nested too deep to read has its own code; any other refused body is invalid_request.
    return _error(400, "json_too_deep" if exc.details.get("code") == "json_too_deep" else "invalid_request")
