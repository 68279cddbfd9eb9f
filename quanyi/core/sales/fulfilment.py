"""From a verified payment to codes in the outbox: the path that must never break.

``apply_payment`` does it for one event inside a caller's transaction. ``settle_batch``
does the common case for a whole batch with a handful of set-based statements and leaves
every unusual event (a late or second payment, a shortfall, a rejection) to
``apply_payment``. ``Fulfiller`` groups events that arrive together into such batches,
because a commit and each statement's round trip, not the work, are what cost.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.books import commissions, ledger
from quanyi.core.errors import CallbackRejected, QuanyiError
from quanyi.core.models import (
    CommissionStatus,
    Order,
    OrderLine,
    OrderStatus,
    Payment,
    Product,
    ProductKind,
    ProviderEvent,
    StockItem,
    StockStatus,
    utcnow,
)
from quanyi.core.payments.base import PaymentEvent
from quanyi.core.platform import audit, outbox
from quanyi.core.platform.crypto import KeyRing
from quanyi.core.platform.db import Database, rowcount
from quanyi.core.sales import manual, pay_buttons, recharge, redeem
from quanyi.core.stock import allocations as channels
from quanyi.core.stock.items import sell_reserved, sell_reserved_many, take_items, unsell

log = logging.getLogger(__name__)


class PaymentOutcome(enum.StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"  # paid, but stock ran out: the buyer is told, an operator sees it
    DUPLICATE = "duplicate"  # this event was recorded before; nothing changed
    # Money for an order that can no longer take it (expired, failed, or paid by another
    # transaction): recorded, the order unchanged, buyer and operators told.
    NEEDS_REVIEW = "needs_review"
    RECHARGING = "recharging"  # paid; the supplier is asked to credit the buyer's account
    MANUAL = "manual"  # paid; queued for an operator to fulfil by hand


async def apply_payment(
    session: AsyncSession,
    event: PaymentEvent,
    *,
    admin_ids: list[int] | None = None,
    keyring: KeyRing | None = None,
    fees: Mapping[str, ledger.Fee] | None = None,
) -> PaymentOutcome:
    """Apply one verified payment event. ``keyring`` is needed for orders of redemption links;
    ``fees`` (per method) are posted to the ledger with the payment."""
    admin_ids = admin_ids or []
    order = await session.scalar(select(Order).where(Order.number == event.order_number))
    if order is None:
        raise CallbackRejected("unknown order")
    if event.method != order.payment_method:
        raise CallbackRejected("order was not placed for this payment method")
    if event.currency != order.currency or event.amount != order.amount:
        raise CallbackRejected("amount does not match the order")

    if event.event_id is not None and not await first_sighting(session, event.method, event.event_id):
        return PaymentOutcome.DUPLICATE
    existing = await session.scalar(
        select(Payment).where(Payment.method == event.method, Payment.provider_txn_id == event.provider_txn_id)
    )
    if existing is not None:
        if existing.order_id != order.id:
            raise CallbackRejected("transaction already recorded for another order")
        return PaymentOutcome.DUPLICATE
    payment = Payment(**_payment_row(event, order.id, utcnow()))
    try:
        async with session.begin_nested():
            session.add(payment)
    except IntegrityError:
        # A concurrent transaction recorded the same event between our read and insert.
        return PaymentOutcome.DUPLICATE

    now = utcnow()
    paid = await session.execute(
        update(Order)
        .where(Order.id == order.id, Order.status == OrderStatus.PENDING)
        .values(status=OrderStatus.PAID, paid_at=now)
    )
    if rowcount(paid):
        await pay_buttons.take_off(session, [order.id])
        entry = _payment_entry(event, order.id, fees or {}, applied=True)
        await ledger.post(session, entry.ref, entry.kind, entry.legs, order_id=order.id)
        await channels.sell_units(session, order.id)
        await commissions.earn(session, order.id)
        products = await _line_products(session, order)
        reserved = await sell_reserved(session, order.id)
        card_units = sum(line.quantity for line in order.lines if products[line.id].kind == ProductKind.CARD_KEY)
        outcome = None
        if reserved < card_units:  # reserved items went missing (voided): refill or fail
            outcome = await _fill_from_pool(session, order, admin_ids, products)
        if outcome is None:
            outcome = await _fulfil_other_kinds(session, keyring, order, products, admin_ids)
        # Last: the audit head is locked after every row this payment touched.
        await audit.record_many(session, [_payment_audit(event, order.number, "payment.applied", str(outcome))])
        return outcome

    # Terminal states are terminal: money for an order that expired, failed or was already
    # paid by another transaction is kept on record, never silently used or dropped, and
    # an operator decides (refund, or deliver by hand).
    status = await session.scalar(select(Order.status).where(Order.id == order.id))
    payment.outcome = "needs_review"
    await session.flush()
    entry = _payment_entry(event, order.id, fees or {}, applied=False)
    await ledger.post(session, entry.ref, entry.kind, entry.legs, order_id=order.id)
    # Another transaction paid the order already: the buyer paid twice (told so, not that
    # delivery failed), and the operators are asked to give the second payment back.
    twice = await session.scalar(
        select(Payment.id).where(Payment.order_id == order.id, Payment.outcome == "applied").limit(1)
    )
    review: dict[str, object] = {"order_id": order.id, "payment_id": payment.id}
    if twice is not None:
        review["twice"] = True
    await outbox.enqueue_admins(session, admin_ids, "admin_payment_review", review)
    if order.chat_id is not None:
        outbox.enqueue(session, chat_id=order.chat_id, kind="payment_review", payload=review, language=order.language)
    await audit.record_many(session, [_payment_audit(event, order.number, "payment.review", f"order {status}")])
    log.warning("payment %s for order %s needs review: order is %s", event.provider_txn_id, order.number, status)
    return PaymentOutcome.NEEDS_REVIEW


def _payment_row(event: PaymentEvent, order_id: int, now: datetime) -> dict[str, Any]:
    """A payment applied to its order, as both paths record it (review sets its outcome after)."""
    return {
        "method": event.method,
        "provider_txn_id": event.provider_txn_id,
        "order_id": order_id,
        "amount": event.amount,
        "currency": event.currency,
        "outcome": "applied",
        "raw": json.dumps(dict(event.raw), sort_keys=True),
        "created_at": now,
    }


def _payment_entry(
    event: PaymentEvent, order_id: int, fees: Mapping[str, ledger.Fee], *, applied: bool
) -> ledger.Entry:
    """The journal entry of money in: revenue for an order it paid, suspense when kept for review."""
    fee = fees.get(event.method, ledger.Fee()).of(event.amount)
    return ledger.Entry(
        f"payment:{event.method}:{event.provider_txn_id}",
        "payment" if applied else "payment_review",
        ledger.payment_legs(event.method, event.amount, event.currency, fee, applied=applied),
        order_id=order_id,
    )


def _payment_audit(event: PaymentEvent, number: str, action: str, outcome: str) -> audit.Entry:
    return audit.Entry(
        actor=f"payment:{event.method}",
        front="core",
        action=action,
        object_type="order",
        object_id=number,
        new={"amount": event.amount, "currency": event.currency, "outcome": outcome},
    )


async def _line_products(session: AsyncSession, order: Order) -> dict[int, Product]:
    """Each line's product, by line id."""
    ids = {line.product_id for line in order.lines}
    by_id = {p.id: p for p in await session.scalars(select(Product).where(Product.id.in_(ids)))}
    return {line.id: by_id[line.product_id] for line in order.lines}


