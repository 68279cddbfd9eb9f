"""The open API for partner systems under ``/api/v1``: signed requests, JSON in, JSON out.

Every endpoint but the documentation needs a signature (``quanyi.core.partners.apisign``). Errors are
``{"error": <stable code>, "message": <text>}`` with the HTTP status of ``STATUS``; a client's
mistake is never a 5xx. Each endpoint is declared with ``endpoint(...)``, which records its
method, path, parameters and JSON schemas: ``quanyi.webhooks.openapi`` builds the OpenAPI
document from those records, so the document and the code cannot drift apart. Secrets,
codes and tokens never reach a log line.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date
from typing import Any
from urllib.parse import quote

from quart import Blueprint, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from quanyi.core.errors import JsonTooDeep, MalformedJson, QuanyiError
from quanyi.core.partners import apisign
from quanyi.core.platform import jsonsafe
from quanyi.core.sales.redeem import TokenState, TokenView
from quanyi.webhooks import api_schemas as schemas
from quanyi.webhooks.site import core

log = logging.getLogger(__name__)
blueprint = Blueprint("api", __name__, url_prefix="/api/v1")

# Stable error codes and their HTTP status. Every code an endpoint can answer is here.
STATUS = {
    "unauthorized": 401,
    "bad_signature": 401,
    "stale_request": 401,
    "replayed_nonce": 401,
    "forbidden": 403,
    "risk_blocked": 403,
    "risk_hold": 403,
    "risk_challenge": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "already_exists": 409,
    "token_used_up": 410,
    "token_expired": 410,
    "token_void": 410,
    "payload_too_large": 413,
    "invalid_input": 400,
    "json_too_deep": 400,
    "duplicate_parameter": 400,
    "coupon_rejected": 400,
    "insufficient_balance": 402,
    "out_of_stock": 409,
    "allocation_exhausted": 409,
    "not_for_sale": 409,
    "payment_method_unavailable": 409,
    "too_many_requests": 429,
    "internal_error": 500,
}
_LINK_MARK = "/r/"
# Statement days are kept where the day arithmetic and the time-zone conversion cannot overflow
# (datetime stops at year 1 and 9999); no statement line is older than this system.
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(9998, 12, 31)
_DAY_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def error(code: str, message: str, status: int | None = None, **extra: Any) -> tuple[Response, int]:
    return jsonify({"error": code, "message": message, **extra}), status or STATUS.get(code, 400)


def _quanyi_error(exc: QuanyiError) -> tuple[Response, int]:
    if exc.code not in STATUS:  # not a client's mistake: the server's own failure
        log.error("api: request failed with %s (%s)", type(exc).__name__, exc.code)
        return error("internal_error", "the server failed; the request may be retried", 500)
    code = exc.code
    extra: dict[str, Any] = {}
    if exc.code.startswith("risk_") and exc.details.get("decision_id") is not None:
        extra["decision_id"] = exc.details["decision_id"]
    if "field" in exc.details:
        extra["field"] = exc.details["field"]
    return error(code, exc.message, **extra)


# --- the declaration of endpoints (read by the OpenAPI builder) ------------------------------


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # path | query
    schema: dict[str, Any]
    description: str
    required: bool = True


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # OpenAPI form: /orders/{order_no}
    summary: str
    description: str
    responses: dict[int, dict[str, Any]]
    errors: tuple[str, ...]
    request: dict[str, Any] | None = None
    params: tuple[Param, ...] = ()
    signed: bool = True
    tag: str = "partner"
    content_type: str = "application/json"


ENDPOINTS: list[Endpoint] = []
_SIGNED_ERRORS = (
    "unauthorized",
    "bad_signature",
    "stale_request",
    "replayed_nonce",
    "duplicate_parameter",
    "too_many_requests",
)

Handler = Callable[..., Awaitable[tuple[Response, int]]]


def endpoint(
    method: str,
    rule: str,
    *,
    summary: str,
    responses: dict[int, dict[str, Any]],
    errors: tuple[str, ...] = (),
    request_schema: dict[str, Any] | None = None,
    params: tuple[Param, ...] = (),
    signed: bool = True,
    content_type: str = "application/json",
) -> Callable[[Handler], Handler]:
    """Register a route and its documentation. ``rule`` is Quart's (``/orders/<order_no>``)."""

    def register(fn: Handler) -> Handler:
        path = rule.replace("<", "{").replace(">", "}")
        # Any request may be too large (refused before it is routed); a JSON body may nest too deep.
        body_errors = ("json_too_deep",) if request_schema is not None else ()
        all_errors = (*errors, *(_SIGNED_ERRORS if signed else ()), "invalid_input", *body_errors, "payload_too_large")
        ENDPOINTS.append(
            Endpoint(
                method=method.upper(),
                path=path,
                summary=summary,
                description=(fn.__doc__ or "").strip(),
                responses=responses,
                errors=tuple(dict.fromkeys(all_errors)),
                request=request_schema,
                params=params,
                signed=signed,
                content_type=content_type,
            )
        )
        blueprint.add_url_rule(rule, fn.__name__, fn, methods=[method.upper()])
        return fn

    return register


