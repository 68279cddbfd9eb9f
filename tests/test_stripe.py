"""Stripe Checkout: sessions and refunds against a fake Stripe API over HTTP, webhooks
through the real Quart app and the real fulfiller, on both databases.

Webhook headers are signed here by ``stripe_header``, written from Stripe's webhook
documentation (``t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" keyed by the endpoint
secret>``) and not imported from quanyi, so a wrong implementation of the rule fails.
The signature cases follow those of Stripe's own libraries' webhook tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import logging
import secrets
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select

from quanyi.core.errors import CallbackRejected, ConfigError, ProviderError, RefundFailed
from quanyi.core.models import Order, OutboxMessage, Payment, ProviderEvent, Refund, StockItem
from quanyi.core.payments import build_payment_hub
from quanyi.core.payments.base import CallbackRequest, PaymentEvent, RefundEvent
from quanyi.core.payments.queries import query_pending
from quanyi.core.payments.stripe import Stripe
from quanyi.core.platform.config import Settings
from quanyi.core.sales.refunds import refund_order
from quanyi.core.services import Core
from quanyi.webhooks import create_app
from tests.conftest import make_keyring, make_settings
from tests.helpers import new_order, product_with_stock

SECRET_KEY = "sk_test_51Hq2Vx9Lm4Rt8Zp3Wn6Ys1Bc5Df0GaK7"
WEBHOOK_SECRET = "whsec_k7Hq2Vx9Lm4Rt8Zp3Wn6Ys1Bc5Df0GaQ"
WEBHOOK = "/pay/stripe/webhook"
_ids = itertools.count(1)


# --- Stripe's side: signing and events --------------------------------------------------


def v1(body: bytes, timestamp: int, secret: str = WEBHOOK_SECRET) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def stripe_header(body: bytes, *, age: int = 0, secret: str = WEBHOOK_SECRET) -> str:
    timestamp = int(time.time()) - age
    return f"t={timestamp},v1={v1(body, timestamp, secret)}"


def event(event_type: str, obj: dict[str, Any], *, event_id: str | None = None, **data: Any) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{secrets.token_hex(12)}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "livemode": False,
        "type": event_type,
        "data": {"object": obj, **data},
    }


def session_completed(
    number: str,
    amount: int = 1500,
    currency: str = "cny",
    *,
    intent: str | None = "pi_default",
    event_id: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    session = {
        "id": f"cs_test_{number}",
        "object": "checkout.session",
        "mode": "payment",
        "status": "complete",
        "payment_status": "paid",
        "amount_total": amount,
        "currency": currency,
        "client_reference_id": number,
        "metadata": {"order_number": number},
        "payment_intent": intent,
        "customer_details": {"email": "buyer@example.com"},
    }
    session.update(fields)
    return event("checkout.session.completed", session, event_id=event_id)


def charge_refunded(
    intent: str,
    *,
    amount: int = 1500,
    refunded: int,
    refunds: list[dict[str, Any]] | None = None,
    previous: int | None = None,
) -> dict[str, Any]:
    """``charge.refunded``: with the ``refunds`` list (API versions before 2022-11-15) or
    without it and with ``previous_attributes`` (later versions)."""
    charge: dict[str, Any] = {
        "id": f"ch_{intent.removeprefix('pi_')}",
        "object": "charge",
        "amount": amount,
        "amount_refunded": refunded,
        "currency": "cny",
        "payment_intent": intent,
        "refunded": refunded == amount,
    }
    if refunds is not None:
        charge["refunds"] = {"object": "list", "data": refunds, "has_more": False}
    extra = {"previous_attributes": {"amount_refunded": previous, "refunded": False}} if previous is not None else {}
    return event("charge.refunded", charge, **extra)


def refund_object(refund_id: str, amount: int, created: int = 1700000000, status: str = "succeeded") -> dict:
    return {"id": refund_id, "object": "refund", "amount": amount, "currency": "cny", "created": created,
            "status": status}  # fmt: skip


def encode(payload: Any) -> bytes:
    return json.dumps(payload).encode()


async def post(client, body: bytes, header: str | None = "sign") -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if header == "sign":
        header = stripe_header(body)
    if header is not None:
        headers["Stripe-Signature"] = header
    response = await client.post(WEBHOOK, data=body, headers=headers)
    return response.status_code, await response.get_json()


class FakeStripe:
    """Checkout Sessions and Refunds as Stripe's API answers them, idempotency keys included;
    ``mode`` breaks it."""

    def __init__(self) -> None:
        self.base = ""
        self.mode = "ok"
        self.requests: list[tuple[str, str, dict[str, str], list[tuple[str, str]]]] = []
        self.sessions: dict[str, dict[str, Any]] = {}
        self._answers: dict[str, dict[str, Any]] = {}
        # Runs with a new refund before Stripe answers for it (its webhook racing the answer).
        self.on_refund: Any = None

    async def handle(self, request: web.Request) -> web.Response:
        form = [(k, str(v)) for k, v in (await request.post()).items()]
        self.requests.append((request.method, request.path, dict(request.headers), form))
        if request.headers.get("Authorization") != f"Bearer {SECRET_KEY}":
            return web.json_response({"error": {"type": "invalid_request_error"}}, status=401)
        if self.mode == "http500":
            return web.Response(status=500, text="<html>Internal Server Error</html>")
        if self.mode == "error":  # Stripe's messages may quote the key: it must not travel on
            message = f"Invalid API Key provided: {SECRET_KEY}"
            return web.json_response(
                {"error": {"type": "invalid_request_error", "code": "parameter_invalid_integer", "message": message}},
                status=400,
            )
        if self.mode == "slow":
            await asyncio.sleep(2)
        key = request.headers.get("Idempotency-Key")
        if key is not None and key in self._answers:
            return web.json_response(self._answers[key])
        params = dict(form)
        if request.path == "/v1/checkout/sessions":
            session_id = f"cs_test_{next(_ids)}"
            answer = {
                "id": session_id,
                "object": "checkout.session",
                "mode": params["mode"],
                "payment_status": "unpaid",
                "status": "open",
                "amount_total": int(params["line_items[0][price_data][unit_amount]"]),
                "currency": params["line_items[0][price_data][currency]"],
                "client_reference_id": params["client_reference_id"],
                "metadata": {"order_number": params["metadata[order_number]"]},
                "payment_intent": None,
                "url": f"https://checkout.stripe.com/c/pay/{session_id}",
            }
            self.sessions[session_id] = answer
        elif request.path.startswith("/v1/checkout/sessions/"):
            return web.json_response(self.sessions[request.match_info["id"]])
        else:
            answer = {"id": f"re_{next(_ids)}", "object": "refund", "amount": int(params["amount"]),
                      "payment_intent": params["payment_intent"], "status": "succeeded"}  # fmt: skip
            if self.on_refund is not None:
                await self.on_refund(answer)
        if key is not None:
            self._answers[key] = answer
        return web.json_response(answer)

    def calls(self, path: str) -> list[tuple[dict[str, str], dict[str, str]]]:
        return [(headers, dict(form)) for method, p, headers, form in self.requests if p == path]


@pytest.fixture
async def fake_api():
    fake = FakeStripe()
    app = web.Application()
    app.router.add_post("/v1/checkout/sessions", fake.handle)
    app.router.add_get("/v1/checkout/sessions/{id}", fake.handle)
    app.router.add_post("/v1/refunds", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    yield fake
    await runner.cleanup()


def stripe_settings(tmp_path: Path, api_base: str = "http://127.0.0.1:9") -> Settings:
    return make_settings(
        tmp_path, stripe_secret_key=SECRET_KEY, stripe_webhook_secret=WEBHOOK_SECRET, stripe_api_base=api_base
    )


@pytest.fixture
def settings(tmp_path: Path, fake_api: FakeStripe) -> Settings:
    return stripe_settings(tmp_path, fake_api.base)


@pytest.fixture
def client(core: Core):
    return create_app(core).test_client()


@pytest.fixture
def method(tmp_path: Path) -> Stripe:
    """Stripe on its own, for the signature rules (no database, no API)."""
    return Stripe(stripe_settings(tmp_path))


def webhook(body: bytes, header: str | None) -> CallbackRequest:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    return CallbackRequest(http_method="POST", body=body, headers=headers)


async def snapshot(core: Core) -> dict[str, list]:
    """Every row a Stripe event could touch."""
    async with core.db.read() as s:
        return {
            "orders": sorted(
                (await s.execute(select(Order.number, Order.status, Order.paid_at, Order.closed_at))).all()
            ),
            "payments": sorted(
                (await s.execute(select(Payment.provider_txn_id, Payment.amount, Payment.outcome))).all()
            ),
            "refunds": sorted((await s.execute(select(Refund.scope, Refund.amount, Refund.status))).all()),
            "stock": sorted((await s.execute(select(StockItem.id, StockItem.status, StockItem.order_id))).all()),
            "outbox": sorted((await s.execute(select(OutboxMessage.id, OutboxMessage.kind))).all()),
            "events": sorted((await s.scalars(select(ProviderEvent.event_id))).all()),
        }


async def order_row(core: Core, number: str) -> Order:
    async with core.db.read() as s:
        order = await s.scalar(select(Order).where(Order.number == number))
        assert order is not None
        return order


async def stock_statuses(core: Core) -> list[str]:
    async with core.db.read() as s:
        return sorted(str(v) for v in await s.scalars(select(StockItem.status)))


async def outbox_kinds(core: Core) -> list[tuple[str, int]]:
    async with core.db.read() as s:
        return sorted((k, c) for k, c in (await s.execute(select(OutboxMessage.kind, OutboxMessage.chat_id))).all())


async def paid_order(core: Core, client, tmp_path: Path, *, quantity: int = 1, units: int = 3) -> tuple[Order, str]:
    """A Stripe order paid through the webhook; returns it and its payment intent."""
    await product_with_stock(core, tmp_path, units=units)
    placed = await new_order(core, method="stripe", quantity=quantity)
    intent = f"pi_{secrets.token_hex(12)}"
    body = encode(session_completed(placed.order.number, placed.order.amount, intent=intent))
    assert await post(client, body) == (200, {"received": True, "outcome": "delivered"})
    return await order_row(core, placed.order.number), intent


# --- the signature, as Stripe's libraries check it ------------------------------------------


def test_a_valid_signature_gives_the_payment_of_the_session(method):
    body = encode(session_completed("Q240101ABCDEFGH", 4500, "cny", intent="pi_3Nabc", event_id="evt_1Nabc"))

    paid = method.verify(webhook(body, stripe_header(body)))

    assert isinstance(paid, PaymentEvent)
    assert (paid.method, paid.provider_txn_id, paid.order_number, paid.amount, paid.currency, paid.event_id) == (
        "stripe",
        "pi_3Nabc",
        "Q240101ABCDEFGH",
        4500,
        "CNY",
        "evt_1Nabc",
    )
    assert (
        paid.raw["session_id"] == "cs_test_Q240101ABCDEFGH" and paid.raw["event_type"] == "checkout.session.completed"
    )
    assert all(isinstance(v, str) for v in paid.raw.values()) and "buyer@example.com" not in str(paid.raw)


def test_the_same_signature_works_whatever_the_header_name_case(method):
    body = encode(session_completed("Q240101ABCDEFGH"))
    request = CallbackRequest(http_method="POST", body=body, headers={"stripe-signature": stripe_header(body)})
    assert isinstance(method.verify(request), PaymentEvent)


def _refusals() -> dict[str, tuple[bytes, str | None]]:
    body = encode(session_completed("Q240101ABCDEFGH"))
    now = int(time.time())
    good = v1(body, now)
    return {
        "tampered body": (body.replace(b"1500", b"1"), f"t={now},v1={good}"),
        "wrong secret": (body, stripe_header(body, secret="whsec_another_endpoints_secret_xx")),
        "missing header": (body, None),
        "empty header": (body, ""),
        "not key=value": (body, "garbage"),
        "no timestamp": (body, f"v1={good}"),
        "timestamp not a number": (body, f"t=abc,v1={good}"),
        "two timestamps": (body, f"t={now},t={now},v1={good}"),
        "no v1": (body, f"t={now}"),
        "v0 only": (body, f"t={now},v0={good}"),  # the right HMAC under a scheme we do not accept
        "v1 for another timestamp": (body, f"t={now - 1},v1={good}"),
        "signature over the body only": (
            body,
            f"t={now},v1={hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()}",
        ),
        "uppercase hex": (body, f"t={now},v1={good.upper()}"),
        "301 s old": (body, stripe_header(body, age=301)),
        "301 s ahead": (body, stripe_header(body, age=-301)),
        "not JSON": (b"evt=1", stripe_header(b"evt=1")),
        "a JSON array": (b"[]", stripe_header(b"[]")),
        "a key twice": (
            body.replace(b'"object": "event"', b'"object": "event", "type": "charge.refunded"'),
            None,
        ),
    }


@pytest.mark.parametrize("case", list(_refusals()))
def test_an_inauthentic_or_malformed_webhook_is_refused(method, case):
    body, header = _refusals()[case]
    if case == "a key twice":
        header = stripe_header(body)
    with pytest.raises(CallbackRejected):
        method.verify(webhook(body, header))


@pytest.mark.parametrize("age", [299, -299, 0])
def test_a_timestamp_within_five_minutes_either_way_is_accepted(method, age):
    body = encode(session_completed("Q240101ABCDEFGH"))
    assert isinstance(method.verify(webhook(body, stripe_header(body, age=age))), PaymentEvent)


def test_any_one_valid_v1_among_several_is_enough(method):
    body = encode(session_completed("Q240101ABCDEFGH"))
    now = int(time.time())
    header = f"t={now},v1={'0' * 64},v1={v1(body, now, 'whsec_old_rolled_secret_xxxxxxxx')},v1={v1(body, now)},v0=ab"
    assert isinstance(method.verify(webhook(body, header)), PaymentEvent)


def test_events_that_report_no_payment_are_acknowledged_and_mean_nothing(method):
    unpaid = session_completed("Q240101ABCDEFGH", payment_status="unpaid")
    others = [
        unpaid,
        event("checkout.session.expired", unpaid["data"]["object"]),
        event("payment_intent.succeeded", {"id": "pi_1", "object": "payment_intent", "amount": 1500}),
        event("customer.created", {"id": "cus_1", "object": "customer"}),
    ]
    for payload in others:
        body = encode(payload)
        assert method.verify(webhook(body, stripe_header(body))) is None


def test_a_session_without_payment_intent_is_paid_under_its_own_id(method):
    body = encode(session_completed("Q240101ABCDEFGH", intent=None, metadata={}))
    paid = method.verify(webhook(body, stripe_header(body)))
    assert isinstance(paid, PaymentEvent)
    assert (paid.provider_txn_id, paid.order_number) == ("cs_test_Q240101ABCDEFGH", "Q240101ABCDEFGH")


def test_a_session_naming_two_orders_is_refused(method):
    body = encode(session_completed("Q240101ABCDEFGH", client_reference_id="Q240101ZZZZZZZZ"))
    with pytest.raises(CallbackRejected):
        method.verify(webhook(body, stripe_header(body)))


def test_a_refund_event_carries_this_refunds_amount_not_the_charges_running_total(method):
    def verified(payload: dict) -> RefundEvent:
        body = encode(payload)
        result = method.verify(webhook(body, stripe_header(body)))
        assert isinstance(result, RefundEvent)
        return result

    # With the refunds list: the newest refund that stands (a failed one gave nothing back).
    listed = verified(
        charge_refunded(
            "pi_A",
            refunded=1200,
            refunds=[
                refund_object("re_failed", 900, created=1700000300, status="failed"),
                refund_object("re_second", 700, created=1700000200),
                refund_object("re_first", 500, created=1700000100),
            ],
        )
    )
    assert (listed.provider_txn_id, listed.provider_refund_id, listed.amount, listed.currency) == (
        "pi_A",
        "re_second",
        700,
        "CNY",
    )
    # Without it: what amount_refunded grew by; the first refund is named by its charge and a
    # later one by the total it reached, so the two are never taken for one another.
    first = verified(charge_refunded("pi_A", refunded=500, previous=0))
    second = verified(charge_refunded("pi_A", refunded=1200, previous=500))
    assert (first.provider_refund_id, first.amount) == ("ch_A", 500)
    assert (second.provider_refund_id, second.amount) == ("ch_A:1200", 700)
    dispute = verified(
        event(
            "charge.dispute.created",
            {"id": "dp_1", "object": "dispute", "amount": 1500, "currency": "cny", "charge": "ch_A",
             "payment_intent": "pi_A", "reason": "fraudulent", "status": "needs_response"},
        )
    )  # fmt: skip
    assert (dispute.provider_txn_id, dispute.provider_refund_id, dispute.amount) == ("pi_A", "dp_1", 1500)


@pytest.mark.parametrize(("secret", "webhook_secret"), [("", "whsec_x" * 5), ("changeme", WEBHOOK_SECRET)])
def test_an_empty_or_placeholder_secret_refuses_to_start(tmp_path, secret, webhook_secret):
    settings = make_settings(tmp_path, stripe_secret_key=secret, stripe_webhook_secret=webhook_secret)
    with pytest.raises(ConfigError):
        build_payment_hub(settings, make_keyring())


# --- starting a payment ---------------------------------------------------------------------


async def test_start_creates_one_checkout_session_per_order_with_stripes_form_fields(core, fake_api, tmp_path):
    await product_with_stock(core, tmp_path, units=3)
    placed = await new_order(core, method="stripe", quantity=3)
    number = placed.order.number

    [(headers, form)] = fake_api.calls("/v1/checkout/sessions")
    [session_id] = fake_api.sessions
    assert headers["Authorization"] == f"Bearer {SECRET_KEY}"
    assert headers["Idempotency-Key"] == f"quanyi-checkout-{number}"
    assert headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    expires_at = int(form.pop("expires_at"))
    assert 30 * 60 <= expires_at - time.time() <= 24 * 3600
    assert form == {
        "mode": "payment",
        "line_items[0][price_data][currency]": "cny",
        "line_items[0][price_data][unit_amount]": "4500",
        "line_items[0][price_data][product_data][name]": "VIP membership x3",
        "line_items[0][quantity]": "1",
        "client_reference_id": number,
        "metadata[order_number]": number,
        "payment_intent_data[metadata][order_number]": number,
        "success_url": f"http://127.0.0.1:8080/pay/return/{number}",
        "cancel_url": f"http://127.0.0.1:8080/pay/return/{number}?cancelled=1",
    }
    assert placed.payment.url == f"https://checkout.stripe.com/c/pay/{session_id}"
    assert placed.payment.provider_ref == session_id
    assert (await order_row(core, number)).provider_ref == session_id


@pytest.mark.parametrize("mode", ["http500", "slow", "error"])
async def test_an_api_failure_is_a_provider_error_and_checkout_cancels_the_order(
    core, fake_api, tmp_path, mode, caplog
):
    caplog.set_level(logging.DEBUG)
    method = core.payments.get("stripe")
    assert isinstance(method, Stripe)
    method.timeout = 0.3
    fake_api.mode = mode
    await product_with_stock(core, tmp_path, units=1)

    with pytest.raises(ProviderError) as refused:
        await new_order(core, method="stripe")

    assert SECRET_KEY not in str(refused.value) and SECRET_KEY not in repr(refused.value.details)
    assert SECRET_KEY not in caplog.text and SECRET_KEY not in repr(method)
    async with core.db.read() as s:
        [(status, reason)] = (await s.execute(select(Order.status, Order.failure_reason))).all()
    assert (status, reason) == ("cancelled", "payment_start_failed")
    assert await stock_statuses(core) == ["available"]  # the reservation went back


# --- the webhook ----------------------------------------------------------------------------


async def test_a_completed_session_delivers_the_order_once_and_replays_change_nothing(core, client, tmp_path):
    await product_with_stock(core, tmp_path, units=2)
    placed = await new_order(core, method="stripe", user_id=4242)
    completed = session_completed(placed.order.number, intent="pi_3Ndelivered")
    body = encode(completed)

    assert await post(client, body) == (200, {"received": True, "outcome": "delivered"})
    after_first = await snapshot(core)
    # Stripe retries an event with a fresh timestamp and signature; async_payment_succeeded
    # reports the same payment under another event id.
    again = event("checkout.session.async_payment_succeeded", completed["data"]["object"])
    assert await post(client, body, stripe_header(body, age=10)) == (200, {"received": True, "outcome": "duplicate"})
    assert await post(client, encode(again)) == (200, {"received": True, "outcome": "duplicate"})

    assert (await snapshot(core))["payments"] == after_first["payments"]
    assert (await snapshot(core))["outbox"] == after_first["outbox"]
    order = await order_row(core, placed.order.number)
    assert order.status == "delivered"
    async with core.db.read() as s:
        [payment] = await s.scalars(select(Payment))
        events = sorted(await s.scalars(select(ProviderEvent.event_id)))
    assert (payment.method, payment.provider_txn_id, payment.amount, payment.currency) == (
        "stripe",
        "pi_3Ndelivered",
        1500,
        "CNY",
    )
    assert json.loads(payment.raw)["event_id"] == completed["id"]
    assert events == sorted([completed["id"], again["id"]])
    assert await outbox_kinds(core) == [("delivery", 4242)]
    assert await stock_statuses(core) == ["available", "sold"]


async def test_an_event_re_pointed_at_another_order_breaks_its_signature(core, client, tmp_path):
    await product_with_stock(core, tmp_path, units=2)
    mine = await new_order(core, method="stripe", user_id=1)
    theirs = await new_order(core, method="stripe", user_id=2)
    body = encode(session_completed(mine.order.number))
    header = stripe_header(body)
    re_pointed = body.replace(mine.order.number.encode(), theirs.order.number.encode())
    before = await snapshot(core)

    status, answer = await post(client, re_pointed, header)

    assert (status, answer["received"]) == (400, False)
    assert await snapshot(core) == before


@pytest.mark.parametrize(("amount", "currency"), [(1499, "cny"), (1501, "cny"), (1500, "usd"), (150000, "jpy")])
async def test_a_signed_payment_of_another_amount_or_currency_is_refused(core, client, tmp_path, amount, currency):
    await product_with_stock(core, tmp_path, units=1)
    placed = await new_order(core, method="stripe")
    before = await snapshot(core)

    status, answer = await post(client, encode(session_completed(placed.order.number, amount, currency)))

    assert (status, answer) == (400, {"received": False, "error": "amount does not match the order"})
    assert await snapshot(core) == before
    assert (await order_row(core, placed.order.number)).status == "pending"


async def test_identical_webhooks_at_once_change_state_once(core, client, tmp_path):
    await product_with_stock(core, tmp_path, units=3)
    placed = await new_order(core, method="stripe")
    body = encode(session_completed(placed.order.number, intent="pi_3Nparallel"))

    answers = await asyncio.gather(*(post(client, body) for _ in range(10)))

    assert sorted(a["outcome"] for _, a in answers) == ["delivered"] + ["duplicate"] * 9
    assert all(status == 200 for status, _ in answers)
    state = await snapshot(core)
    assert [txn for txn, _, _ in state["payments"]] == ["pi_3Nparallel"]
    assert [kind for _, kind in state["outbox"]] == ["delivery"]
    assert [status for _, status, _ in state["stock"]].count("sold") == 1
    assert len(state["events"]) == 1


async def test_a_lost_webhook_is_made_good_by_asking_for_the_session(core, fake_api, tmp_path):
    await product_with_stock(core, tmp_path, units=1)
    await new_order(core, method="stripe")
    [session_id] = fake_api.sessions
    assert [r.outcome for r in await query_pending(core, older_than=timedelta(0))] == ["unpaid"]

    fake_api.sessions[session_id].update(payment_status="paid", status="complete", payment_intent="pi_3Nlost")
    [result] = await query_pending(core, older_than=timedelta(0))

    assert result.outcome == "delivered"
    async with core.db.read() as s:
        assert list(await s.scalars(select(Payment.provider_txn_id))) == ["pi_3Nlost"]
    headers, _ = fake_api.calls(f"/v1/checkout/sessions/{session_id}")[-1]
    assert headers["Authorization"] == f"Bearer {SECRET_KEY}" and "Idempotency-Key" not in headers


# --- refunds --------------------------------------------------------------------------------


async def test_an_operator_refund_calls_stripe_once_and_its_webhook_adds_nothing(core, client, fake_api, tmp_path):
    order, intent = await paid_order(core, client, tmp_path, quantity=2)

    result = await refund_order(core, order.number, reason="buyer could not redeem", actor="operator:9000")
    again = await refund_order(core, order.number, reason="clicked twice", actor="operator:9000")

    [(headers, form)] = fake_api.calls("/v1/refunds")
    async with core.db.read() as s:
        [refund] = await s.scalars(select(Refund))
    assert headers["Idempotency-Key"] == f"quanyi-refund-{refund.id}"
    assert headers["Authorization"] == f"Bearer {SECRET_KEY}"
    assert form == {
        "payment_intent": intent,
        "amount": "3000",
        "metadata[reason]": "buyer could not redeem",
        "metadata[order_number]": order.number,
    }
    assert (result.status, result.amount, result.provider_refund_id) == ("succeeded", 3000, refund.provider_refund_id)
    assert (again.status, again.amount) == ("already", 0)
    assert (refund.status, refund.initiated_by) == ("succeeded", "operator:9000")
    assert (await order_row(core, order.number)).status == "refunded"
    assert await stock_statuses(core) == ["available", "void", "void"]
    before = await snapshot(core)

    # Stripe then reports the refund, listed on the charge or (newer API versions) not.
    listed = charge_refunded(
        intent, amount=3000, refunded=3000, refunds=[refund_object(refund.provider_refund_id, 3000)]
    )
    unlisted = charge_refunded(intent, amount=3000, refunded=3000, previous=0)
    assert await post(client, encode(listed)) == (200, {"received": True, "outcome": "duplicate"})
    assert await post(client, encode(unlisted)) == (200, {"received": True, "outcome": "duplicate"})

    after = await snapshot(core)
    assert after["refunds"] == before["refunds"] and after["outbox"] == before["outbox"]
    assert after["orders"] == before["orders"] and after["stock"] == before["stock"]
    assert ("admin_provider_refund", 9000) not in await outbox_kinds(core)
    assert len(fake_api.calls("/v1/refunds")) == 1


async def test_a_refund_webhook_that_overtakes_stripes_answer_records_nothing_twice(core, client, fake_api, tmp_path):
    order, intent = await paid_order(core, client, tmp_path, quantity=2)
    overtaking: list[tuple[int, dict]] = []

    async def webhook_first(refund: dict) -> None:
        listed = charge_refunded(intent, amount=3000, refunded=3000, refunds=[refund_object(refund["id"], 3000)])
        overtaking.append(await post(client, encode(listed)))

    fake_api.on_refund = webhook_first
    result = await refund_order(core, order.number, reason="buyer asked", actor="cli")

    # The webhook confirms the refund we are asking for: recorded once, not as a second refund.
    assert overtaking == [(200, {"received": True, "outcome": "refund_confirmed"})]
    assert result.status == "succeeded"
    async with core.db.read() as s:
        refunds = (await s.execute(select(Refund.amount, Refund.status, Refund.provider_refund_id))).all()
    assert refunds == [(3000, "succeeded", result.provider_refund_id)]
    assert (await order_row(core, order.number)).status == "refunded"
    assert [k for k, _ in await outbox_kinds(core)] == ["delivery", "refunded"]  # no provider-refund alert


async def test_a_refund_stripe_refuses_stays_open_and_the_key_never_leaks(core, client, fake_api, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    order, _ = await paid_order(core, client, tmp_path)
    fake_api.mode = "error"

    with pytest.raises(RefundFailed) as refused:
        await refund_order(core, order.number, reason="buyer asked", actor="cli")

    assert "parameter_invalid_integer" in refused.value.message and SECRET_KEY not in refused.value.message
    assert SECRET_KEY not in caplog.text
    async with core.db.read() as s:
        [refund] = await s.scalars(select(Refund))
    assert refund.status == "pending" and SECRET_KEY not in (refund.last_error or "")
    assert (await order_row(core, order.number)).status == "delivered"

    fake_api.mode = "ok"  # the retry goes through with the same idempotency key
    assert (await refund_order(core, order.number, reason="again", actor="cli")).status == "succeeded"
    keys = {headers["Idempotency-Key"] for headers, _ in fake_api.calls("/v1/refunds")}
    assert keys == {f"quanyi-refund-{refund.id}"}


async def test_a_refund_made_in_stripe_is_recorded_once_voids_the_codes_and_alerts(core, client, fake_api, tmp_path):
    order, intent = await paid_order(core, client, tmp_path, quantity=2)
    body = encode(charge_refunded(intent, amount=3000, refunded=3000, refunds=[refund_object("re_dashboard", 3000)]))

    assert await post(client, body) == (200, {"received": True, "outcome": "refund_recorded"})
    after_first = await snapshot(core)
    assert await post(client, body) == (200, {"received": True, "outcome": "duplicate"})

    assert await snapshot(core) == after_first
    async with core.db.read() as s:
        [refund] = await s.scalars(select(Refund))
    assert (refund.amount, refund.status, refund.initiated_by, refund.provider_refund_id) == (
        3000,
        "succeeded",
        "provider",
        "re_dashboard",
    )
    assert (await order_row(core, order.number)).status == "refunded"
    assert await stock_statuses(core) == ["available", "void", "void"]
    assert await outbox_kinds(core) == [("admin_provider_refund", 9000), ("delivery", 1001), ("refunded", 1001)]
    assert fake_api.calls("/v1/refunds") == []  # Stripe told us; we asked nothing


async def test_partial_refunds_in_stripe_are_each_recorded_and_the_last_one_closes_the_order(core, client, tmp_path):
    order, intent = await paid_order(core, client, tmp_path, quantity=2)

    first = encode(charge_refunded(intent, amount=3000, refunded=1000, previous=0))
    second = encode(charge_refunded(intent, amount=3000, refunded=3000, previous=1000))
    assert await post(client, first) == (200, {"received": True, "outcome": "refund_recorded"})
    # A part refunded: the codes stay with the buyer, the order stays delivered.
    assert (await order_row(core, order.number)).status == "delivered"
    assert await stock_statuses(core) == ["available", "sold", "sold"]

    assert await post(client, second) == (200, {"received": True, "outcome": "refund_recorded"})
    assert (await order_row(core, order.number)).status == "refunded"
    assert await stock_statuses(core) == ["available", "void", "void"]
    async with core.db.read() as s:
        refunds = sorted((await s.execute(select(Refund.provider_refund_id, Refund.initiated_by))).all())
    assert refunds == [(f"ch_{intent[3:]}", "provider"), (f"ch_{intent[3:]}:3000", "provider")]
    assert [k for k, _ in await outbox_kinds(core)].count("admin_provider_refund") == 2


async def test_a_chargeback_is_recorded_as_a_refund_and_alerts(core, client, tmp_path):
    order, intent = await paid_order(core, client, tmp_path)
    dispute = event(
        "charge.dispute.created",
        {"id": "dp_1Nchargeback", "object": "dispute", "amount": 1500, "currency": "cny", "charge": "ch_1",
         "payment_intent": intent, "reason": "fraudulent", "status": "needs_response"},
    )  # fmt: skip

    assert await post(client, encode(dispute)) == (200, {"received": True, "outcome": "refund_recorded"})

    assert (await order_row(core, order.number)).status == "refunded"
    assert await stock_statuses(core) == ["available", "available", "void"]
    assert ("admin_provider_refund", 9000) in await outbox_kinds(core)


async def test_a_refund_for_a_payment_we_do_not_have_is_refused_and_changes_nothing(core, client, tmp_path):
    await product_with_stock(core, tmp_path, units=1)
    placed = await new_order(core, method="stripe")
    before = await snapshot(core)
    refund = charge_refunded("pi_3Nnotyet", refunded=1500, refunds=[refund_object("re_early", 1500)])

    status, answer = await post(client, encode(refund))

    assert (status, answer) == (400, {"received": False, "error": "refund names a payment we do not have"})
    assert await snapshot(core) == before  # not even the event id: Stripe's retry is heard again
    assert (await order_row(core, placed.order.number)).status == "pending"