async def _fulfil_other_kinds(
    session: AsyncSession, keyring: KeyRing | None, order: Order, products: dict[int, Product], admin_ids: list[int]
) -> PaymentOutcome:
    """Card keys are sold by now; issue redemption links, record recharges to place, queue
    manual lines for the operators."""
    recharging = by_hand = False
    for line in order.lines:
        product = products[line.id]
        if product.kind == ProductKind.REDEEM_LINK:
            if keyring is None:
                raise RuntimeError("issuing redemption links needs the key ring")
            await redeem.issue(
                session, keyring, product=product, count=line.quantity, order_id=order.id, order_line_id=line.id
            )
        elif product.kind == ProductKind.DIRECT_RECHARGE:
            await recharge.start(session, order, line, product)
            recharging = True
        elif product.kind == ProductKind.MANUAL:
            await manual.queue(session, order, line, product, admin_ids)
            by_hand = True
    if by_hand:
        # Stays paid until an operator marks it done (delivered) or failed (refunded).
        return PaymentOutcome.MANUAL
    if recharging:
        # Stays paid until the supplier answers; the buyer hears of success or failure then.
        return PaymentOutcome.RECHARGING
    return await _deliver(session, order)


async def _fill_from_pool(
    session: AsyncSession, order: Order, admin_ids: list[int], products: dict[int, Product]
) -> PaymentOutcome | None:
    """Sell each card-key line what it still lacks from the pool, all lines or none; the
    order fails (and this returns FAILED) when the pool is short."""
    have = dict(
        (
            await session.execute(
                select(StockItem.order_line_id, func.count())
                .where(StockItem.order_id == order.id, StockItem.status == StockStatus.SOLD)
                .group_by(StockItem.order_line_id)
            )
        ).all()
    )
    try:
        async with session.begin_nested():
            for line in order.lines:
                if products[line.id].kind != ProductKind.CARD_KEY:
                    continue
                need = line.quantity - have.get(line.id, 0)
                if need <= 0:
                    continue
                taken = await take_items(
                    session,
                    product_id=line.product_id,
                    order_id=order.id,
                    order_line_id=line.id,
                    quantity=need,
                    status=StockStatus.SOLD,
                )
                if len(taken) < need:
                    raise _ShortStock()
    except _ShortStock:
        await session.execute(
            update(Order)
            .where(Order.id == order.id, Order.status == OrderStatus.PAID)
            .values(status=OrderStatus.FAILED, failure_reason="out_of_stock", closed_at=utcnow())
        )
        # Items sold before the shortfall was found went back with the savepoint; any
        # reserved-then-sold items of this order are returned to the pool too.
        await unsell(session, order.id)
        if order.chat_id is not None:
            outbox.enqueue(
                session,
                chat_id=order.chat_id,
                kind="order_failed",
                payload={"order_id": order.id},
                language=order.language,
            )
        await channels.release_units(session, order.id, sold=True)
        # Earned at payment, void now: the ledger takes the shares back.
        await commissions.claw_back(session, order.id, ref=f"commission:{order.id}:void", status=CommissionStatus.VOID)
        await outbox.enqueue_admins(session, admin_ids, "admin_order_failed", {"order_id": order.id})
        log.warning("order %s paid but out of stock: failed", order.number)
        return PaymentOutcome.FAILED
    return None


