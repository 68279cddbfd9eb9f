"""Payment callbacks and the sandbox pay page.

A callback is verified (signature, merchant, amount, order) before anything changes;
a refused one answers 4xx (EPay: the body ``fail``) and is logged with its reason.
"""

from __future__ import annotations

import logging

import aiohttp
from quart import Blueprint, Response, jsonify, render_template, request

from quanyi.core.errors import CallbackRejected, NotFound, PaymentMethodUnavailable
from quanyi.core.models import OrderStatus
from quanyi.core.money import Money
from quanyi.core.orders import get_order
from quanyi.core.payments.base import CallbackRequest, RefundEvent
from quanyi.core.payments.sandbox import Sandbox
from quanyi.core.refunds import record_provider_refund
from quanyi.i18n import raw_t
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
        body=await request.get_data(),
        headers=dict(request.headers),
    )


async def handle_callback(method_name: str) -> tuple[str | None, str | None]:
    """Verify and apply one callback. Returns (outcome, None) or (None, refusal reason)."""
    callback: CallbackRequest | None = None
    try:
        callback = await _callback_request()
        method = core().payments.get(method_name)
        event = method.verify(callback)
        if event is None:  # authentic, but nothing to act on (e.g. a WAIT_BUYER_PAY notify)
            return None, None
        if isinstance(event, RefundEvent):
            outcome = str(await record_provider_refund(core(), event))
            log.info("%s refund callback for payment %r: %s", method_name, event.provider_txn_id[:64], outcome)
            return outcome, None
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
        return None, exc.message
    log.info("%s callback for %s: %s", method_name, event.order_number, outcome)
    return outcome, None


PLAIN = {"Content-Type": "text/plain; charset=utf-8"}


async def plain_callback(method_name: str) -> tuple[str, int, dict[str, str]]:
    """EPay's convention (the sandbox follows it): ``success`` or ``fail`` as plain text."""
    _, refused = await handle_callback(method_name)
    return ("fail", 400, PLAIN) if refused is not None else ("success", 200, PLAIN)


@blueprint.route("/pay/epay/notify", methods=["GET", "POST"])
async def epay_notify() -> tuple[str, int, dict[str, str]]:
    return await plain_callback("epay")


async def json_callback(method_name: str, flag: str) -> tuple[Response, int]:
    """A JSON answer; ``flag`` is the provider's own word for "taken" (``ok``, ``received``)."""
    outcome, refused = await handle_callback(method_name)
    if refused is not None:
        return jsonify({flag: False, "error": refused}), 400
    return jsonify({flag: True, "outcome": outcome}), 200


@blueprint.post("/pay/cryptobot/webhook")
async def cryptobot_webhook() -> tuple[Response, int]:
    return await json_callback("cryptobot", "ok")


@blueprint.post("/pay/stripe/webhook")
async def stripe_webhook() -> tuple[Response, int]:
    return await json_callback("stripe", "received")


@blueprint.post("/pay/sandbox/notify")
async def sandbox_notify() -> tuple[str, int, dict[str, str]]:
    return await plain_callback("sandbox")


def _sandbox() -> Sandbox | None:
    try:
        method = core().payments.get("sandbox")
    except PaymentMethodUnavailable:
        return None
    return method if isinstance(method, Sandbox) else None


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
