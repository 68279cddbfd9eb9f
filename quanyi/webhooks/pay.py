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
from dataclasses import dataclass

from quart import Blueprint, Response, jsonify, render_template, request

from quanyi.core.errors import CallbackRejected, Forbidden, InvalidInput, NotFound, PaymentMethodUnavailable
from quanyi.core.money import Money
from quanyi.core.payments.base import CallbackRequest
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


async def handle_callback(method_name: str) -> Handled:
    """Verify and apply one callback."""
    callback: CallbackRequest | None = None
    try:
        callback = await _callback_request()
        applied = await core().sales.apply_payment_callback(method_name, callback)
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
        verified = bool(exc.details.get("verified"))
        return Handled(refused=exc.message, code=str(code) if code else None, unverified=not verified)
    if applied.outcome is None:
        return Handled()
    if applied.refund_of is not None:
        log.info("%s refund callback for payment %r: %s", method_name, applied.refund_of[:64], applied.outcome)
    else:
        log.info("%s callback for %s: %s", method_name, applied.order_number, applied.outcome)
    return Handled(applied.outcome)


PLAIN = {"Content-Type": "text/plain; charset=utf-8"}
Answer = tuple[Response | str, int, dict[str, str]]


async def _over_budget(handled: Handled) -> Answer | None:
    """The 429 for a callback that failed verification once its client is past the budget."""
    return await limits.count_failure() if handled.unverified else None


async def plain_callback(method_name: str) -> Answer:
    """EPay's convention (the sandbox follows it): ``success`` or ``fail`` as plain text."""
    handled = await handle_callback(method_name)
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


@blueprint.post("/pay/sandbox/notify")
async def sandbox_notify() -> Answer:
    # Beside a real method the core refuses a sandbox order that is not an operator's.
    return await plain_callback("sandbox")


async def _sandbox_message(status: int, title: str, text: str, *, bad: bool = True) -> tuple[str, int]:
    tx = page_texts()
    return await render_template("message.html", tx=tx, title=tx[title], text=text, bad=bad), status


@blueprint.get("/pay/sandbox/<order_no>")
async def sandbox_page(order_no: str) -> tuple[str, int]:
    tx = page_texts()
    try:
        order = await core().sales.sandbox_order(order_no)
    except PaymentMethodUnavailable:
        return "sandbox payments are not enabled", 404
    except NotFound:
        return await _sandbox_message(404, "sandbox_title", tx["unknown_order"])
    except Forbidden:
        return await _sandbox_message(403, "sandbox_title", tx["sandbox_operators_only"])
    status = raw_t(page_language(), f"status.{order.status}")
    return (
        await render_template(
            "sandbox_pay.html",
            tx=tx,
            order=order,
            amount=str(Money(order.amount, order.currency)),
            status=status,
            payable=order.payable,
            not_payable=tx["not_payable"].format(status=status),
        ),
        200,
    )


@blueprint.post("/pay/sandbox/<order_no>")
async def sandbox_pay(order_no: str) -> tuple[str, int]:
    """The pay button: the core posts a signed callback to our own notify URL, as a gateway would."""
    tx = page_texts()
    try:
        body = await core().sales.pay_in_sandbox(order_no)
    except PaymentMethodUnavailable:
        return "sandbox payments are not enabled", 404
    except NotFound:
        return await _sandbox_message(404, "sandbox_title", tx["unknown_order"])
    except Forbidden:
        return await _sandbox_message(403, "sandbox_title", tx["sandbox_operators_only"])
    except InvalidInput as exc:
        status = raw_t(page_language(), f"status.{exc.details.get('status')}")
        return await _sandbox_message(409, "sandbox_title", tx["not_payable"].format(status=status))
    if body == "success":
        return await _sandbox_message(200, "paid_title", tx["paid_note"], bad=False)
    return await _sandbox_message(400, "failed_title", tx["failed_note"].format(reason=body))


@blueprint.get("/pay/return/<order_no>")
async def pay_return(order_no: str) -> str:
    tx = page_texts()
    return await render_template("message.html", tx=tx, title=tx["return_title"], text=tx["return_note"], bad=False)
