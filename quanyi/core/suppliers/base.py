"""The recharge-supplier interface: place a recharge, ask about it, read its callback.

A supplier credits a buyer's account (a mobile number, a video-site account id) for a
``direct_recharge`` line. Our order number is the supplier's customer order number and its
idempotency key: placing it again returns the first order, so a retry never credits twice.
Placing and querying call the supplier over HTTP, so they are async and are never called
inside a database transaction.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeGuard

from quanyi.core.errors import ConfigError, InvalidInput

RechargeState = Literal["processing", "success", "failed"]
STATES: tuple[RechargeState, ...] = ("processing", "success", "failed")
TERMINAL: frozenset[str] = frozenset({"success", "failed"})

# Safe in a URL path and in every supplier's order-number column we have seen.
ORDER_NUMBER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", re.ASCII)
CURRENCY = re.compile(r"[A-Z]{3,4}", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def advance(current: RechargeState, reported: RechargeState) -> RechargeState:
    """The state after a supplier's report: ``processing`` may become ``success`` or ``failed``;
    a terminal state never changes (a late ``processing`` callback after ``success`` is stale)."""
    return reported if current == "processing" else current


def check_order_number(order_number: str) -> str:
    if not isinstance(order_number, str) or not ORDER_NUMBER.fullmatch(order_number):
        raise InvalidInput("a supplier order number is 1-64 letters, digits, '-' or '_'")
    return order_number


def plain_text(value: object, limit: int) -> TypeGuard[str]:
    """A non-empty string of at most ``limit`` characters without control characters."""
    return isinstance(value, str) and 0 < len(value) <= limit and not _CONTROL.search(value)


@dataclass(frozen=True)
class RechargeRequest:
    """One recharge to place. ``order_number`` is our line's number, reused on every retry."""

    order_number: str
    product_code: str
    account: str
    amount: int
    currency: str
    callback_url: str

    def __post_init__(self) -> None:
        check_order_number(self.order_number)
        if not plain_text(self.product_code, 64):
            raise InvalidInput("the supplier product code is empty or malformed")
        if not plain_text(self.account, 128):
            raise InvalidInput("the account to recharge is empty or malformed")
        if not isinstance(self.amount, int) or isinstance(self.amount, bool) or self.amount <= 0:
            raise InvalidInput("a recharge amount is a positive whole number of minor units")
        if not isinstance(self.currency, str) or not CURRENCY.fullmatch(self.currency):
            raise InvalidInput("a recharge currency is an ISO code such as CNY")
        if not plain_text(self.callback_url, 500) or not self.callback_url.startswith(("http://", "https://")):
            raise InvalidInput("the callback URL must be an http(s) URL")


@dataclass(frozen=True)
class SupplierResult:
    """What a supplier says about one order, from a place or query answer or a callback."""

    order_number: str
    supplier_order_id: str
    state: RechargeState
    reason: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


class Supplier(abc.ABC):
    """One recharge supplier. ``name`` is the ``<supplier>`` in ``/recharge/<supplier>/callback``."""

    name: str

    @abc.abstractmethod
    async def place(self, request: RechargeRequest) -> SupplierResult:
        """Place a recharge, or get back the order already placed under its order number.

        Raises ``SupplierError`` when the supplier refuses the request or does not answer in
        time; the order may still exist there, so the caller retries with the same request.
        """

    @abc.abstractmethod
    async def query(self, order_number: str) -> SupplierResult:
        """Ask about an order. Raises ``SupplierOrderUnknown`` when the supplier never received
        it, ``SupplierError`` when it cannot be asked."""

    @abc.abstractmethod
    def parse_callback(self, headers: Mapping[str, str], raw_body: bytes) -> SupplierResult:
        """Verify and read a callback as received. Raises ``CallbackRejected`` with the reason
        when the signature is missing, wrong or stale or the body is malformed; nothing changed."""


def callback_url(public_url: str, supplier: str) -> str:
    """Where a supplier posts its callbacks for us."""
    return f"{public_url.rstrip('/')}/recharge/{supplier}/callback"


class SupplierHub:
    def __init__(self, suppliers: Sequence[Supplier]) -> None:
        self._suppliers = {supplier.name: supplier for supplier in suppliers}

    def get(self, name: str) -> Supplier:
        try:
            return self._suppliers[name]
        except KeyError:
            raise ConfigError(f"recharge supplier {name!r} is not configured") from None

    def names(self) -> list[str]:
        return list(self._suppliers)
