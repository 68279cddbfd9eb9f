"""Stripe Checkout over Stripe's HTTP API, without the ``stripe`` package.

``start`` creates a Checkout Session per order (form-encoded, idempotent on the order
number); the buyer pays on Stripe's page and a signed webhook reports it. The
``Stripe-Signature`` header is checked as Stripe's own libraries do: HMAC-SHA256 of
``"{t}.{raw body}"`` keyed by the endpoint's signing secret, any ``v1`` matching, and a
timestamp within five minutes (either way: a replayed or pre-dated event is refused).

Events acted on: a paid ``checkout.session.completed`` (or ``async_payment_succeeded``)
is a payment of the session's ``amount_total``; ``charge.refunded`` and
``charge.dispute.created`` are money going back. Every other event is acknowledged and
changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

from quanyi.core.errors import CallbackRejected, InvalidInput, MalformedJson, ProviderError, QuanyiError, RefundFailed
from quanyi.core.payments._http import request_json
from quanyi.core.payments.base import (
    CallbackRequest,
    OrderForPayment,
    PaidWith,
    PaymentEvent,
    PaymentMethod,
    PaymentStart,
    RefundEvent,
)
from quanyi.core.platform.config import Settings
from quanyi.core.platform.jsonsafe import loads_limited

SIGNATURE_HEADER = "stripe-signature"
TOLERANCE = 300  # seconds, Stripe's default
# Currencies we price in whose minor unit Stripe counts the same way (JPY is zero-decimal
# on both sides); USDT and XTR are not Stripe's.
CURRENCIES = frozenset({"CNY", "USD", "EUR", "HKD", "JPY"})
# Stripe lets a Checkout Session live from 30 minutes to 24 hours; a minute of margin each
# way keeps our clock's drift from Stripe's out of it.
MIN_SESSION_SECONDS = 31 * 60
MAX_SESSION_SECONDS = 24 * 3600 - 60
PAID_SESSION_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$", re.ASCII)
_ID = re.compile(r"^[A-Za-z0-9_]{1,128}$", re.ASCII)


class Stripe(PaymentMethod):
    name = "stripe"
    supports_refund = True
    supports_query = True
    timeout = 10.0  # seconds for one API call

    def __init__(self, settings: Settings) -> None:
        self.api_base = settings.stripe_api_base
        self.public_url = settings.public_url
        self._secret_key = settings.stripe_secret_key
        self._webhook_secret = settings.stripe_webhook_secret.encode()
        # The session lives about as long as the order's reservation: a later payment is
        # rare, and fulfilment keeps it for review instead of losing it.
        self.session_seconds = min(max(settings.reservation_minutes * 60, MIN_SESSION_SECONDS), MAX_SESSION_SECONDS)

    def __repr__(self) -> str:
        return f"Stripe(api_base={self.api_base!r})"

    # --- paying -----------------------------------------------------------------------

    async def start(self, order: OrderForPayment) -> PaymentStart:
        if order.currency not in CURRENCIES:
            raise InvalidInput(f"Stripe cannot charge in {order.currency}")
        back = f"{self.public_url}/pay/return/{order.number}"
        form = [
            ("mode", "payment"),
            ("line_items[0][price_data][currency]", order.currency.lower()),
            ("line_items[0][price_data][unit_amount]", str(order.amount)),
            ("line_items[0][price_data][product_data][name]", order.title[:250] or order.number),
            ("line_items[0][quantity]", "1"),
            ("client_reference_id", order.number),
            ("metadata[order_number]", order.number),
            ("payment_intent_data[metadata][order_number]", order.number),
            ("success_url", back),
            ("cancel_url", f"{back}?cancelled=1"),
            ("expires_at", str(int(time.time()) + self.session_seconds)),
        ]
        # One session per order: a retried request gets the first session back, not a second.
        session = await self._call(
            "POST", "/v1/checkout/sessions", form, f"quanyi-checkout-{order.number}", ProviderError, "checkout session"
        )
        session_id, url = session.get("id"), session.get("url")
        if not _is_id(session_id) or not isinstance(url, str) or not url.startswith("https://"):
            raise ProviderError("Stripe checkout session answered without an id or pay URL")
        return PaymentStart(url=url, provider_ref=session_id)

    async def resume(self, order: OrderForPayment, provider_ref: str | None) -> PaymentStart | None:
        """The order's open Checkout Session, read back (a second ``start`` would send other
        parameters under the same idempotency key, which Stripe refuses)."""
        if not _is_id(provider_ref):
            return None
        session = await self._call(
            "GET", f"/v1/checkout/sessions/{provider_ref}", [], None, ProviderError, "checkout session query"
        )
        url = session.get("url")
        if session.get("id") != provider_ref or session.get("client_reference_id") != order.number:
            raise ProviderError("Stripe answered for another checkout session")
        if session.get("status") != "open" or not isinstance(url, str) or not url.startswith("https://"):
            return None
        return PaymentStart(url=url, provider_ref=provider_ref)

    async def query_order(
        self, order_number: str, amount: int, currency: str, provider_ref: str | None
    ) -> PaymentEvent | None:
        """Ask for the order's Checkout Session; a paid one is the lost webhook."""
        if not _is_id(provider_ref):
            return None
        session = await self._call(
            "GET", f"/v1/checkout/sessions/{provider_ref}", [], None, ProviderError, "checkout session query"
        )
        if session.get("id") != provider_ref:
            raise ProviderError("Stripe answered for another checkout session")
        event = _paid_session(session, {"source": "query"}, None, ProviderError)
        if event is not None and event.order_number != order_number:
            raise ProviderError("Stripe checkout session belongs to another order")
        return event

    # --- refunding --------------------------------------------------------------------

    async def refund(self, paid: PaidWith, amount: int, reason: str, idempotency_key: str) -> str:
        if not paid.provider_txn_id.startswith("pi_"):
            # Only a payment recorded under its session id (no payment intent) lands here.
            raise RefundFailed("this Stripe payment has no payment intent; refund it in the Stripe Dashboard")
        form = [
            ("payment_intent", paid.provider_txn_id),
            ("amount", str(amount)),
            ("metadata[reason]", reason[:500]),
            ("metadata[order_number]", paid.order_number),
        ]
        refund = await self._call("POST", "/v1/refunds", form, idempotency_key, RefundFailed, "refund")
        refund_id, status = refund.get("id"), refund.get("status")
        if not _is_id(refund_id):
            raise RefundFailed("Stripe refund answered without a refund id")
        if status in ("failed", "canceled"):
            raise RefundFailed(f"Stripe refund {refund_id} {status}")
        return str(refund_id)

    # --- webhooks ---------------------------------------------------------------------

    def sign(self, body: bytes, timestamp: int) -> str:
        return hmac.new(self._webhook_secret, b"%d." % timestamp + body, hashlib.sha256).hexdigest()

    def verify(self, request: CallbackRequest) -> PaymentEvent | RefundEvent | None:
        self._check_signature(request)
        try:
            event = loads_limited(request.body, unique_keys=True)
        except MalformedJson as exc:  # the stable code travels for the door to show
            raise CallbackRejected(exc.message, code=exc.code) from None
        if not isinstance(event, dict) or event.get("object", "event") != "event":
            raise CallbackRejected("body is not a Stripe event")
        event_id, event_type, data = event.get("id"), event.get("type"), event.get("data")
        if not _is_id(event_id) or not isinstance(event_type, str) or not isinstance(data, dict):
            raise CallbackRejected("event without id, type or data")
        obj = data.get("object")
        if not isinstance(obj, dict):
            raise CallbackRejected("event without an object")
        raw = {"event_id": event_id, "event_type": event_type}
        raw.update({k: _text(event[k]) for k in ("created", "livemode", "api_version") if _is_scalar(event.get(k))})
        if event_type in PAID_SESSION_EVENTS:
            return _paid_session(obj, raw, event_id, CallbackRejected)
        if event_type == "charge.refunded":
            previous = data.get("previous_attributes")
            return _charge_refund(obj, previous if isinstance(previous, dict) else {}, raw, event_id)
        if event_type == "charge.dispute.created":
            return _dispute(obj, raw, event_id)
        return None

    def _check_signature(self, request: CallbackRequest) -> None:
        headers = [v for k, v in request.headers.items() if k.lower() == SIGNATURE_HEADER]
        if len(headers) != 1:
            raise CallbackRejected("missing Stripe-Signature header")
        timestamp, signatures = _parse_signature_header(headers[0])
        if not signatures:
            raise CallbackRejected("no v1 signature")
        expected = self.sign(request.body, timestamp).encode()
        # Every candidate is compared (no early exit): timing says nothing about which matched.
        matched = [hmac.compare_digest(expected, s.encode("utf-8", "replace")) for s in signatures]
        if not any(matched):
            raise CallbackRejected("bad signature")
        if abs(time.time() - timestamp) > TOLERANCE:
            raise CallbackRejected("signature timestamp outside the tolerance")

    # --- the API ----------------------------------------------------------------------

    async def _call(
        self,
        http_method: str,
        path: str,
        form: Sequence[tuple[str, str]],
        idempotency_key: str | None,
        error: type[QuanyiError],
        what: str,
    ) -> dict[str, Any]:
        # The key travels in a header only; errors name the call and Stripe's error code, never
        # Stripe's message (it may quote the key, masked or not) and never the key.
        headers = {"Authorization": f"Bearer {self._secret_key}"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        status, data = await request_json(
            http_method,
            f"{self.api_base}{path}",
            what=f"Stripe {what}",
            error=error,
            timeout_seconds=self.timeout,
            data=form,
            headers=headers,
        )
        if not 200 <= status < 300 or "error" in data:
            detail = data.get("error")
            code = (detail.get("code") or detail.get("type")) if isinstance(detail, dict) else None
            reason = self._scrub(code if isinstance(code, str) else "no reason")[:80]
            raise error(f"Stripe {what} refused (HTTP {status}): {reason}")
        return data

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret_key, "***") if self._secret_key else text


