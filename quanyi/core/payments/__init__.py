"""Payment methods behind one interface, and the hub that holds the enabled ones."""

from quanyi.core.payments.base import (
    CallbackRequest,
    PaymentEvent,
    PaymentHub,
    PaymentMethod,
    PaymentStart,
    build_payment_hub,
)

__all__ = [
    "CallbackRequest",
    "PaymentEvent",
    "PaymentHub",
    "PaymentMethod",
    "PaymentStart",
    "build_payment_hub",
]
