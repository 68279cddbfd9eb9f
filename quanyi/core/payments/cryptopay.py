"""Crypto Pay (@CryptoBot): an invoice in the order's currency, confirmed by a signed webhook.

``start`` creates a fiat invoice (``createInvoice``) whose ``payload`` is the order number;
the buyer pays it in any crypto asset. The webhook body is signed with HMAC-SHA256 keyed
by the SHA-256 digest of the API token (header ``crypto-pay-api-signature``). A paid
invoice becomes a ``PaymentEvent`` carrying the invoice's own currency and amount, so
fulfilment's exact-amount check compares what was invoiced with what the order asks.
Crypto Pay has no refund API: operators refund by hand and record it with ``manual``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any

from quanyi.core.errors import CallbackRejected, InvalidInput, MalformedJson, ProviderError
from quanyi.core.money import EXPONENTS, exponent, format_minor, parse_minor
from quanyi.core.payments._http import request_json
from quanyi.core.payments.base import CallbackRequest, OrderForPayment, PaymentEvent, PaymentMethod, PaymentStart
from quanyi.core.platform.config import Settings
from quanyi.core.platform.jsonsafe import loads_limited

SIGNATURE_HEADER = "crypto-pay-api-signature"
# Crypto Pay's own lists (API 1.5); only those the money module knows can be priced.
FIATS = frozenset(
    {"USD", "EUR", "RUB", "BYN", "UAH", "GBP", "CNY", "KZT", "UZS", "GEL", "TRY", "AMD", "THB", "INR", "BRL", "IDR"}
    | {"AZN", "AED", "PLN", "ILS"}
)
ASSETS = frozenset({"USDT", "TON", "BTC", "ETH", "LTC", "BNB", "TRX", "USDC"})
MAX_EXPIRES_IN = 2_678_400  # 31 days, Crypto Pay's limit
RAW_FIELDS = (
    "invoice_id",
    "hash",
    "status",
    "currency_type",
    "fiat",
    "asset",
    "amount",
    "paid_asset",
    "paid_amount",
    "paid_fiat_rate",
    "paid_usd_rate",
    "fee_asset",
    "fee_amount",
    "paid_at",
    "paid_anonymously",
    "payload",
)
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$", re.ASCII)


class CryptoPay(PaymentMethod):
    name = "cryptobot"
    supports_query = True
    timeout = 10.0  # seconds for one API call

    def __init__(self, settings: Settings) -> None:
        self.api_base = settings.cryptobot_api_base
        self._token = settings.cryptobot_token
        self._webhook_key = hashlib.sha256(self._token.encode()).digest()
        # The invoice lives as long as the order's reservation: a late payment is rare, and
        # when it happens fulfilment keeps it for review instead of losing it.
        self.expires_in = min(settings.reservation_minutes * 60, MAX_EXPIRES_IN)

    def __repr__(self) -> str:
        return f"CryptoPay(api_base={self.api_base!r})"

    async def start(self, order: OrderForPayment) -> PaymentStart:
        body: dict[str, Any] = {
            "amount": format_minor(order.amount, order.currency),
            "description": f"{order.title} ({order.number})"[:1024],
            "payload": order.number,
            "allow_comments": False,
            "expires_in": self.expires_in,
        }
        if order.currency in FIATS:
            body.update(currency_type="fiat", fiat=order.currency)
        elif order.currency in ASSETS:
            body.update(currency_type="crypto", asset=order.currency)
        else:
            raise InvalidInput(f"Crypto Pay cannot invoice in {order.currency}")
        invoice = await self._call("createInvoice", body)
        invoice_id, url = invoice.get("invoice_id"), invoice.get("bot_invoice_url") or invoice.get("pay_url")
        if not _is_id(invoice_id) or not isinstance(url, str) or not url.startswith("https://"):
            raise ProviderError("Crypto Pay createInvoice answered without an invoice id or pay URL")
        return PaymentStart(url=url, provider_ref=str(invoice_id))

    def sign(self, body: bytes) -> str:
        return hmac.new(self._webhook_key, body, hashlib.sha256).hexdigest()

    def verify(self, request: CallbackRequest) -> PaymentEvent | None:
        signatures = [v for k, v in request.headers.items() if k.lower() == SIGNATURE_HEADER]
        if len(signatures) != 1 or not _HEX64.match(signatures[0]):
            raise CallbackRejected("missing or malformed signature")
        if not hmac.compare_digest(self.sign(request.body).encode(), signatures[0].lower().encode()):
            raise CallbackRejected("bad signature")
        try:
            update = loads_limited(request.body, unique_keys=True)
        except MalformedJson as exc:  # the stable code travels for the door to show
            raise CallbackRejected(exc.message, code=exc.code) from None
        if not isinstance(update, dict):
            raise CallbackRejected("body is not a JSON object")
        if update.get("update_type") != "invoice_paid":
            return None
        invoice = update.get("payload")
        if not isinstance(invoice, dict):
            raise CallbackRejected("invoice_paid without an invoice")
        if invoice.get("status") != "paid":
            return None
        raw = {k: str(update[k]) for k in ("update_id", "update_type", "request_date") if _is_scalar(update.get(k))}
        return _paid_event(invoice, raw, CallbackRejected)

    async def resume(self, order: OrderForPayment, provider_ref: str | None) -> PaymentStart | None:
        """The order's active invoice, read back: ``createInvoice`` again would make a second
        invoice, and the buyer could pay both."""
        invoice = await self._invoice(provider_ref)
        if invoice is None or invoice.get("status") != "active" or invoice.get("payload") != order.number:
            return None
        url = invoice.get("bot_invoice_url") or invoice.get("pay_url")
        if not isinstance(url, str) or not url.startswith("https://"):
            return None
        return PaymentStart(url=url, provider_ref=provider_ref)

    async def _invoice(self, provider_ref: str | None) -> dict[str, Any] | None:
        """The invoice ``start`` created (``getInvoices`` by id); None without a usable id."""
        if provider_ref is None or not provider_ref.isdigit():
            return None
        result = await self._call("getInvoices", {"invoice_ids": provider_ref})
        items = result.get("items")
        if not isinstance(items, list):
            raise ProviderError("Crypto Pay getInvoices answered without items")
        return next((i for i in items if isinstance(i, dict) and str(i.get("invoice_id")) == provider_ref), None)

    async def query_order(
        self, order_number: str, amount: int, currency: str, provider_ref: str | None
    ) -> PaymentEvent | None:
        """Ask for the order's invoice (``getInvoices`` by id); a paid one is the lost webhook."""
        invoice = await self._invoice(provider_ref)
        if invoice is None or invoice.get("status") != "paid":
            return None
        event = _paid_event(invoice, {"source": "query"}, ProviderError)
        if event.order_number != order_number:
            raise ProviderError("Crypto Pay invoice belongs to another order")
        return event

    async def _call(self, api_method: str, body: Mapping[str, Any]) -> dict[str, Any]:
        # The token travels in a header only; errors name the method and what failed, never it.
        status, data = await request_json(
            "POST",
            f"{self.api_base}/api/{api_method}",
            what=f"Crypto Pay {api_method}",
            error=ProviderError,
            timeout_seconds=self.timeout,
            json=body,
            headers={"Crypto-Pay-API-Token": self._token},
        )
        if data.get("ok") is not True:
            error = data.get("error")
            name = error.get("name") if isinstance(error, dict) else error
            reason = self._scrub(str(name or "no reason"))[:80]
            raise ProviderError(f"Crypto Pay {api_method} refused (HTTP {status}): {reason}")
        result = data.get("result")
        if not isinstance(result, dict):
            raise ProviderError(f"Crypto Pay {api_method} answered without a result")
        return result

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text


