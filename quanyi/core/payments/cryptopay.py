"""Crypto Pay (@CryptoBot). UNDER CONSTRUCTION (issue 3)."""

from __future__ import annotations

from quanyi.core.config import Settings
from quanyi.core.errors import ProviderError
from quanyi.core.payments.base import OrderForPayment, PaymentMethod, PaymentStart


class CryptoPay(PaymentMethod):
    name = "cryptobot"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def start(self, order: OrderForPayment) -> PaymentStart:
        raise ProviderError("Crypto Pay is not implemented yet")