# --- authentication ------------------------------------------------------------------------


class Refused(Exception):
    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.extra = code, message, extra


@dataclass
class Call:
    partner_id: int
    code: str
    access_key: str
    body: bytes = b""
    extra: dict[str, Any] = field(default_factory=dict)


def _signed_path() -> str:
    """The routed (decoded) path encoded the canonical way: ``apisign.canonical_path`` of it is
    what every spelling of that path signs as."""
    return quote(request.path, safe="/-_.~")


async def authenticate() -> Call:
    """Check the request's signature, window and nonce; ``Refused`` or ``apisign.SignatureError``
    says why not."""
    query = request.query_string.decode("latin-1")
    _refuse_ambiguous_query(query)
    # The headers' shape and the clock first: a request refused here is refused unread.
    presented = apisign.presented(request.headers)
    apisign.check_window(presented.timestamp, time.time())
    body = await request.get_data()
    assert isinstance(body, bytes)
    caller = await core().partners.authenticate(presented, request.method, _signed_path(), query, body)
    return Call(partner_id=caller.partner_id, code=caller.code, access_key=caller.access_key, body=body)


def _refuse_ambiguous_query(query: str) -> None:
    """Before anything reads the query: the signature sorts its pairs, so ``from=A&from=B`` and
    ``from=B&from=A`` sign alike while a reader takes the first; a name given twice is refused."""
    repeated = apisign.duplicate_names(query)
    if repeated:
        name = repeated[0][:64]
        raise Refused("duplicate_parameter", f"query parameter {name!r} is given more than once", field=name)


def signed_call(fn: Callable[[Call], Awaitable[tuple[Response, int]]]) -> Handler:
    async def run(**kwargs: Any) -> tuple[Response, int]:
        try:
            call = await authenticate()
            call.extra.update(kwargs)
            return await fn(call)
        except Refused as exc:
            return error(exc.code, exc.message, **exc.extra)
        except QuanyiError as exc:
            return _quanyi_error(exc)

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def _json_body(call: Call) -> Any:
    if not call.body:
        return None
    try:
        return jsonsafe.loads_limited(call.body)
    except JsonTooDeep as exc:
        raise Refused("json_too_deep", exc.message) from None
    except MalformedJson:
        raise Refused("invalid_input", "the body must be UTF-8 JSON") from None


