"""Telegram Stars (XTR): an in-chat invoice, paid on ``successful_payment``.

UNDER CONSTRUCTION (issue 3): implemented by the Stars work.
"""

from __future__ import annotations

from quanyi.core.config import Settings
from quanyi.core.payments.base import Invoice, OrderForPayment, PaymentMethod, PaymentStart


class Stars(PaymentMethod):
    name = "stars"
    flow = "invoice"
    currency = "XTR"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def start(self, order: OrderForPayment) -> PaymentStart:
        return PaymentStart(
            invoice=Invoice(
                title=order.title[:32],
                description=order.title[:255],
                payload=order.number,
                currency="XTR",
                amount=order.amount,
            )
        )