def _parse_signature_header(header: str) -> tuple[int, list[str]]:
    """``t=<unix>,v1=<hex>[,v1=...][,v0=...]``: the one timestamp and every v1 signature.

    Other schemes (``v0`` is Stripe's test scheme) are ignored, never accepted."""
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not key:
            raise CallbackRejected("malformed Stripe-Signature header")
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            signatures.append(value.strip())
    if len(timestamps) != 1 or not _TIMESTAMP.match(timestamps[0]):
        raise CallbackRejected("malformed Stripe-Signature header")
    return int(timestamps[0]), signatures


def _paid_session(
    session: Mapping[str, Any], raw: dict[str, str], event_id: str | None, error: type[QuanyiError]
) -> PaymentEvent | None:
    """A paid Checkout Session as a payment of its own total; None while it is unpaid."""
    if session.get("payment_status") != "paid" or session.get("mode", "payment") != "payment":
        return None
    session_id = session.get("id")
    if not _is_id(session_id):
        raise error("checkout session id is malformed")
    metadata = session.get("metadata")
    tagged = metadata.get("order_number") if isinstance(metadata, dict) else None
    reference = session.get("client_reference_id")
    if tagged and reference and tagged != reference:
        raise error("checkout session names two orders")
    number = tagged or reference
    if not isinstance(number, str) or not number:
        raise error("checkout session carries no order number")
    amount, currency = session.get("amount_total"), session.get("currency")
    if not _is_amount(amount) or not isinstance(currency, str) or not currency.isalpha():
        raise error("checkout session amount or currency is malformed")
    intent = _ref_id(session.get("payment_intent"))
    raw.update(
        {
            "session_id": session_id,
            "payment_intent": intent or "",
            "payment_status": "paid",
            "amount_total": str(amount),
            "currency": currency,
            "order_number": number,
        }
    )
    return PaymentEvent(
        method=Stripe.name,
        provider_txn_id=intent or session_id,
        order_number=number,
        amount=amount,
        currency=currency.upper(),
        raw=raw,
        event_id=event_id,
    )


