"""What a distributor is told of what happens to it, written to the outbox in the transaction
that made the change (so a change that rolls back tells nobody, and a committed one is never
lost), in the distributor's language. The figures go in the payload as they were then: a
later change must not rewrite what an earlier message says.

Kinds (rendered by ``quanyi.bot.distributor.notices``): ``distributor_allocation`` (an
allocation, take-back, shared pool, or quota passed between a parent and its sub),
``distributor_balance`` (a top-up or debit), ``distributor_sub_joined``,
``commission_available``, ``distributor_digest``; the withdrawal kinds are
``books.withdrawals``'.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.models import Allocation, AllocationMode, Channel, ChannelKind, Distributor, Product, User
from quanyi.core.platform import outbox

ALLOCATION = "distributor_allocation"
BALANCE = "distributor_balance"
SUB_JOINED = "distributor_sub_joined"
COMMISSION_AVAILABLE = "commission_available"
DIGEST = "distributor_digest"


async def tell(session: AsyncSession, distributor_id: int, kind: str, payload: Mapping[str, object]) -> None:
    """One message to the distributor's chat, in the language it last used with the bot."""
    row = (
        await session.execute(
            select(Distributor.user_id, User.language)
            .outerjoin(User, User.id == Distributor.user_id)
            .where(Distributor.id == distributor_id)
        )
    ).first()
    if row is None:
        return
    outbox.enqueue(session, chat_id=int(row[0]), kind=kind, payload=dict(payload), language=row[1] or "zh")


async def allocation_changed(
    session: AsyncSession,
    channel: Channel,
    product: Product,
    allocation: Allocation,
    change: str,
    units: int,
    **extra: object,
) -> None:
    """A distributor is told what its allocation became (``change``: allocated | taken_back |
    shared | passed_in); other channels have no chat to tell."""
    if channel.kind != ChannelKind.DISTRIBUTOR:
        return
    holder = await session.scalar(select(Distributor.id).where(Distributor.channel_id == channel.id))
    if holder is None:
        return
    quota = allocation.mode == AllocationMode.QUOTA
    left = allocation.allocated - allocation.reserved - allocation.sold if quota else -1
    payload = {"change": change, "sku": product.sku, "name": product.name, "units": units, "left": left, **extra}
    await tell(session, int(holder), ALLOCATION, payload)
