"""易支付 (EPay): pay link with an MD5 signature, notify by GET or POST.

Exactly as CONTRACT.md specifies: ``sign`` is the lowercase hex MD5 of every parameter
but ``sign``, ``sign_type`` and empty values, sorted by name, joined ``k=v&k=v``, with
the merchant key appended directly. Some gateways join it as ``&key=KEY`` instead
(QUANYI_EPAY_SIGN_STYLE=amp_key). Every received parameter is signed, including ones a
gateway adds. A notify lost on the way is made good by ``query`` (``api.php?act=order``),
which the scheduler runs for orders still pending a few minutes after they were placed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from urllib.parse import urlencode

from quanyi.core.errors import CallbackRejected, ConfigError, InvalidInput, ProviderError
from quanyi.core.money import format_minor, parse_minor
from quanyi.core.payments._http import request_json
from quanyi.core.payments.base import CallbackRequest, OrderForPayment, PaymentEvent, PaymentMethod, PaymentStart
from quanyi.core.platform.config import Settings

UNSIGNED = {"sign", "sign_type"}


SIGN_STYLES = ("plain", "amp_key")
QUERY_TIMEOUT = 10


def epay_sign(params: Mapping[str, str], key: str, style: str = "plain") -> str:
    pairs = sorted((k, v) for k, v in params.items() if k not in UNSIGNED and v != "")
    text = "&".join(f"{k}={v}" for k, v in pairs)
    text += f"&key={key}" if style == "amp_key" else key
    return hashlib.md5(text.encode()).hexdigest()


class EPay(PaymentMethod):
    name = "epay"
    supports_query = True

    def __init__(self, settings: Settings) -> None:
        self.gateway = settings.epay_gateway
        self.pid = settings.epay_pid
        self._key = settings.epay_key
        self.types = settings.epay_type_list or ["alipay"]
        self.public_url = settings.public_url
        if settings.epay_sign_style not in SIGN_STYLES:
            raise ConfigError(f"QUANYI_EPAY_SIGN_STYLE is one of: {', '.join(SIGN_STYLES)}")
        self.sign_style = settings.epay_sign_style

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
        params["sign"] = epay_sign(params, self._key, self.sign_style)
        params["sign_type"] = "MD5"
        return PaymentStart(url=f"{self.gateway}/submit.php?{urlencode(params)}")

    def verify(self, request: CallbackRequest) -> PaymentEvent | None:
        params = _single_valued(request.params())
        for required in ("pid", "trade_no", "out_trade_no", "money", "trade_status", "sign"):
            if not params.get(required):
                raise CallbackRejected(f"missing {required}")
        if params.get("sign_type", "MD5").upper() != "MD5":
            raise CallbackRejected("unsupported sign_type")
        expected = epay_sign(params, self._key, self.sign_style)
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

    async def query(self, order_number: str, amount: int, currency: str) -> PaymentEvent | None:
        """Ask the gateway about one order. Paid = ``code == 1`` and ``status == 1`` for our
        pid and this order; the caller's fulfilment still checks the amount."""
        data = await _query_gateway(
            self.gateway, {"act": "order", "pid": self.pid, "key": self._key, "out_trade_no": order_number}
        )
        if str(data.get("code")) != "1" or str(data.get("status")) != "1":
            return None
        if str(data.get("out_trade_no")) != order_number or str(data.get("pid", self.pid)) != self.pid:
            raise ProviderError("EPay order query answered for another order or merchant")
        trade_no = str(data.get("trade_no") or "")
        if not trade_no:
            raise ProviderError("EPay order query reported a payment without trade_no")
        try:
            paid = parse_minor(str(data.get("money")), "CNY")
        except InvalidInput:
            raise ProviderError("EPay order query reported an unreadable amount") from None
        raw = {k: str(v) for k, v in data.items() if k != "key"}
        raw["source"] = "query"
        return PaymentEvent(
            method=self.name, provider_txn_id=trade_no, order_number=order_number, amount=paid, currency="CNY", raw=raw
        )


async def _query_gateway(gateway: str, params: Mapping[str, str]) -> dict[str, object]:
    # The URL carries the merchant key: request_json never puts a URL into an error.
    status, data = await request_json(
        "GET",
        f"{gateway}/api.php",
        what="EPay order query",
        error=ProviderError,
        timeout_seconds=QUERY_TIMEOUT,
        params=params,
    )
    if status != 200:
        raise ProviderError(f"EPay order query answered HTTP {status}")
    return data


def _single_valued(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """A parameter given twice (``money=1&money=100``) is an attack, not a choice."""
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise CallbackRejected(f"parameter {key} repeated")
        params[key] = value
    return params