@blueprint.errorhandler(Exception)
async def failed(exc: Exception) -> tuple[Response, int]:
    if isinstance(exc, HTTPException):
        code = {400: "invalid_input", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        name = code.get(exc.code or 500, "invalid_input")
        return error(name, exc.description or name, exc.code)
    log.error("api: request failed with %s", type(exc).__name__)
    return error("internal_error", "the server failed; the request may be retried with the same order_no", 500)


# --- endpoints -------------------------------------------------------------------------------


@signed_call
async def _products(call: Call) -> tuple[Response, int]:
    """Products this partner can buy, at its prices, with what its allocation has left
    (``available`` null: no cap)."""
    items = await core().partners.products(call.partner_id)
    return jsonify({"products": items}), 200


endpoint(
    "GET",
    "/products",
    summary="List products with the partner's prices and allocation left",
    responses={200: schemas.PRODUCTS},
)(_products)


@signed_call
async def _create_order(call: Call) -> tuple[Response, int]:
    """Place an order paid from the partner's balance. ``order_no`` (the partner's own number) is
    the idempotency key: the same number with the same body returns the same order (200), with
    another body it is a 409 ``conflict``. A card-key order is delivered in the answer; a
    direct recharge answers ``paid`` and its result comes by webhook (or by querying)."""
    placed = await core().partners.place_order(call.partner_id, _json_body(call))
    log.info("api: partner %s order %s %s", call.code, placed.order["number"], "placed" if placed.created else "again")
    return jsonify(placed.order), 201 if placed.created else 200


endpoint(
    "POST",
    "/orders",
    summary="Create an order (idempotent by order_no)",
    request_schema=schemas.ORDER_REQUEST,
    responses={201: schemas.ORDER, 200: schemas.ORDER},
    errors=(
        "conflict",
        "insufficient_balance",
        "out_of_stock",
        "allocation_exhausted",
        "not_for_sale",
        "not_found",
        "risk_blocked",
        "risk_hold",
        "risk_challenge",
        "forbidden",
    ),
)(_create_order)

ORDER_NO = Param("order_no", "path", {"type": "string", "maxLength": 64}, "the partner's own order number")


@signed_call
async def _get_order(call: Call) -> tuple[Response, int]:
    """An order by the partner's own number: its status, its codes or links once delivered,
    its recharge state. Another partner's order is ``not_found``."""
    shown = await core().partners.order(call.partner_id, str(call.extra["order_no"]))
    return jsonify(shown), 200


endpoint(
    "GET",
    "/orders/<order_no>",
    summary="Query an order",
    params=(ORDER_NO,),
    responses={200: schemas.ORDER},
    errors=("not_found",),
)(_get_order)


@signed_call
async def _balance(call: Call) -> tuple[Response, int]:
    """The prepaid balance orders are paid from, in minor units."""
    balance = await core().partners.balance(call.code)
    return jsonify({"partner": balance.code, "currency": balance.currency, "balance": balance.balance}), 200


endpoint("GET", "/balance", summary="The partner's balance", responses={200: schemas.BALANCE})(_balance)


def _day(name: str) -> date | None:
    text = request.args.get(name)
    if text is None:
        return None
    wanted = f"{name}: a date YYYY-MM-DD from {FIRST_DAY} to {LAST_DAY}"
    # fullmatch first: fromisoformat also takes 20260101 and week dates such as 2026-W01-1.
    if not _DAY_RE.fullmatch(text):
        raise Refused("invalid_input", wanted, field=name)
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise Refused("invalid_input", wanted, field=name) from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise Refused("invalid_input", wanted, field=name)
    return day


DAY_SCHEMA = {
    "type": "string",
    "format": "date",
    "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
    "description": f"YYYY-MM-DD, from {FIRST_DAY} to {LAST_DAY}",
}


@signed_call
async def _statement(call: Call) -> tuple[Response, int]:
    """Balance movements (top-ups, orders, refunds) from ``from`` to ``to`` inclusive, days in
    the operator's time zone, with the opening and closing balance."""
    first_day, last_day = _day("from"), _day("to")
    stmt = await core().partners.statement(call.code, first_day, last_day)
    return jsonify(
        {
            "currency": stmt.currency,
            "from": stmt.first_day.isoformat(),
            "to": stmt.last_day.isoformat(),
            "opening_balance": stmt.opening,
            "closing_balance": stmt.closing,
            "lines": [
                {
                    "at": line.at.astimezone(UTC).isoformat(),
                    "kind": line.kind,
                    "amount": line.amount,
                    "order_no": line.order_no,
                    "ref": line.ref,
                }
                for line in stmt.lines
            ],
        }
    ), 200


endpoint(
    "GET",
    "/statement",
    summary="Balance statement",
    params=(
        Param("from", "query", DAY_SCHEMA, "first day (default: 6 days ago)", False),
        Param("to", "query", DAY_SCHEMA, "last day (default: today)", False),
    ),
    responses={200: schemas.STATEMENT},
)(_statement)


def _token(call: Call) -> str:
    """The token from the body ``{"token": ...}``: the bare token or a whole ``/r/<token>`` link."""
    body = _json_body(call)
    if not isinstance(body, dict) or not isinstance(body.get("token"), str):
        raise Refused("invalid_input", 'the body must be JSON {"token": "..."}', field="token")
    token = body["token"].strip()
    if _LINK_MARK in token:
        token = token.rsplit(_LINK_MARK, 1)[1].split("?", 1)[0].split("#", 1)[0].strip("/")
    if not token:
        raise Refused("invalid_input", "token is empty", field="token")
    return token


def _answer(view: TokenView) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "valid": view.state == TokenState.VALID,
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


@signed_call
async def _verify(call: Call) -> tuple[Response, int]:
    """What a redemption link grants and whether it can be used now; takes no use."""
    view = await core().partners.inspect_link(_token(call))
    if view.state != TokenState.VALID:
        return error(f"token_{view.state.value}", f"the link is {view.state.value}")
    return jsonify(_answer(view)), 200


TOKEN_ERRORS = ("not_found", "token_used_up", "token_expired", "token_void")
endpoint(
    "POST",
    "/redeem/verify",
    summary="Verify a redemption code or link",
    request_schema=schemas.TOKEN_REQUEST,
    responses={200: schemas.TOKEN},
    errors=TOKEN_ERRORS,
)(_verify)


@signed_call
async def _consume(call: Call) -> tuple[Response, int]:
    """Take one use of a redemption link (核销), recorded as ``partner:<code>`` via ``api``."""
    view = await core().partners.consume_link(call.code, _token(call))
    log.info(
        "api: partner %s took use %d of %d of link %d",
        call.code,
        view.use_no or 0,
        view.max_uses,
        view.token_id,
    )
    return jsonify(_answer(view)), 200


endpoint(
    "POST",
    "/redeem/consume",
    summary="Consume one use of a redemption code (核销)",
    request_schema=schemas.TOKEN_REQUEST,
    responses={200: schemas.TOKEN},
    errors=TOKEN_ERRORS,
)(_consume)


# --- the documentation (unsigned) ------------------------------------------------------------


async def _openapi() -> tuple[Response, int]:
    """This API's OpenAPI 3.1 document."""
    from quanyi.webhooks import openapi  # it reads ENDPOINTS, so it imports this module

    return jsonify(openapi.document(core().settings.public_url)), 200


endpoint(
    "GET",
    "/openapi.json",
    summary="The OpenAPI document of this API",
    responses={200: {"type": "object", "required": ["openapi", "paths"]}},
    errors=("too_many_requests",),
    signed=False,
)(_openapi)


async def _docs() -> tuple[Response, int]:
    """This API's documentation as one HTML page: endpoints, bodies, error codes and signing."""
    from quart import render_template

    from quanyi.webhooks import openapi

    page = await render_template("api_docs.html", **openapi.page(core().settings.public_url))
    return Response(page, content_type="text/html; charset=utf-8"), 200


endpoint(
    "GET",
    "/docs",
    summary="The documentation of this API (HTML)",
    responses={200: {"type": "string"}},
    errors=("too_many_requests",),
    signed=False,
    content_type="text/html",
)(_docs)


# --- paths no endpoint has -------------------------------------------------------------------

_ANY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def _same_shape(path: str, rest: str) -> bool:
    want, got = path.strip("/").split("/"), rest.split("/")
    return len(want) == len(got) and all((w.startswith("{") and g) or w == g for w, g in zip(want, got, strict=True))


async def _no_endpoint(rest: str = "") -> tuple[Response, int]:
    # Without this an unrouted /api/v1 path (an order_no with an encoded "/", a typo) or a wrong
    # method would get the app's plain-text 404/405: the API answers JSON to everything.
    if any(_same_shape(e.path, rest) and e.method != request.method for e in ENDPOINTS):
        return error("method_not_allowed", f"{request.method} is not allowed here")
    return error("not_found", "no such endpoint")


blueprint.add_url_rule("/", "no_endpoint", _no_endpoint, methods=_ANY_METHOD)
blueprint.add_url_rule("/<path:rest>", "no_endpoint_path", _no_endpoint, methods=_ANY_METHOD)
