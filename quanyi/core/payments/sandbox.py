"""The sandbox method: a pay page on our own server whose button posts a signed callback.

For the demo and tests only; enabled by QUANYI_SANDBOX_PAY=1 and never by default.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping

from quanyi.core.errors import CallbackRejected, InvalidInput
from quanyi.core.money import parse_minor
from quanyi.core.payments.base import (
    CallbackRequest,
    OrderForPayment,
    PaidWith,
    PaymentEvent,
    PaymentMethod,
    PaymentStart,
)

FIELDS = ("order_no", "txn_id", "amount", "currency")


class Sandbox(PaymentMethod):
    name = "sandbox"
    supports_refund = True
    simulated = True

    def __init__(self, public_url: str, key: bytes) -> None:
        self.public_url = public_url
        self._key = key

    def __repr__(self) -> str:
        return "Sandbox()"

    async def start(self, order: OrderForPayment) -> PaymentStart:
        return PaymentStart(url=f"{self.public_url}/pay/sandbox/{order.number}")

    async def refund(self, paid: PaidWith, amount: int, reason: str, idempotency_key: str) -> str:
        # No money moved in, none moves back: the refund is recorded like a real one.
        return "SBXR" + secrets.token_hex(8)

    def sign(self, params: Mapping[str, str]) -> str:
        text = "&".join(f"{k}={params.get(k, '')}" for k in FIELDS)
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def callback_params(self, order_no: str, amount: str, currency: str) -> dict[str, str]:
        """What the pay button posts, signed. The transaction id is the order's own (keyed, so
        not guessable from the number): a double click, or two confirms racing, is one payment
        recorded once, never a second one."""
        txn = "SBX" + hmac.new(self._key, b"txn:" + order_no.encode(), hashlib.sha256).hexdigest()[:16]
        params = {"order_no": order_no, "txn_id": txn, "amount": amount, "currency": currency}
        params["sign"] = self.sign(params)
        return params

    def verify(self, request: CallbackRequest) -> PaymentEvent | None:
        params: dict[str, str] = {}
        for key, value in request.params():
            if key in params:
                raise CallbackRejected(f"parameter {key} repeated")
            params[key] = value
        if any(not params.get(k) for k in (*FIELDS, "sign")):
            raise CallbackRejected("missing fields")
        if not hmac.compare_digest(self.sign(params).encode(), params["sign"].encode()):
            raise CallbackRejected("bad signature")
        try:
            amount = parse_minor(params["amount"], params["currency"])
        except InvalidInput:
            raise CallbackRejected("bad amount") from None
        return PaymentEvent(
            method=self.name,
            provider_txn_id=params["txn_id"],
            order_number=params["order_no"],
            amount=amount,
            currency=params["currency"],
            raw={k: params[k] for k in (*FIELDS, "sign")},
        )
