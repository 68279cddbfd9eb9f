"""Payment callbacks and the sandbox pay page.

A callback is verified (signature, merchant, amount, order) before anything changes;
a refused one answers 4xx (EPay: the body ``fail``) and is logged with its reason. One that
fails verification counts against its client's budget of failures (``limits``); past it the
answer is 429. A verified callback is never limited.

Beside a real payment method the sandbox is for operators only: its pages and its notify
refuse a sandbox order placed by anyone else, so a buyer cannot pay nothing by crafting the URL.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from quart import Blueprint, Response, jsonify, render_template, request

from quanyi.core.errors import CallbackRejected, NotFound, PaymentMethodUnavailable
from quanyi.core.models import OrderStatus
from quanyi.core.money import Money
from quanyi.core.payments.base import CallbackRequest, PaymentEvent, RefundEvent
from quanyi.core.payments.sandbox import Sandbox
from quanyi.core.sales.orders import get_order
from quanyi.core.sales.refunds import record_provider_refund
from quanyi.i18n import raw_t
from quanyi.webhooks import limits
from quanyi.webhooks.site import core, page_language, page_texts

log = logging.getLogger(__name__)
blueprint = Blueprint("pay", __name__)


async def _callback_request() -> CallbackRequest:
    form: list[tuple[str, str]] = []
    if request.method == "POST" and request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = list((await request.form).items(multi=True))
        if any(not isinstance(key, str) for key, _ in form):  # werkzeug's reading of a malformed part name
            raise CallbackRejected("malformed form field")
    return CallbackRequest(
        http_method=request.method,
        query=list(request.args.items(multi=True)),
        form=form,
        body=await request.get_data(True, False, False),  # cache, bytes, no form parsing: the typed overload
        headers=dict(request.headers),
    )


@dataclass(frozen=True)
class Handled:
    outcome: str | None = None
    refused: str | None = None  # the reason, when refused
    code: str | None = None  # a refusal's own stable code, where it has one (``json_too_deep``)
    # Refused before it verified (bad signature, malformed, method not enabled): only such a
    # refusal counts against the client's budget; an authentic callback never does.
    unverified: bool = False


Accept = Callable[[PaymentEvent], Awaitable[None]]


async def handle_callback(method_name: str, accept: Accept | None = None) -> Handled:
    """Verify and apply one callback; ``accept`` may refuse a verified payment before it is applied."""
    callback: CallbackRequest | None = None
    verified = False
    try:
        callback = await _callback_request()
        method = core().payments.get(method_name)
        event = method.verify(callback)
        verified = True
        if event is None:  # authentic, but nothing to act on (e.g. a WAIT_BUYER_PAY notify)
            return Handled()
        if isinstance(event, RefundEvent):
            outcome = str(await record_provider_refund(core(), event))
            log.info("%s refund callback for payment %r: %s", method_name, event.provider_txn_id[:64], outcome)
            return Handled(outcome)
        if accept is not None:
            await accept(event)
        outcome = str((await core().fulfiller.submit(event)).value)
    except (CallbackRejected, PaymentMethodUnavailable) as exc:
        params = callback.params() if callback is not None else []
        claimed = next((str(v) for k, v in params if k in ("out_trade_no", "order_no")), "?")
        # %r and a length cap: whatever the caller sent cannot forge or flood log lines.
        log.warning(
            "%s callback refused from %s: %r (order %r)",
            method_name,
            request.remote_addr,
            exc.message[:120],
            claimed[:40],
        )
        code = exc.details.get("code")
        return Handled(refused=exc.message, code=str(code) if code else None, unverified=not verified)
    log.info("%s callback for %s: %s", method_name, event.order_number, outcome)
    return Handled(outcome)


PLAIN = {"Content-Type": "text/plain; charset=utf-8"}
Answer = tuple[Response | str, int, dict[str, str]]


async def _over_budget(handled: Handled) -> Answer | None:
    """The 429 for a callback that failed verification once its client is past the budget."""
    return await limits.count_failure() if handled.unverified else None


async def plain_callback(method_name: str, accept: Accept | None = None) -> Answer:
    """EPay's convention (the sandbox follows it): ``success`` or ``fail`` as plain text."""
    handled = await handle_callback(method_name, accept)
    if handled.refused is None:
        return "success", 200, PLAIN
    return await _over_budget(handled) or ("fail", 400, PLAIN)


@blueprint.route("/pay/epay/notify", methods=["GET", "POST"])
async def epay_notify() -> Answer:
    return await plain_callback("epay")


async def json_callback(method_name: str, flag: str) -> Answer:
    """A JSON answer; ``flag`` is the provider's own word for "taken" (``ok``, ``received``)."""
    handled = await handle_callback(method_name)
    if handled.refused is None:
        return jsonify({flag: True, "outcome": handled.outcome}), 200, {}
    refusal: dict[str, object] = {flag: False, "error": handled.refused}
    if handled.code:
        refusal["code"] = handled.code
    return await _over_budget(handled) or (jsonify(refusal), 400, {})


