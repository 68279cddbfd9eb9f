"""The customers' orders digest: each distributor is sent one summary of its own customers'
paid orders since its last digest (every ``QUANYI_DISTRIBUTOR_DIGEST_MINUTES``).

The durable marker is per order, not a timestamp: an order goes into a digest by inserting its
row in ``digested_orders`` (primary key: the order), so an order paid in a transaction that
committed late is still found by the next run (no gap), and two runners racing for it tell it
once (no repeat). Orders paid more than ``LOOKBACK`` ago are no longer news.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.distributors import notices
from quanyi.core.errors import NotFound
from quanyi.core.models import (
    Commission,
    CommissionStatus,
    DigestedOrder,
    Distributor,
    DistributorDigest,
    Order,
    OrderLine,
    utcnow,
)
from quanyi.core.platform.db import upsert

if TYPE_CHECKING:
    from quanyi.core.wiring import Wiring

LOOKBACK = timedelta(days=7)
SHOWN = 20  # order lines in the message; the count and totals cover them all
EARNED = (CommissionStatus.AWAITING, CommissionStatus.PENDING, CommissionStatus.AVAILABLE)


async def collect(session: AsyncSession, now: datetime | None = None) -> list[int]:
    """Put every customer order paid since the last digests into one new digest per distributor
    and queue its message; returns the new digests' ids."""
    now = now or utcnow()
    found = await session.execute(
        select(Order.id, Order.distributor_id)
        .join(Distributor, Distributor.id == Order.distributor_id)
        .where(
            Order.paid_at.is_not(None),
            Order.paid_at >= now - LOOKBACK,
            Order.user_id != Distributor.user_id,  # its own bulk purchases are not its customers'
            Distributor.active.is_(True),
            ~exists().where(DigestedOrder.order_id == Order.id),
        )
        .order_by(Order.distributor_id, Order.id)
    )
    per_distributor: dict[int, list[int]] = defaultdict(list)
    for order_id, distributor_id in found.all():
        per_distributor[int(distributor_id or 0)].append(int(order_id))
    made: list[int] = []
    for distributor_id, order_ids in per_distributor.items():
        digest = DistributorDigest(distributor_id=distributor_id, created_at=now)
        session.add(digest)
        await session.flush()
        claimed = await session.execute(
            upsert(session, DigestedOrder)
            .values([{"order_id": o, "digest_id": digest.id} for o in order_ids])
            .on_conflict_do_nothing(index_elements=[DigestedOrder.order_id])
            .returning(DigestedOrder.order_id)
        )
        if not claimed.all():
            # Another runner told them all first.
            await session.execute(delete(DistributorDigest).where(DistributorDigest.id == digest.id))
            continue
        await notices.tell(session, distributor_id, notices.DIGEST, {"digest_id": digest.id})
        made.append(digest.id)
    return made


async def send_due(core: Wiring, now: datetime | None = None) -> list[int]:
    """The scheduler's run: collect in one transaction, then wake the outbox sender."""
    async with core.db.transaction() as session:
        made = await collect(session, now)
    if made:
        core.outbox_wakeup.set()
    return made


@dataclass(frozen=True)
class DigestOrder:
    number: str
    paid_at: datetime
    status: str
    amount: int
    currency: str
    items: tuple[tuple[str, int], ...]  # (name, quantity)


@dataclass(frozen=True)
class Digest:
    """One digest as the distributor reads it: the orders (the first ``SHOWN``), how many there
    are, and what they add up to and earned it, per currency."""

    id: int
    count: int
    orders: tuple[DigestOrder, ...]
    totals: tuple[tuple[str, int], ...]  # (currency, amount paid)
    commission: tuple[tuple[str, int], ...]  # (currency, its commission on them)
    since: datetime | None  # the previous digest's time, None for its first


async def digest_view(session: AsyncSession, digest_id: int) -> Digest:
    digest = await session.get(DistributorDigest, digest_id)
    if digest is None:
        raise NotFound(f"no digest {digest_id}", key="err_distributors.no_digest", digest=digest_id)
    in_digest = select(DigestedOrder.order_id).where(DigestedOrder.digest_id == digest_id)
    orders = list(await session.scalars(select(Order).where(Order.id.in_(in_digest)).order_by(Order.paid_at, Order.id)))
    shown = orders[:SHOWN]
    lines: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for order_id, name, quantity in await session.execute(
        select(OrderLine.order_id, OrderLine.name, OrderLine.quantity)
        .where(OrderLine.order_id.in_([o.id for o in shown]))
        .order_by(OrderLine.order_id, OrderLine.line_no)
    ):
        lines[int(order_id)].append((str(name), int(quantity)))
    totals: dict[str, int] = defaultdict(int)
    for order in orders:
        totals[order.currency] += order.amount
    commission = (
        await session.execute(
            select(Commission.currency, func.sum(Commission.amount - Commission.clawed_back))
            .where(
                Commission.order_id.in_(in_digest),
                Commission.distributor_id == digest.distributor_id,
                Commission.status.in_(EARNED),
            )
            .group_by(Commission.currency)
        )
    ).all()
    since = await session.scalar(
        select(func.max(DistributorDigest.created_at)).where(
            DistributorDigest.distributor_id == digest.distributor_id, DistributorDigest.id < digest_id
        )
    )
    return Digest(
        id=digest_id,
        count=len(orders),
        orders=tuple(
            DigestOrder(o.number, o.paid_at or o.created_at, str(o.status), o.amount, o.currency, tuple(lines[o.id]))
            for o in shown
        ),
        totals=tuple(sorted(totals.items())),
        commission=tuple((str(c), int(a or 0)) for c, a in sorted(commission) if a),
        since=since,
    )
