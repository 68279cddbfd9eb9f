"""The payment-method interface.

Two flows fit behind it: ``link`` methods send the buyer to a pay page and learn of
the payment from an HTTP callback (EPay, sandbox, Crypto Pay, Stripe); ``invoice``
methods are paid inside the chat and confirmed by a bot update (Telegram Stars).
Either way a verified event becomes a ``PaymentEvent`` (money in) or a
``RefundEvent`` (money back, started by the provider or confirming ours) and goes
through the same core services.

Starting a payment and refunding may call the provider over HTTP, so they are async
and are never called inside a database transaction.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from quanyi.core.errors import (
    CallbackRejected,
    ConfigError,
    PaymentMethodUnavailable,
    RefundNotSupported,
)
from quanyi.core.platform.config import Settings
from quanyi.core.platform.crypto import KeyRing


@dataclass(frozen=True)
class OrderForPayment:
    number: str
    amount: int
    currency: str
    title: str
    option: str


@dataclass(frozen=True)
class Invoice:
    """An in-chat invoice for the bot to send (Telegram Stars)."""

    title: str
    description: str
    payload: str
    currency: str
    amount: int


@dataclass(frozen=True)
class PaymentStart:
    url: str | None = None
    invoice: Invoice | None = None
    # The provider's id for this attempt (Crypto Pay invoice id, Stripe session id).
    provider_ref: str | None = None


@dataclass(frozen=True)
class PaidWith:
    """What a refund needs to know about the payment it gives back."""

    order_number: str
    provider_txn_id: str
    amount: int
    currency: str
    user_id: int | None
    raw: Mapping[str, str]


@dataclass(frozen=True)
class RefundEvent:
    """A provider's statement, already verified, that money went back to the payer.

    ``provider_txn_id`` names the payment refunded; ``amount`` is what went back.
    """

    method: str
    provider_txn_id: str
    provider_refund_id: str
    amount: int
    currency: str
    raw: Mapping[str, str]
    event_id: str | None = None


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
    # The provider's webhook event id where it has one (Stripe): seen twice = a replay.
    event_id: str | None = None

    def __post_init__(self) -> None:
        # Column sizes, and PostgreSQL refuses NUL in text: a signed but unusable id is refused.
        for value, limit in ((self.provider_txn_id, 128), (self.order_number, 32)):
            if not 0 < len(value) <= limit or "\x00" in value:
                raise CallbackRejected("transaction id or order number is malformed")


class PaymentMethod(abc.ABC):
    name: str
    flow: Literal["link", "invoice"] = "link"
    # The currency this method charges in when it is not the product's own (Stars: XTR).
    currency: str | None = None
    supports_refund: bool = False
    # True when the provider gives a payment back only whole (Stars): a refund of several rows is
    # one call, which cannot pay back twice whatever its key.
    refunds_whole_payment: bool = False
    # True when ``query`` can ask the provider about an order (a lost callback is made good).
    supports_query: bool = False
    # True for a method buyers never pick (the partner API's balance).
    hidden: bool = False
    # True for a method through which no money moves (the sandbox): beside a real method it is
    # offered to operators only, so a buyer never sees a way to pay nothing.
    simulated: bool = False

    def options(self) -> list[str]:
        """Sub-choices shown to the buyer (EPay's alipay / wxpay); default one option."""
        return [self.name]

    @abc.abstractmethod
    async def start(self, order: OrderForPayment) -> PaymentStart: ...

    async def resume(self, order: OrderForPayment, provider_ref: str | None) -> PaymentStart | None:
        """The payment ``start`` began for the order, to show it again (a repeated tap), never a
        second attempt at the provider. This default starts again, which is right for methods
        whose ``start`` only builds a link or an invoice (EPay, the sandbox, Stars); a method
        that creates something at the provider reads it back by ``provider_ref`` instead and
        answers None while that is not known yet, or when it can no longer be paid."""
        return await self.start(order)

    def verify(self, request: CallbackRequest) -> PaymentEvent | RefundEvent | None:
        """Verify a callback. Raise ``CallbackRejected`` with the reason when it is not
        authentic; return None when it is authentic but reports nothing to act on."""
        raise CallbackRejected(f"{self.name} takes no HTTP callbacks")

    async def refund(self, paid: PaidWith, amount: int, reason: str, idempotency_key: str) -> str:
        """Give ``amount`` of a payment back; returns the provider's refund id.

        ``idempotency_key`` is the same on every retry of one refund (Stripe dedupes on it).
        Raise ``RefundFailed`` when the provider refuses or cannot be reached.
        """
        raise RefundNotSupported(f"{self.name} cannot refund through its API; refund by hand and record it")

    async def query(self, order_number: str, amount: int, currency: str) -> PaymentEvent | None:
        """Ask the provider whether the order was paid (for a lost notify); None = not paid."""
        return None

    async def query_order(
        self, order_number: str, amount: int, currency: str, provider_ref: str | None
    ) -> PaymentEvent | None:
        """``query`` for methods that find a payment by the id ``start`` returned (Crypto Pay's
        invoice id) rather than by order number."""
        return await self.query(order_number, amount, currency)


class PaymentHub:
    def __init__(self, methods: Sequence[PaymentMethod], *, operators: Iterable[int] = ()) -> None:
        self._methods = {method.name: method for method in methods}
        self._operators = frozenset(operators)

    def get(self, name: str) -> PaymentMethod:
        try:
            return self._methods[name]
        except KeyError:
            raise PaymentMethodUnavailable(f"payment method {name!r} is not enabled") from None

    def add(self, method: PaymentMethod) -> None:
        self._methods[method.name] = method

    def names(self) -> list[str]:
        """The providers' methods (not the partner balance)."""
        return [name for name, m in self._methods.items() if not m.hidden]

    def methods(self) -> list[PaymentMethod]:
        return list(self._methods.values())

    def offered(self, name: str, user_id: int | None) -> bool:
        """Whether ``user_id`` may pay with ``name``. A simulated method (the sandbox) alone is
        offered to everyone (the demo); beside a real one, to operators only."""
        method = self._methods.get(name)
        if method is None or method.hidden:
            return False
        if not method.simulated or user_id in self._operators:
            return True
        return not any(not m.hidden and not m.simulated for m in self._methods.values())

    def choices(self, user_id: int | None) -> list[tuple[str, str]]:
        """(method, option) pairs ``user_id`` chooses from, in display order."""
        offered = [m for m in self._methods.values() if self.offered(m.name, user_id)]
        return [(m.name, option) for m in offered for option in m.options()]


PLACEHOLDERS = {"", "changeme", "change-me", "secret", "key", "xxx", "your-key", "test", "placeholder"}


def require_secret(name: str, value: str) -> None:
    """Refuse to start a payment method whose secret is empty or a placeholder."""
    if value.strip().lower() in PLACEHOLDERS or len(value.strip()) < 8:
        raise ConfigError(f"{name} is empty or a placeholder; set a real secret or disable the method")


def build_payment_hub(settings: Settings, keyring: KeyRing) -> PaymentHub:
    """The enabled methods, in the order buyers see them. Refuses to start when an enabled
    method's secret is empty or a placeholder."""
    from quanyi.core.payments.cryptopay import CryptoPay
    from quanyi.core.payments.epay import EPay
    from quanyi.core.payments.sandbox import Sandbox
    from quanyi.core.payments.stars import Stars
    from quanyi.core.payments.stripe import Stripe

    methods: list[PaymentMethod] = []
    if settings.bot_token and settings.stars_enabled:
        # Telegram requires digital goods sold in a bot to be purchasable with Stars.
        methods.append(Stars(settings))
    if settings.epay_gateway or settings.epay_pid or settings.epay_key:
        if not settings.epay_enabled:
            raise ConfigError("EPay needs QUANYI_EPAY_GATEWAY, QUANYI_EPAY_PID and QUANYI_EPAY_KEY together")
        require_secret("QUANYI_EPAY_KEY", settings.epay_key)
        methods.append(EPay(settings))
    if settings.cryptobot_token:
        require_secret("QUANYI_CRYPTOBOT_TOKEN", settings.cryptobot_token)
        methods.append(CryptoPay(settings))
    if settings.stripe_secret_key or settings.stripe_webhook_secret:
        require_secret("QUANYI_STRIPE_SECRET_KEY", settings.stripe_secret_key)
        require_secret("QUANYI_STRIPE_WEBHOOK_SECRET", settings.stripe_webhook_secret)
        methods.append(Stripe(settings))
    if settings.sandbox_pay:
        methods.append(Sandbox(settings.public_url, keyring.sandbox_key))
    return PaymentHub(methods, operators=settings.admin_id_list)
