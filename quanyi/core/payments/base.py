"""The payment-method interface.

Two flows fit behind it: ``link`` methods send the buyer to a pay page and learn of
the payment from an HTTP callback (EPay, sandbox, later Crypto Pay and Stripe);
``invoice`` methods are paid inside the chat and confirmed by a bot update (Telegram
Stars, with the payments work). Either way a verified event becomes a
``PaymentEvent`` and goes through the same ``fulfilment.apply_payment``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from quanyi.core.config import Settings
from quanyi.core.crypto import KeyRing
from quanyi.core.errors import CallbackRejected, ConfigError, PaymentMethodUnavailable


@dataclass(frozen=True)
class OrderForPayment:
    number: str
    amount: int
    currency: str
    title: str
    option: str


@dataclass(frozen=True)
class PaymentStart:
    url: str | None = None
    invoice: Mapping[str, object] | None = None


@dataclass(frozen=True)
class CallbackRequest:
    """An HTTP callback as received, before any parsing decides what it means."""

    http_method: str
    query: Sequence[tuple[str, str]] = ()
    form: Sequence[tuple[str, str]] = ()
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    def params(self) -> list[tuple[str, str]]:
        return [*self.query, *self.form]


@dataclass(frozen=True)
class PaymentEvent:
    """A provider's statement, already verified, that money arrived for an order."""

    method: str
    provider_txn_id: str
    order_number: str
    amount: int
    currency: str
    raw: Mapping[str, str]

    def __post_init__(self) -> None:
        # Column sizes, and PostgreSQL refuses NUL in text: a signed but unusable id is refused.
        for value, limit in ((self.provider_txn_id, 128), (self.order_number, 32)):
            if not 0 < len(value) <= limit or "\x00" in value:
                raise CallbackRejected("transaction id or order number is malformed")


class PaymentMethod(abc.ABC):
    name: str
    flow: Literal["link", "invoice"] = "link"

    def options(self) -> list[str]:
        """Sub-choices shown to the buyer (EPay's alipay / wxpay); default one option."""
        return [self.name]

    @abc.abstractmethod
    def start(self, order: OrderForPayment) -> PaymentStart: ...

    @abc.abstractmethod
    def verify(self, request: CallbackRequest) -> PaymentEvent | None:
        """Verify a callback. Raise ``CallbackRejected`` with the reason when it is not
        authentic; return None when it is authentic but reports no payment."""


class PaymentHub:
    def __init__(self, methods: Sequence[PaymentMethod]) -> None:
        self._methods = {method.name: method for method in methods}

    def get(self, name: str) -> PaymentMethod:
        try:
            return self._methods[name]
        except KeyError:
            raise PaymentMethodUnavailable(f"payment method {name!r} is not enabled") from None

    def names(self) -> list[str]:
        return list(self._methods)

    def choices(self) -> list[tuple[str, str]]:
        """(method, option) pairs in display order."""
        return [(m.name, option) for m in self._methods.values() for option in m.options()]


PLACEHOLDERS = {"", "changeme", "change-me", "secret", "key", "xxx", "your-key", "test", "placeholder"}


def require_secret(name: str, value: str) -> None:
    """Refuse to start a payment method whose secret is empty or a placeholder."""
    if value.strip().lower() in PLACEHOLDERS or len(value.strip()) < 8:
        raise ConfigError(f"{name} is empty or a placeholder; set a real secret or disable the method")


def build_payment_hub(settings: Settings, keyring: KeyRing) -> PaymentHub:
    from quanyi.core.payments.epay import EPay
    from quanyi.core.payments.sandbox import Sandbox

    methods: list[PaymentMethod] = []
    if settings.epay_gateway or settings.epay_pid or settings.epay_key:
        if not settings.epay_enabled:
            raise ConfigError("EPay needs QUANYI_EPAY_GATEWAY, QUANYI_EPAY_PID and QUANYI_EPAY_KEY together")
        require_secret("QUANYI_EPAY_KEY", settings.epay_key)
        methods.append(EPay(settings))
    if settings.sandbox_pay:
        methods.append(Sandbox(settings.public_url, keyring.sandbox_key))
    return PaymentHub(methods)