def _paid_event(invoice: Mapping[str, Any], raw: dict[str, str], error: type[Exception]) -> PaymentEvent:
    """A paid invoice as a payment of the invoice's own currency and amount."""
    invoice_id, number = invoice.get("invoice_id"), invoice.get("payload")
    if not _is_id(invoice_id):
        raise error("invoice id is malformed")
    if not isinstance(number, str):
        raise error("invoice carries no order number")
    currency_type = invoice.get("currency_type", "crypto")
    currency = invoice.get("fiat") if currency_type == "fiat" else invoice.get("asset")
    if currency_type not in ("fiat", "crypto") or not isinstance(currency, str) or currency not in EXPONENTS:
        raise error("invoice currency is not one we sell in")
    amount = invoice.get("amount")
    if not isinstance(amount, str):
        raise error("invoice amount is not decimal text")
    try:
        minor = _exact_minor(amount, currency)
    except InvalidInput:
        raise error("invoice amount is not an exact amount of its currency") from None
    raw.update({k: str(invoice[k])[:256] for k in RAW_FIELDS if _is_scalar(invoice.get(k))})
    return PaymentEvent(
        method=CryptoPay.name,
        provider_txn_id=str(invoice_id),
        order_number=number,
        amount=minor,
        currency=currency,
        raw=raw,
    )


def _exact_minor(text: str, currency: str) -> int:
    """``1``, ``1.0``, ``1.00`` and ``1.000`` are all exactly one yuan; ``1.001`` is not a
    yuan amount at all, and signs, exponents and anything but plain digits are refused."""
    text, digits = text.strip(), exponent(currency)
    whole, dot, frac = text.partition(".")
    if dot and len(frac) > digits and not frac[digits:].strip("0"):
        text = f"{whole}.{frac[:digits]}" if digits else whole
    return parse_minor(text, currency)


def _is_id(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value > 0
    return isinstance(value, str) and 0 < len(value) <= 20 and value.isascii() and value.isdigit()


def _is_scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool)