async def _deliver(session: AsyncSession, order: Order) -> PaymentOutcome:
    await session.execute(
        update(Order)
        .where(Order.id == order.id, Order.status == OrderStatus.PAID)
        .values(status=OrderStatus.DELIVERED, delivered_at=utcnow())
    )
    if order.chat_id is not None:
        outbox.enqueue(
            session, chat_id=order.chat_id, kind="delivery", payload={"order_id": order.id}, language=order.language
        )
    return PaymentOutcome.DELIVERED


# settle_batch's statements, built once: building SQLAlchemy statements per batch cost more
# than running them. Lists travel as expanding bind parameters.
_UNITS = (
    select(func.coalesce(func.sum(OrderLine.quantity), 0))
    .where(OrderLine.order_id == Order.id)
    .scalar_subquery()
    .label("units")
)
_ORDERS = select(
    Order.id,
    Order.number,
    Order.status,
    Order.amount,
    Order.currency,
    Order.payment_method,
    Order.chat_id,
    Order.language,
    _UNITS,
).where(Order.number.in_(bindparam("numbers", expanding=True)))
_RECORDED = select(Payment.method, Payment.provider_txn_id).where(
    Payment.provider_txn_id.in_(bindparam("txns", expanding=True))
)
_RESERVED = (
    select(StockItem.order_id, func.count())
    .where(StockItem.order_id.in_(bindparam("ids", expanding=True)), StockItem.status == StockStatus.RESERVED)
    .group_by(StockItem.order_id)
)
_SETTLE = (
    update(Order)
    .where(Order.id.in_(bindparam("ids", expanding=True)), Order.status == OrderStatus.PENDING)
    .values(status=OrderStatus.DELIVERED, paid_at=bindparam("now"), delivered_at=bindparam("now"))
    .returning(Order.id)
)
_INSERT_PAYMENTS = insert(Payment)


