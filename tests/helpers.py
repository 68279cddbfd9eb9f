"""Helpers shared by tests: products with stock, orders, signed callbacks."""

from __future__ import annotations

import secrets
from pathlib import Path

from quanyi.core.catalog.products import add_product
from quanyi.core.money import Money
from quanyi.core.payments.base import PaymentEvent
from quanyi.core.sales.orders import Buyer, OrderRequest, PlacedOrder, checkout
from quanyi.core.services import Core
from quanyi.core.stock.items import import_stock


async def product_with_stock(
    core: Core, tmp_path: Path, *, sku: str = "VIP", price: str = "15.00", units: int = 5
) -> list[str]:
    """Create a card-key product and import ``units`` fresh codes; returns the secrets."""
    async with core.db.transaction() as session:
        await add_product(session, sku=sku, name=f"{sku} membership", kind="card_key", price=Money.parse(price, "CNY"))
    codes = [f"{sku}-{secrets.token_hex(10)}" for _ in range(units)]
    if units:
        path = tmp_path / f"{sku}-{secrets.token_hex(3)}.txt"
        path.write_text("\n".join(codes) + "\n")
        await import_stock(core.db, core.keyring, sku, path)
    return codes


async def new_order(
    core: Core,
    *,
    sku: str = "VIP",
    quantity: int = 1,
    user_id: int = 1001,
    method: str = "sandbox",
    lang: str = "zh",
    account: str | None = None,
) -> PlacedOrder:
    """Place an order and start its payment, as the chat does (``orders.checkout``)."""
    return await checkout(
        core.db,
        core.payments,
        OrderRequest(
            buyer=Buyer(user_id=user_id, chat_id=user_id, language=lang),
            sku=sku,
            quantity=quantity,
            method=method,
            reservation=core.reservation,
            max_quantity=core.settings.max_quantity,
            stars_rate=core.settings.stars_rate,
            account=account,
        ),
    )


def sandbox_event(number: str, amount: int, *, txn: str | None = None, currency: str = "CNY") -> PaymentEvent:
    txn = txn or "SBX" + secrets.token_hex(6)
    return PaymentEvent(
        method="sandbox",
        provider_txn_id=txn,
        order_number=number,
        amount=amount,
        currency=currency,
        raw={"txn_id": txn},
    )
