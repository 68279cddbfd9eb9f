"""What the payment, redemption and operator doors are handed: an order's sheet, recent orders
and payments, a sandbox order, a callback's result, and the redemption link views."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.models import ManualTask, Order, OrderStatus, Payment, Recharge
from quanyi.core.sales import orders, redeem
from quanyi.core.sales.redeem import TokenState, TokenView, is_well_formed

__all__ = [
    "CallbackApplied",
    "LineView",
    "OrderRow",
    "OrderSheet",
    "PaymentRow",
    "PaymentView",
    "RechargeApplied",
    "RechargeView",
    "RedemptionView",
    "RefundView",
    "SandboxOrder",
    "TokenState",
    "TokenView",
    "is_well_formed",
    "order_rows",
    "order_sheet",
    "payment_rows",
    "sandbox_order",
]

# Where an operator may still refund an order from its sheet (a refunded one has nothing left).
_REFUND_OFFERED = (OrderStatus.PAID, OrderStatus.DELIVERED, OrderStatus.FAILED)


@dataclass(frozen=True)
class OrderRow:
    number: str
    status: str
    amount: int
    currency: str
    payment_method: str
    user_id: int | None
    created_at: datetime
    failure_reason: str | None


@dataclass(frozen=True)
class LineView:
    line_no: int
    sku: str
    name: str
    quantity: int
    amount: int
    refunded: bool


@dataclass(frozen=True)
class PaymentView:
    id: int
    method: str
    provider_txn_id: str
    amount: int
    currency: str
    outcome: str


@dataclass(frozen=True)
class RefundView:
    id: int
    scope: str
    line_no: int | None  # the line refunded; None for a whole payment's refund
    amount: int
    currency: str
    status: str
    initiated_by: str
    reason: str
    last_error: str | None


@dataclass(frozen=True)
class RedemptionView:
    token_id: int
    line_no: int | None
    use_no: int
    by: str
    channel: str
    at: datetime


@dataclass(frozen=True)
class RechargeView:
    account: str
    status: str
    failure_reason: str | None
    resolution: str | None


@dataclass(frozen=True)
class ManualView:
    """A line fulfilled by hand: for whom, how far it is, by when, and who holds it."""

    account: str
    status: str  # queued | taken | done | failed | expired
    deadline_at: datetime
    taken_by: int | None
    reason: str | None
    resolution: str | None


@dataclass(frozen=True)
class OrderSheet:
    """An order as an operator sees it: lines, payments, uses of its links, recharges, refunds,
    whether the buyer got the delivery message. Never its codes."""

    number: str
    status: str
    amount: int
    currency: str
    payment_method: str
    user_id: int | None
    created_at: datetime
    failure_reason: str | None
    lines: tuple[LineView, ...]
    payments: tuple[PaymentView, ...]
    redemptions: tuple[RedemptionView, ...]
    recharges: tuple[RechargeView, ...]
    refunds: tuple[RefundView, ...]
    delivery: str | None  # the delivery message's outbox state (see ``orders.OrderDetails``)
    delivery_error: str | None
    refund_offered: bool
    manual: tuple[ManualView, ...] = ()


@dataclass(frozen=True)
class PaymentRow:
    id: int
    order_number: str
    method: str
    provider_txn_id: str
    amount: int
    currency: str
    outcome: str
    refunded: bool
    created_at: datetime


@dataclass(frozen=True)
class SandboxOrder:
    """What the sandbox pay page shows of an order."""

    number: str
    amount: int
    currency: str
    status: str
    payment_method: str
    payable: bool


@dataclass(frozen=True)
class CallbackApplied:
    """What a verified payment notification did; ``outcome`` None: authentic, nothing to act on."""

    outcome: str | None = None
    order_number: str | None = None  # the order a payment was for
    refund_of: str | None = None  # the provider's id of the payment a refund gave back


@dataclass(frozen=True)
class RechargeApplied:
    """What a supplier's callback said (``state``) and what it changed (``outcome``)."""

    order_number: str
    state: str
    outcome: str