def _charge_refund(
    charge: Mapping[str, Any], previous: Mapping[str, Any], raw: dict[str, str], event_id: str
) -> RefundEvent:
    """The refund this event reports, as the money it gave back now.

    ``record_provider_refund`` weighs each event against what is still unrefunded, so the
    amount is this refund's, not the charge's running ``amount_refunded``: the newest
    refund listed on the charge, or (API versions from 2022-11-15 list none) the growth of
    ``amount_refunded`` since the previous state."""
    charge_id, intent = charge.get("id"), _ref_id(charge.get("payment_intent"))
    if not _is_id(charge_id):
        raise CallbackRejected("charge id is malformed")
    if intent is None:
        raise CallbackRejected("refunded charge names no payment intent")
    total, currency = charge.get("amount_refunded"), charge.get("currency")
    if not _is_amount(total) or not isinstance(currency, str) or not currency.isalpha():
        raise CallbackRejected("refunded charge amount or currency is malformed")
    latest = _latest_refund(charge.get("refunds"))
    if latest is not None:
        refund_id, amount = latest["id"], latest["amount"]
        if latest.get("currency", currency) != currency:
            raise CallbackRejected("refund currency differs from its charge")
    else:
        before = previous.get("amount_refunded", 0)
        if not _is_amount(before) or before > total:
            raise CallbackRejected("refunded charge history is malformed")
        amount = total - before
        # The first refund is named by its charge; a later one by the total it brought the
        # charge to, so that it is not mistaken for the first.
        refund_id = charge_id if before == 0 else f"{charge_id}:{total}"
    raw.update(
        {
            "charge_id": charge_id,
            "payment_intent": intent,
            "refund_id": refund_id,
            "amount": str(amount),
            "amount_refunded": str(total),
            "currency": currency,
        }
    )
    return RefundEvent(
        method=Stripe.name,
        provider_txn_id=intent,
        provider_refund_id=refund_id,
        amount=amount,
        currency=currency.upper(),
        raw=raw,
        event_id=event_id,
    )