def settle_batch(
    conn: Connection, events: list[PaymentEvent], fees: Mapping[str, ledger.Fee] | None = None
) -> tuple[list[PaymentOutcome | None], list[int]]:
    """The common case for a whole batch, in a dozen set-based statements on one connection:
    the owners' set-based steps (``sell_reserved_many``, ``sell_units_many``, ``earn_many``,
    ``post_many``, ``enqueue_many``, ``record_many_sync``), which their one-by-one forms share.

    Settles every event that is a first payment, with the right amount, for a pending
    order whose reserved items are all there. Returns an outcome per settled event and
    the indexes of the rest, which ``apply_payment`` handles one by one (rejections,
    duplicates, late or second payments, missing items, a second event for an order or
    transaction already in this batch). Synchronous so that on SQLite the whole batch
    runs in one hop to a worker thread (see ``Database.run_write``).
    """
    results: list[PaymentOutcome | None] = [None] * len(events)
    orders = {
        row.number: row for row in conn.execute(_ORDERS, {"numbers": list({e.order_number for e in events})}).all()
    }
    recorded = {
        (method, txn)
        for method, txn in conn.execute(_RECORDED, {"txns": list({e.provider_txn_id for e in events})}).all()
    }
    reserved = dict(conn.execute(_RESERVED, {"ids": [o.id for o in orders.values()]}).all())

    fast: dict[int, int] = {}  # order id -> index of its event
    taken_keys: set[tuple[str, str]] = set()
    slow: list[int] = []
    for index, event in enumerate(events):
        key = (event.method, event.provider_txn_id)
        order = orders.get(event.order_number)
        if (
            order is None
            or event.event_id is not None  # webhook event ids are recorded on the careful path
            or key in recorded
            or key in taken_keys
            or order.id in fast
            or order.status != OrderStatus.PENDING
            or reserved.get(order.id, 0) < order.units
            or (event.method, event.currency, event.amount) != (order.payment_method, order.currency, order.amount)
        ):
            slow.append(index)
            continue
        fast[order.id] = index
        taken_keys.add(key)
    if not fast:
        return results, slow

    now = utcnow()
    settled = set(conn.execute(_SETTLE, {"ids": list(fast), "now": now}).scalars())
    slow.extend(fast[order_id] for order_id in fast if order_id not in settled)
    if not settled:
        return results, sorted(slow)
    paid = sorted(settled)
    by_id = {row.id: row for row in orders.values()}
    # Each step from its owner, the same rule ``apply_payment`` runs for one order.
    sold = sell_reserved_many(conn, paid, now)
    if any(sold[oid] != by_id[oid].units for oid in paid):
        # The pending orders are locked by the UPDATE above and only their own transitions
        # touch their reserved items, so this cannot happen; if it does, nothing commits.
        raise RuntimeError("reserved items changed under a settling batch")
    channels.sell_units_many(conn, paid, now)
    pay_buttons.take_off_many(conn, paid, now)
    payments = [_payment_entry(events[fast[oid]], oid, fees or {}, applied=True) for oid in paid]
    commissions.earn_many(conn, paid, now, along=payments)
    conn.execute(_INSERT_PAYMENTS, [_payment_row(events[fast[oid]], oid, now) for oid in paid])
    outbox.enqueue_many(
        conn,
        (
            outbox.Message(chat_id, "delivery", {"order_id": oid}, by_id[oid].language)
            for oid in paid
            if (chat_id := by_id[oid].chat_id) is not None
        ),
        now,
    )
    audit.record_many_sync(
        conn,
        [
            _payment_audit(events[fast[oid]], by_id[oid].number, "payment.applied", str(PaymentOutcome.DELIVERED))
            for oid in paid
        ],
    )
    for oid in paid:
        results[fast[oid]] = PaymentOutcome.DELIVERED
    return results, sorted(slow)