def _row(order: Order) -> OrderRow:
    return OrderRow(
        order.number,
        order.status,
        order.amount,
        order.currency,
        order.payment_method,
        order.user_id,
        order.created_at,
        order.failure_reason,
    )


async def order_rows(session: AsyncSession, *, status: str | None, limit: int) -> list[OrderRow]:
    """Recent orders, newest first."""
    return [_row(order) for order in await orders.list_orders(session, status=status, limit=limit)]


async def order_sheet(session: AsyncSession, number: str) -> OrderSheet:
    """One order's sheet; ``NotFound`` for an unknown number."""
    details = await orders.order_details(session, number)
    order = details.order
    numbers = details.line_numbers
    uses = await redeem.redemptions(session, order.id)
    recharges = await session.scalars(select(Recharge).where(Recharge.order_id == order.id).order_by(Recharge.id))
    tasks = await session.scalars(select(ManualTask).where(ManualTask.order_id == order.id).order_by(ManualTask.id))
    return OrderSheet(
        number=order.number,
        status=order.status,
        amount=order.amount,
        currency=order.currency,
        payment_method=order.payment_method,
        user_id=order.user_id,
        created_at=order.created_at,
        failure_reason=order.failure_reason,
        lines=tuple(
            LineView(line.line_no, line.sku, line.name, line.quantity, line.amount, line.id in details.refunded_lines)
            for line in order.lines
        ),
        payments=tuple(
            PaymentView(p.id, p.method, p.provider_txn_id, p.amount, p.currency, p.outcome) for p in details.payments
        ),
        redemptions=tuple(
            RedemptionView(
                use.token_id,
                numbers.get(use.order_line_id) if use.order_line_id else None,
                use.use_no,
                use.by,
                use.channel,
                use.at,
            )
            for use in uses
        ),
        recharges=tuple(RechargeView(r.account, r.status, r.failure_reason, r.resolution) for r in recharges),
        refunds=tuple(
            RefundView(
                r.id,
                r.scope,
                numbers.get(r.order_line_id) if r.order_line_id else None,
                r.amount,
                r.currency,
                r.status,
                r.initiated_by,
                r.reason,
                r.last_error,
            )
            for r in details.refunds
        ),
        delivery=details.delivery,
        delivery_error=details.delivery_error,
        refund_offered=order.status in _REFUND_OFFERED,
        manual=tuple(
            ManualView(task.account, task.status, task.deadline_at, task.taken_by, task.reason, task.resolution)
            for task in tasks
        ),
    )


async def payment_rows(session: AsyncSession, *, review_only: bool, limit: int) -> list[PaymentRow]:
    """Recent payments, newest first, with their order number and whether a refund covers them."""
    return [
        PaymentRow(p.id, number, p.method, p.provider_txn_id, p.amount, p.currency, p.outcome, refunded, p.created_at)
        for p, number, refunded in await orders.list_payments(session, review_only=review_only, limit=limit)
    ]


async def sandbox_order(session: AsyncSession, number: str) -> tuple[SandboxOrder, int | None]:
    """An order as the sandbox pay page shows it, and its buyer (who may pay in the sandbox).
    ``NotFound`` for an unknown number."""
    order = await orders.get_order(session, number)
    payable = order.status == OrderStatus.PENDING and order.payment_method == "sandbox"
    view = SandboxOrder(order.number, order.amount, order.currency, order.status, order.payment_method, payable)
    return view, order.user_id


async def sandbox_confirmed(session: AsyncSession, number: str, txn: str) -> bool:
    """Whether the order was paid by this sandbox transaction (its pay button's, pressed before)."""
    found = await session.scalar(
        select(Payment.id)
        .join(Order, Order.id == Payment.order_id)
        .where(Order.number == number, Payment.method == "sandbox", Payment.provider_txn_id == txn)
        .where(Payment.outcome == "applied")
    )
    return found is not None