def _latest_refund(refunds: object) -> dict[str, Any] | None:
    """The newest refund that still stands in a charge's (pre-2022-11-15) ``refunds`` list."""
    items = refunds.get("data") if isinstance(refunds, dict) else None
    if not isinstance(items, list):
        return None
    standing = [
        r
        for r in items
        if isinstance(r, dict)
        and _is_id(r.get("id"))
        and _is_amount(r.get("amount"))
        and r["amount"] > 0
        and r.get("status") not in ("failed", "canceled")
    ]
    if not standing:
        return None
    # Stripe lists newest first; ``created`` decides when it is there.
    return max(enumerate(standing), key=lambda p: (_created(p[1]), -p[0]))[1]


def _dispute(dispute: Mapping[str, Any], raw: dict[str, str], event_id: str) -> RefundEvent:
    """A chargeback: the disputed amount is taken from us as a refund would be."""
    dispute_id, intent = dispute.get("id"), _ref_id(dispute.get("payment_intent"))
    if not _is_id(dispute_id):
        raise CallbackRejected("dispute id is malformed")
    if intent is None:
        raise CallbackRejected("dispute names no payment intent")
    amount, currency = dispute.get("amount"), dispute.get("currency")
    if not _is_amount(amount) or not isinstance(currency, str) or not currency.isalpha():
        raise CallbackRejected("dispute amount or currency is malformed")
    raw.update(
        {
            "dispute_id": dispute_id,
            "payment_intent": intent,
            "amount": str(amount),
            "currency": currency,
            "reason": _text(dispute.get("reason", "")),
            "status": _text(dispute.get("status", "")),
            "charge_id": _ref_id(dispute.get("charge")) or "",
        }
    )
    return RefundEvent(
        method=Stripe.name,
        provider_txn_id=intent,
        provider_refund_id=dispute_id,
        amount=amount,
        currency=currency.upper(),
        raw=raw,
        event_id=event_id,
    )


def _ref_id(value: object) -> str | None:
    """An id field, given as the id or as the expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if _is_id(value) else None


def _is_id(value: object) -> TypeGuard[str]:
    # Stripe's ids are letters, digits and underscores; anything else never reaches a URL path.
    return isinstance(value, str) and _ID.match(value) is not None


def _is_amount(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _created(refund: Mapping[str, Any]) -> int:
    created = refund.get("created")
    return created if _is_amount(created) else 0


def _is_scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool)


def _text(value: object) -> str:
    return str(value)[:256]