async def first_sighting(session: AsyncSession, method: str, event_id: str) -> bool:
    """Record a provider's webhook event id; False when it was recorded before (a replay)."""
    try:
        async with session.begin_nested():
            session.add(ProviderEvent(method=method, event_id=event_id[:128]))
    except IntegrityError:
        return False
    return True


class _ShortStock(Exception):
    pass


class Fulfiller:
    """Applies payment events, batching those that arrive together into one transaction."""

    def __init__(
        self,
        db: Database,
        *,
        admin_ids: list[int] | None = None,
        keyring: KeyRing | None = None,
        max_batch: int = 64,
        workers: int | None = None,
        on_commit: Callable[[], None] | None = None,
        fees: Mapping[str, ledger.Fee] | None = None,
    ) -> None:
        self.db = db
        self.fees = dict(fees or {})
        self.admin_ids = admin_ids or []
        self.keyring = keyring
        self.max_batch = max_batch
        # SQLite has one writer: more workers would only queue on its lock.
        self.workers = workers or (1 if db.is_sqlite else 4)
        self.on_commit = on_commit
        self._queue: list[tuple[PaymentEvent, asyncio.Future[PaymentOutcome]]] = []
        self._running = 0

    async def submit(self, event: PaymentEvent) -> PaymentOutcome:
        """Apply one event; raises ``CallbackRejected`` when it must change nothing."""
        future: asyncio.Future[PaymentOutcome] = asyncio.get_running_loop().create_future()
        self._queue.append((event, future))
        if self._running < self.workers:
            self._running += 1
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                await self._run_batch(batch)
        finally:
            self._running -= 1

    async def _run_batch(self, batch: list[tuple[PaymentEvent, asyncio.Future[PaymentOutcome]]]) -> None:
        events = [event for event, _ in batch]
        results: list[Any]
        try:
            settled, slow = await self.db.run_write(lambda conn: settle_batch(conn, events, self.fees))
        except Exception as exc:
            if len(batch) > 1:
                # One event broke the shared transaction (a deadlock, a lost connection):
                # give every event its own transaction so the others still go through.
                for item in batch:
                    await self._run_batch([item])
                return
            log.exception("payment event for order %s could not be applied", events[0].order_number)
            settled, slow = [exc], []  # type: ignore[list-item]
        results = list(settled)
        # The settled events are committed; only the rest go the careful way, and a failure
        # there never sends a settled event round again.
        for index, outcome in (await self._apply_each(events, slow)).items():
            results[index] = outcome
        if self.on_commit is not None:
            self.on_commit()
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _apply_each(self, events: list[PaymentEvent], indexes: list[int]) -> dict[int, Any]:
        """``apply_payment`` for each event in one transaction, one savepoint each; if that
        transaction fails, each event gets a transaction of its own."""
        if not indexes:
            return {}
        outcomes: dict[int, Any] = {}
        try:
            async with self.db.transaction() as session:
                for index in indexes:
                    try:
                        async with session.begin_nested():
                            outcomes[index] = await apply_payment(
                                session, events[index], admin_ids=self.admin_ids, keyring=self.keyring, fees=self.fees
                            )
                    except QuanyiError as exc:
                        outcomes[index] = exc
        except Exception as exc:
            if len(indexes) > 1:
                for index in indexes:
                    outcomes.update(await self._apply_each(events, [index]))
                return outcomes
            log.exception("payment event for order %s could not be applied", events[indexes[0]].order_number)
            return {indexes[0]: exc}
        return outcomes
