"""What a refund tells: the buyer's message and the operator's answer say only what it undid
(codes voided, links revoked, or nothing — a second payment given back)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.models import Order, RedeemStatus, RedeemToken, StockItem, StockStatus
from quanyi.core.payments.base import RefundEvent
from quanyi.core.platform import outbox


async def tell_refunded(
    session: AsyncSession,
    order: Order,
    amount: int,
    currency: str,
    *,
    payment_only: bool = False,
    undid: tuple[bool, bool] | None = None,
) -> None:
    """The buyer's refund message, with what the refund did to the order: its codes voided, its
    links revoked, or nothing at all (``payment_only``: a second payment given back). ``undid`` is
    ``what_it_undid`` when the caller has read it already."""
    if order.chat_id is None:
        return
    payload: dict[str, object] = {"order_id": order.id, "amount": amount, "currency": currency}
    if payment_only:
        payload.update(payment_only=True, codes_voided=False, links_revoked=False)
    else:
        voided, revoked = undid if undid is not None else await what_it_undid(session, order.id)
        payload.update(payment_only=False, codes_voided=voided, links_revoked=revoked)
    outbox.enqueue(session, chat_id=order.chat_id, kind="refunded", payload=payload, language=order.language)


async def what_it_undid(session: AsyncSession, order_id: int) -> tuple[bool, bool]:
    """Whether the order now has voided card keys, and revoked redemption links."""
    voided = await session.scalar(
        select(StockItem.id).where(StockItem.order_id == order_id, StockItem.status == StockStatus.VOID).limit(1)
    )
    revoked = await session.scalar(
        select(RedeemToken.id).where(RedeemToken.order_id == order_id, RedeemToken.status == RedeemStatus.VOID).limit(1)
    )
    return voided is not None, revoked is not None


async def tell_operators_refunded(
    session: AsyncSession, admin_ids: list[int], order_id: int, event: RefundEvent
) -> None:
    """Operators hear of a refund or charge-back the provider made, with what it undid."""
    voided, revoked = await what_it_undid(session, order_id)
    payload = {
        "order_id": order_id,
        "amount": event.amount,
        "currency": event.currency,
        "method": event.method,
        "codes_voided": voided,
        "links_revoked": revoked,
    }
    await outbox.enqueue_admins(session, admin_ids, "admin_provider_refund", payload)