@blueprint.post("/pay/cryptobot/webhook")
async def cryptobot_webhook() -> Answer:
    return await json_callback("cryptobot", "ok")


@blueprint.post("/pay/stripe/webhook")
async def stripe_webhook() -> Answer:
    return await json_callback("stripe", "received")


def _sandbox_allowed(payment_method: str, user_id: int | None) -> bool:
    """False for a sandbox order whose buyer may not pay in the sandbox (beside a real method,
    anyone but an operator): such an order, however it was placed, is never paid for nothing."""
    return payment_method != "sandbox" or core().payments.offered("sandbox", user_id)


async def _operators_only(event: PaymentEvent) -> None:
    try:
        async with core().db.read() as session:
            order = await get_order(session, event.order_number)
    except NotFound:
        return  # refused as unknown by the fulfilment, as for any method
    if not _sandbox_allowed(order.payment_method, order.user_id):
        raise CallbackRejected("sandbox payments beside a real method are for operators' orders only")


@blueprint.post("/pay/sandbox/notify")
async def sandbox_notify() -> Answer:
    return await plain_callback("sandbox", _operators_only)


def _sandbox() -> Sandbox | None:
    try:
        method = core().payments.get("sandbox")
    except PaymentMethodUnavailable:
        return None
    return method if isinstance(method, Sandbox) else None


async def _operators_only_page() -> tuple[str, int]:
    tx = page_texts()
    text = tx["sandbox_operators_only"]
    return await render_template("message.html", tx=tx, title=tx["sandbox_title"], text=text, bad=True), 403


@blueprint.get("/pay/sandbox/<order_no>")
async def sandbox_page(order_no: str) -> tuple[str, int]:
    lang = page_language()
    tx = page_texts()
    if _sandbox() is None:
        return "sandbox payments are not enabled", 404
    try:
        async with core().db.read() as session:
            order = await get_order(session, order_no)
    except NotFound:
        return await render_template(
            "message.html", tx=tx, title=tx["sandbox_title"], text=tx["unknown_order"], bad=True
        ), 404
    if not _sandbox_allowed(order.payment_method, order.user_id):
        return await _operators_only_page()
    payable = order.status == OrderStatus.PENDING and order.payment_method == "sandbox"
    status = raw_t(lang, f"status.{order.status}")
    return (
        await render_template(
            "sandbox_pay.html",
            tx=tx,
            order=order,
            amount=str(Money(order.amount, order.currency)),
            status=status,
            payable=payable,
            not_payable=tx["not_payable"].format(status=status),
        ),
        200,
    )


@blueprint.post("/pay/sandbox/<order_no>")
async def sandbox_pay(order_no: str) -> tuple[str, int]:
    """The pay button: post a signed callback to our own notify URL, as a gateway would."""
    tx = page_texts()
    sandbox = _sandbox()
    if sandbox is None:
        return "sandbox payments are not enabled", 404
    try:
        async with core().db.read() as session:
            order = await get_order(session, order_no)
    except NotFound:
        return await render_template(
            "message.html", tx=tx, title=tx["sandbox_title"], text=tx["unknown_order"], bad=True
        ), 404
    if not _sandbox_allowed(order.payment_method, order.user_id):
        return await _operators_only_page()
    if order.status != OrderStatus.PENDING or order.payment_method != "sandbox":
        # The page shows no button then; a re-posted form must not pay the order twice.
        status = raw_t(page_language(), f"status.{order.status}")
        text = tx["not_payable"].format(status=status)
        return await render_template("message.html", tx=tx, title=tx["sandbox_title"], text=text, bad=True), 409
    params = sandbox.callback_params(order.number, Money(order.amount, order.currency).format_plain(), order.currency)
    settings = core().settings
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::", "") else settings.http_host
    url = f"http://{host}:{settings.http_port}/pay/sandbox/notify"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client:
            async with client.post(url, data=params) as response:
                body = (await response.text()).strip()
    except aiohttp.ClientError as exc:
        log.warning("sandbox pay: could not reach our own notify URL: %s", type(exc).__name__)
        body = "unreachable"
    if body == "success":
        return await render_template(
            "message.html", tx=tx, title=tx["paid_title"], text=tx["paid_note"], bad=False
        ), 200
    return (
        await render_template(
            "message.html", tx=tx, title=tx["failed_title"], text=tx["failed_note"].format(reason=body), bad=True
        ),
        400,
    )


@blueprint.get("/pay/return/<order_no>")
async def pay_return(order_no: str) -> str:
    tx = page_texts()
    return await render_template("message.html", tx=tx, title=tx["return_title"], text=tx["return_note"], bad=False)
