"""易支付 (EPay): pay link with an MD5 signature, notify by GET or POST.

Exactly as CONTRACT.md specifies: ``sign`` is the lowercase hex MD5 of every parameter
but ``sign``, ``sign_type`` and empty values, sorted by name, joined ``k=v&k=v``, with
the merchant key appended directly.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from urllib.parse import urlencode

from quanyi.core.config import Settings
from quanyi.core.errors import CallbackRejected, InvalidInput
from quanyi.core.money import format_minor, parse_minor
from quanyi.core.payments.base import CallbackRequest, OrderForPayment, PaymentEvent, PaymentMethod, PaymentStart

UNSIGNED = {"sign", "sign_type"}


def epay_sign(params: Mapping[str, str], key: str) -> str:
    pairs = sorted((k, v) for k, v in params.items() if k not in UNSIGNED and v != "")
    text = "&".join(f"{k}={v}" for k, v in pairs) + key
    return hashlib.md5(text.encode()).hexdigest()


class EPay(PaymentMethod):
    name = "epay"

    def __init__(self, settings: Settings) -> None:
        self.gateway = settings.epay_gateway
        self.pid = settings.epay_pid
        self._key = settings.epay_key
        self.types = settings.epay_type_list or ["alipay"]
        self.public_url = settings.public_url

    def __repr__(self) -> str:
        return f"EPay(gateway={self.gateway!r}, pid={self.pid!r})"

    def options(self) -> list[str]:
        return list(self.types)

    async def start(self, order: OrderForPayment) -> PaymentStart:
        if order.currency != "CNY":
            raise InvalidInput("EPay takes CNY only")
        params = {
            "pid": self.pid,
            "type": order.option if order.option in self.types else self.types[0],
            "out_trade_no": order.number,
            "notify_url": f"{self.public_url}/pay/epay/notify",
            "return_url": f"{self.public_url}/pay/return/{order.number}",
            "name": order.title[:100],
            "money": format_minor(order.amount, "CNY"),
        }
        params["sign"] = epay_sign(params, self._key)
        params["sign_type"] = "MD5"
        return PaymentStart(url=f"{self.gateway}/submit.php?{urlencode(params)}")

    def verify(self, request: CallbackRequest) -> PaymentEvent | None:
        params = _single_valued(request.params())
        for required in ("pid", "trade_no", "out_trade_no", "money", "trade_status", "sign"):
            if not params.get(required):
                raise CallbackRejected(f"missing {required}")
        if params.get("sign_type", "MD5").upper() != "MD5":
            raise CallbackRejected("unsupported sign_type")
        expected = epay_sign(params, self._key)
        if not hmac.compare_digest(expected.encode(), params["sign"].lower().encode()):
            raise CallbackRejected("bad signature")
        if params["pid"] != self.pid:
            raise CallbackRejected("pid is not ours")
        if params["trade_status"] != "TRADE_SUCCESS":
            return None
        try:
            amount = parse_minor(params["money"], "CNY")
        except InvalidInput:
            raise CallbackRejected("money is not a CNY amount") from None
        return PaymentEvent(
            method=self.name,
            provider_txn_id=params["trade_no"],
            order_number=params["out_trade_no"],
            amount=amount,
            currency="CNY",
            raw=params,
        )


def _single_valued(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """A parameter given twice (``money=1&money=100``) is an attack, not a choice."""
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise CallbackRejected(f"parameter {key} repeated")
        params[key] = value
    return params
