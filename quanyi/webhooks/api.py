"""The open API for partner systems under ``/api/v1``: JSON in, JSON out, one key per partner.

Errors are ``{"error": <stable code>}`` with the HTTP status of ``_STATUS``. Tokens and keys
never reach a log line.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from quart import Blueprint, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from quanyi.core import partners, redeem
from quanyi.core.errors import InvalidInput, NotFound, QuanyiError, TokenUnusable
from quanyi.core.models import Partner
from quanyi.core.redeem import TokenView
from quanyi.webhooks.site import core

log = logging.getLogger(__name__)
blueprint = Blueprint("api", __name__, url_prefix="/api/v1")

_STATUS = {
    "unauthorized": 401,
    "not_found": 404,
    "token_used_up": 410,
    "token_expired": 410,
    "token_void": 410,
    "invalid_input": 400,
}
_LINK_MARK = "/r/"


def _error(code: str, status: int | None = None) -> tuple[Response, int]:
    return jsonify({"error": code}), status or _STATUS.get(code, 500)


async def _partner() -> Partner | None:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    async with core().db.read() as session:
        return await partners.authenticate(session, core().keyring, key.strip())


async def _token() -> str:
    """The token from the body ``{"token": ...}``: the bare token or a whole ``/r/<token>`` link."""
    try:
        # Bytes that are not UTF-8 JSON are a client's mistake, never a server error.
        body: Any = json.loads((await request.get_data()).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("token"), str):
        raise InvalidInput('the body must be JSON {"token": "..."}')
    token = body["token"].strip()
    if _LINK_MARK in token:
        token = token.rsplit(_LINK_MARK, 1)[1].split("?", 1)[0].split("#", 1)[0].strip("/")
    if not token:
        raise InvalidInput("token is empty")
    return token


def _answer(view: TokenView) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "valid": view.state == redeem.TokenState.VALID,
        "state": view.state.value,
        "product": view.product_name,
        "entitlement": view.entitlement,
        "uses_left": view.uses_left,
        "max_uses": view.max_uses,
        "expires_at": view.expires_at.isoformat() if view.expires_at else None,
    }
    if view.use_no is not None:
        answer["use_no"] = view.use_no
    return answer


@blueprint.errorhandler(Exception)
async def failed(error: Exception) -> tuple[Response, int]:
    if isinstance(error, HTTPException):
        code = {400: "invalid_input", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        return _error(code.get(error.code or 500, "error"), error.code)
    log.error("api: request failed with %s", type(error).__name__)
    return _error("internal_error", 500)


@blueprint.post("/redeem/verify")
async def verify() -> tuple[Response, int]:
    """What a link grants and whether it can be used now; takes no use."""
    if await _partner() is None:
        return _error("unauthorized")
    try:
        token = await _token()
        async with core().db.read() as session:
            view = await redeem.inspect(session, core().keyring, token)
    except QuanyiError as exc:
        return _error(exc.code if exc.code in _STATUS else "invalid_input")
    if view.state != redeem.TokenState.VALID:
        return _error(f"token_{view.state.value}")
    return jsonify(_answer(view)), 200


@blueprint.post("/redeem/consume")
async def consume() -> tuple[Response, int]:
    """Take one use of a link for the calling partner (recorded as ``partner:<code>`` via ``api``)."""
    partner = await _partner()
    if partner is None:
        return _error("unauthorized")
    try:
        token = await _token()
        async with core().db.transaction() as session:
            view = await redeem.consume(session, core().keyring, token, by=f"partner:{partner.code}", channel="api")
    except (NotFound, TokenUnusable, InvalidInput) as exc:
        return _error(exc.code)
    log.info(
        "api: partner %s took use %d of %d of link %d", partner.code, view.use_no or 0, view.max_uses, view.token_id
    )
    return jsonify(_answer(view)), 200
