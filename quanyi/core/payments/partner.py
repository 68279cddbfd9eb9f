"""Paying an order from a partner's prepaid balance (the open API).

The balance is taken when the API places the order, in the same transaction (ledger: the
partner's balance to ``clearing:partner``); the payment is then applied through the same
fulfilment path as any provider's (``Fulfiller.submit``), which moves ``clearing:partner`` to
revenue. A refund gives the money back to the balance. ``query`` makes good a payment whose
fulfilment never ran (the process stopped between the two): the ledger entry of the debit is
the proof the money was taken.
"""

from __future__ import annotations

from sqlalchemy import select

from quanyi.core.books import ledger
from quanyi.core.errors import RefundFailed
from quanyi.core.models import JournalEntry, Order, Partner, PartnerOrder
from quanyi.core.payments.base import OrderForPayment, PaidWith, PaymentEvent, PaymentMethod, PaymentStart
from quanyi.core.platform.db import Database

NAME = "partner"


def debit_ref(order_number: str) -> str:
    return f"partner-pay:{order_number}"


def txn_id(order_number: str) -> str:
    return f"balance:{order_number}"


def event_for(order: Order) -> PaymentEvent:
    return PaymentEvent(
        method=NAME,
        provider_txn_id=txn_id(order.number),
        order_number=order.number,
        amount=order.amount,
        currency=order.currency,
        raw={"source": "partner balance"},
    )


class PartnerBalance(PaymentMethod):
    name = NAME
    supports_refund = True
    supports_query = True
    # Never offered to buyers in chat: only the API pays with it.
    hidden = True

    def __init__(self, db: Database) -> None:
        self.db = db

    async def start(self, order: OrderForPayment) -> PaymentStart:
        return PaymentStart()  # taken from the balance when the order is placed

    async def query(self, order_number: str, amount: int, currency: str) -> PaymentEvent | None:
        async with self.db.read() as session:
            debited = await session.scalar(select(JournalEntry.ref).where(JournalEntry.ref == debit_ref(order_number)))
            order = await session.scalar(select(Order).where(Order.number == order_number))
        if debited is None or order is None:
            return None
        return event_for(order)

    async def refund(self, paid: PaidWith, amount: int, reason: str, idempotency_key: str) -> str:
        from quanyi.core.partners import accounts as partners

        async with self.db.transaction() as session:
            # The partner's row is locked: two calls with one key cannot both find it undone.
            partner = await session.scalar(
                select(Partner)
                .join(PartnerOrder, PartnerOrder.partner_id == Partner.id)
                .join(Order, Order.id == PartnerOrder.order_id)
                .where(Order.number == paid.order_number)
                .with_for_update(of=Partner)
            )
            if partner is None:
                raise RefundFailed(f"order {paid.order_number} was not placed by a partner")
            # The key is the refund row's own (``refunds.provider_key``), the same on every
            # retry of that row: the balance is credited once per row, never per attempt.
            ref = f"partner-refund:{idempotency_key}"
            done = await session.scalar(select(JournalEntry.ref).where(JournalEntry.ref == ref))
            if done is None:
                await partners.adjust_balance(
                    session,
                    partner,
                    amount,
                    ref=ref,
                    kind="partner_refund",
                    counter=ledger.clearing(NAME),
                    memo=reason,
                )
        return ref
