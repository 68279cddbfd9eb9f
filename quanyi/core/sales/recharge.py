"""Direct recharge: one supplier order per paid ``direct_recharge`` line.

``start`` writes the recharge in the payment's transaction (state ``pending``); a worker
places it with the supplier, callbacks and re-queries move it on, and a failure is
refunded or replaced by a fallback card key.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.errors import (
    ConfigError,
    InvalidInput,
    NotFound,
    QuanyiError,
    RefundNotSupported,
    SupplierError,
    SupplierOrderUnknown,
)
from quanyi.core.models import (
    Order,
    OrderLine,
    OrderStatus,
    Product,
    ProductKind,
    Recharge,
    RechargeStatus,
    StockStatus,
    utcnow,
)
from quanyi.core.platform import outbox
from quanyi.core.platform.config import Settings
from quanyi.core.platform.db import Database, locked_pick, rowcount
from quanyi.core.sales.orders import new_order_number
from quanyi.core.stock import allocations as channels
from quanyi.core.stock.items import take_items
from quanyi.core.suppliers.base import TERMINAL, RechargeRequest, RechargeState, SupplierResult, callback_url

if TYPE_CHECKING:
    from quanyi.core.wiring import Wiring

log = logging.getLogger(__name__)


def supplier_order_number(order: Order, line: OrderLine) -> str:
    """Our order number at the supplier: fixed at payment, reused on every retry."""
    return f"{order.number}-{line.line_no}"


async def start(session: AsyncSession, order: Order, line: OrderLine, product: Product) -> Recharge:
    """Record the recharge a paid line needs; the worker calls the supplier after commit."""
    now = utcnow()
    recharge = Recharge(
        order_id=order.id,
        order_line_id=line.id,
        supplier=product.supplier or "generic",
        supplier_order_number=supplier_order_number(order, line),
        product_code=product.supplier_product_code or product.sku,
        account=line.account or "",
        amount=(line.list_price if line.list_price is not None else line.unit_price) * line.quantity,
        currency=product.currency,
        status=RechargeStatus.PENDING,
        attempts=0,
        queries=0,
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
    )
    session.add(recharge)
    await session.flush()
    return recharge


# --- after start(): placing, reports, failures -------------------------------------------------
#
# Every state change is a conditional UPDATE from the states it may leave, so a callback, a
# worker and the re-query job racing on one recharge apply each outcome once. Suppliers are
# called outside any transaction, by whoever holds the recharge's lease (claimed_until).

OPEN = (RechargeStatus.PENDING, RechargeStatus.PROCESSING)
BATCH = 20


class Applied(enum.StrEnum):
    UNCHANGED = "unchanged"  # a repeat, a stale report, or the recharge was decided before
    PROCESSING = "processing"
    SUCCESS = "success"
    FAILED = "failed"  # failed; the refund (or operator flag) follows after commit
    FALLBACK = "fallback"  # failed; a card key of the fallback product was delivered instead


class Resolution(enum.StrEnum):
    REFUNDED = "refunded"
    REFUND_PENDING = "refund_pending"  # the method cannot refund or the refund failed: an operator acts
    FALLBACK = "fallback"


@dataclass(frozen=True)
class Due:
    """A recharge to place, read under its lease."""

    id: int
    supplier: str
    order_number: str
    product_code: str
    account: str
    amount: int
    currency: str
    attempts: int


_DUE_COLUMNS = (
    Recharge.id,
    Recharge.supplier,
    Recharge.supplier_order_number,
    Recharge.product_code,
    Recharge.account,
    Recharge.amount,
    Recharge.currency,
    Recharge.attempts,
)


def _due(row: Any) -> Due:
    return Due(
        row.id,
        row.supplier,
        row.supplier_order_number,
        row.product_code,
        row.account,
        row.amount,
        row.currency,
        row.attempts,
    )


def lease(settings: Settings) -> timedelta:
    # Longer than one supplier call; a lease that runs out only lets another worker place the
    # same order number again, which the supplier dedupes.
    return timedelta(seconds=max(60.0, settings.supplier_timeout_seconds * 3))


def backoff(settings: Settings, attempts: int) -> timedelta:
    return timedelta(seconds=min(settings.recharge_retry_seconds * 2 ** max(attempts - 1, 0), 3600.0))


def _unclaimed(now: datetime) -> ColumnElement[bool]:
    return or_(Recharge.claimed_until.is_(None), Recharge.claimed_until < now)


async def claim_due(db: Database, *, limit: int, lease: timedelta, now: datetime | None = None) -> list[Due]:
    """Take the lease on pending recharges whose next placement is due."""
    now = now or utcnow()
    async with db.transaction() as session:
        pick = locked_pick(
            select(Recharge.id)
            .where(Recharge.status == RechargeStatus.PENDING, Recharge.next_attempt_at <= now, _unclaimed(now))
            .order_by(Recharge.id)
            .limit(limit)
        )
        result = await session.execute(
            update(Recharge)
            .where(Recharge.id == pick.c.id)
            .values(claimed_until=now + lease)
            .returning(*_DUE_COLUMNS)
            .execution_options(synchronize_session=False)
        )
        return sorted((_due(row) for row in result.all()), key=lambda d: d.id)


async def place(core: Wiring, due: Due, *, now: datetime | None = None) -> Applied:
    """Place one claimed recharge with its supplier and record the answer."""
    try:
        supplier = core.suppliers.get(due.supplier)
        request = RechargeRequest(
            order_number=due.order_number,
            product_code=due.product_code,
            account=due.account,
            amount=due.amount,
            currency=due.currency,
            callback_url=callback_url(core.settings.public_url, due.supplier),
        )
    except InvalidInput as exc:  # nothing a retry could change: the supplier was never asked
        log.warning("recharge %s cannot be placed: %s", due.order_number, exc.message)
        return await report(core, due.id, "failed", reason=exc.message)
    except ConfigError as exc:  # the supplier may be configured again before we give up
        return await _placement_failed(core, due, exc.message, now=now)
    try:
        result = await supplier.place(request)
    except SupplierError as exc:
        return await _placement_failed(core, due, exc.message, now=now)
    log.info("recharge %s placed with %s: %s", due.order_number, due.supplier, result.state)
    return await report(core, due.id, result.state, reason=result.reason, supplier_order_id=result.supplier_order_id)


async def _placement_failed(core: Wiring, due: Due, error: str, *, now: datetime | None) -> Applied:
    now = now or utcnow()
    attempts = due.attempts + 1
    settings = core.settings
    if attempts >= settings.recharge_max_attempts:
        # The supplier may hold the order though no answer reached us: ask before failing it.
        try:
            result = await core.suppliers.get(due.supplier).query(due.order_number)
        except (SupplierError, ConfigError):
            log.warning("recharge %s: %d placements failed (%s): failed", due.order_number, attempts, error[:120])
            return await report(core, due.id, "failed", reason="supplier unreachable", attempts=attempts)
        return await report(
            core, due.id, result.state, reason=result.reason, supplier_order_id=result.supplier_order_id
        )
    log.info("recharge %s: placement %d failed (%s); retrying", due.order_number, attempts, error[:120])
    async with core.db.transaction() as session:
        await session.execute(
            update(Recharge)
            .where(Recharge.id == due.id, Recharge.status == RechargeStatus.PENDING)
            .values(
                attempts=attempts,
                next_attempt_at=now + backoff(settings, attempts),
                claimed_until=None,
                failure_reason=error[:255],
                updated_at=now,
            )
        )
    return Applied.UNCHANGED


async def apply_callback(core: Wiring, supplier: str, result: SupplierResult) -> Applied:
    """A verified callback. Raises ``NotFound`` for an order number we never placed."""
    async with core.db.read() as session:
        recharge_id = await session.scalar(
            select(Recharge.id).where(
                Recharge.supplier == supplier, Recharge.supplier_order_number == result.order_number
            )
        )
    if recharge_id is None:
        raise NotFound(
            f"no recharge {result.order_number} at {supplier}",
            key="err_sales.no_recharge",
            order_number=result.order_number,
            supplier=supplier,
        )
    return await report(
        core, recharge_id, result.state, reason=result.reason, supplier_order_id=result.supplier_order_id
    )


async def report(
    core: Wiring,
    recharge_id: int,
    state: RechargeState,
    *,
    reason: str | None = None,
    supplier_order_id: str | None = None,
    attempts: int | None = None,
) -> Applied:
    """Record what the supplier (or our own give-up) says, with its outcome, in one transaction.

    ``pending`` takes any report: a callback may arrive for an order we placed but crashed
    before recording. A terminal state never changes (the ``advance`` rule), so repeats and
    a late ``processing`` after ``success`` change nothing.
    """
    now = utcnow()
    values: dict[str, Any] = {"updated_at": now, "claimed_until": None}
    if supplier_order_id is not None:
        values["supplier_order_id"] = supplier_order_id[:128]
    if attempts is not None:
        values["attempts"] = attempts
    if state == "processing":
        values["status"] = RechargeStatus.PROCESSING
    elif state == "success":
        values.update(status=RechargeStatus.SUCCESS, finished_at=now, failure_reason=None)
    else:
        values.update(status=RechargeStatus.FAILED, finished_at=now, failure_reason=(reason or "failed")[:255])
    async with core.db.transaction() as session:
        changed = await session.execute(
            update(Recharge).where(Recharge.id == recharge_id, Recharge.status.in_(OPEN)).values(**values)
        )
        recharge = await session.get(Recharge, recharge_id, populate_existing=True)
        assert recharge is not None
        if not rowcount(changed):
            if state in TERMINAL and recharge.status != state:
                # Money may be at stake (we failed it, the supplier credited it): say so loudly.
                log.warning(
                    "recharge %s is %s but %s reports %s: ignored",
                    recharge.supplier_order_number,
                    recharge.status,
                    recharge.supplier,
                    state,
                )
                if state == "success":
                    await _late_success(core, session, recharge)
            return Applied.UNCHANGED
        if state == "processing":
            return Applied.PROCESSING
        order = await session.get(Order, recharge.order_id)
        assert order is not None
        if state == "success":
            await _succeeded(session, order)
            outcome = Applied.SUCCESS
        elif await _fallback(session, recharge, order):
            outcome = Applied.FALLBACK
        else:
            outcome = Applied.FAILED
    log.info("recharge %s: %s", recharge.supplier_order_number, outcome)
    core.outbox_wakeup.set()
    return outcome


async def _succeeded(session: AsyncSession, order: Order) -> None:
    open_left = await session.scalar(
        select(func.count()).where(Recharge.order_id == order.id, Recharge.status != RechargeStatus.SUCCESS)
    )
    if order.chat_id is not None:
        _tell(session, order, "recharge_success", {"order_id": order.id})
    if open_left:
        return
    if not await _deliver_rest(session, order):
        await session.execute(
            update(Order)
            .where(Order.id == order.id, Order.status == OrderStatus.PAID)
            .values(status=OrderStatus.DELIVERED, delivered_at=utcnow())
        )


async def _deliver_rest(session: AsyncSession, order: Order) -> bool:
    """An order with card keys or links beside its recharge (a bundle) held them back until
    the recharge was done, whatever its outcome: deliver them now. False when it has none."""
    recharged = set(await session.scalars(select(Recharge.order_line_id).where(Recharge.order_id == order.id)))
    if all(line.id in recharged for line in order.lines):
        return False
    delivered = await session.execute(
        update(Order)
        .where(Order.id == order.id, Order.status == OrderStatus.PAID)
        .values(status=OrderStatus.DELIVERED, delivered_at=utcnow())
    )
    if rowcount(delivered) and order.chat_id is not None:
        _tell(session, order, "delivery", {"order_id": order.id})
    return True


async def _fallback(session: AsyncSession, recharge: Recharge, order: Order) -> bool:
    """Deliver a card key of the line's fallback product, as a new paid order of amount 0 for
    the same buyer; False (nothing changed) when there is no fallback or no key to spare."""
    line = await session.get(OrderLine, recharge.order_line_id)
    assert line is not None
    product = await session.get(Product, line.product_id)
    if product is None or not product.fallback_sku:
        return False
    spare = await session.scalar(
        select(Product).where(
            Product.sku == product.fallback_sku, Product.kind == ProductKind.CARD_KEY, Product.active.is_(True)
        )
    )
    # Keys that a channel's quota holds are not ours to give away.
    if spare is None or await channels.unallocated(session, spare.id) < 1:
        return False
    now = utcnow()
    try:
        async with session.begin_nested():
            replacement = Order(
                number=new_order_number(now),
                user_id=order.user_id,
                chat_id=order.chat_id,
                language=order.language,
                channel=order.channel,
                status=OrderStatus.DELIVERED,
                currency=spare.currency,
                list_amount=0,
                discount_amount=0,
                amount=0,
                payment_method="fallback",
                payment_option="",
                created_at=now,
                expires_at=now,
                paid_at=now,
                delivered_at=now,
                # One replacement per recharge, however often its failure is reported.
                idempotency_key=f"recharge-fallback:{recharge.id}",
            )
            session.add(replacement)
            await session.flush()
            spare_line = OrderLine(
                order_id=replacement.id,
                line_no=1,
                product_id=spare.id,
                sku=spare.sku,
                name=spare.name,
                quantity=1,
                unit_price=0,
                amount=0,
                list_price=0,
            )
            session.add(spare_line)
            await session.flush()
            taken = await take_items(
                session,
                product_id=spare.id,
                order_id=replacement.id,
                order_line_id=spare_line.id,
                quantity=1,
                status=StockStatus.SOLD,
            )
            if not taken:
                raise _NoSpare()
    except (_NoSpare, IntegrityError):
        return False
    await session.execute(update(Recharge).where(Recharge.id == recharge.id).values(resolution=Resolution.FALLBACK))
    # The buyer has what stands in for the recharge: the original order is done.
    if not await _deliver_rest(session, order):
        await session.execute(
            update(Order)
            .where(Order.id == order.id, Order.status == OrderStatus.PAID)
            .values(status=OrderStatus.DELIVERED, delivered_at=now)
        )
    if order.chat_id is not None:
        _tell(session, replacement, "delivery", {"order_id": replacement.id})
        _tell(
            session,
            order,
            "recharge_failed",
            {"order_id": order.id, "resolution": Resolution.FALLBACK.value, "fallback_order_id": replacement.id},
        )
    log.warning("recharge %s failed: delivered %s instead", recharge.supplier_order_number, spare.sku)
    return True


class _NoSpare(Exception):
    pass


async def resolve_failures(core: Wiring, *, now: datetime | None = None, limit: int = BATCH) -> list[str]:
    """Refund failed recharges not yet resolved (or flag them for an operator); returns their numbers.

    Runs after the failure's commit, so a crash in between only delays the refund: the
    failure stays unresolved and the next run finds it. A refund is never made twice
    (``refund_order`` records one per line).
    """
    now = now or utcnow()
    async with core.db.transaction() as session:
        pick = locked_pick(
            select(Recharge.id)
            .where(Recharge.status == RechargeStatus.FAILED, Recharge.resolution.is_(None), _unclaimed(now))
            .order_by(Recharge.id)
            .limit(limit)
        )
        claimed = (
            await session.execute(
                update(Recharge)
                .where(Recharge.id == pick.c.id)
                .values(claimed_until=now + timedelta(minutes=5))
                .returning(Recharge.id, Recharge.order_id, Recharge.order_line_id, Recharge.supplier_order_number)
                .execution_options(synchronize_session=False)
            )
        ).all()
        targets = []
        for row in sorted(claimed, key=lambda r: r.id):
            order_number = await session.scalar(select(Order.number).where(Order.id == row.order_id))
            line_no = await session.scalar(select(OrderLine.line_no).where(OrderLine.id == row.order_line_id))
            targets.append((row.id, row.order_id, str(order_number), int(line_no or 0), row.supplier_order_number))
    resolved = []
    for recharge_id, order_id, order_number, line_no, number in targets:
        await _refund(core, recharge_id, order_id, order_number, line_no, number)
        resolved.append(number)
    return resolved


async def _refund(core: Wiring, recharge_id: int, order_id: int, order_number: str, line_no: int, number: str) -> None:
    from quanyi.core.sales.refund_notices import tell_refunded
    from quanyi.core.sales.refunds import refund_order

    refunded: tuple[int, str] | None = None
    try:
        # The buyer hears that the recharge failed first, then that it was refunded (below).
        done = await refund_order(
            core, order_number, line_no=line_no, reason="recharge failed", actor="system", tell_buyer=False
        )
        refunded = (done.amount, done.currency) if done.amount > 0 else None
        resolution = Resolution.REFUNDED
    except RefundNotSupported:
        resolution = Resolution.REFUND_PENDING
    except QuanyiError as exc:  # RefundFailed (recorded, to retry), or the order cannot be refunded
        log.warning("recharge %s: refund failed: %s", number, exc.message[:120])
        resolution = Resolution.REFUND_PENDING
    async with core.db.transaction() as session:
        settled = await session.execute(
            update(Recharge)
            .where(Recharge.id == recharge_id, Recharge.resolution.is_(None))
            .values(resolution=resolution, claimed_until=None)
        )
        if not rowcount(settled):
            return
        order = await session.get(Order, order_id)
        assert order is not None
        # A bundle's other parts were paid for and are not refunded: they go out now.
        rest = await _deliver_rest(session, order)
        if resolution == Resolution.REFUND_PENDING and rest:
            await outbox.enqueue_admins(
                session, core.settings.admin_id_list, "admin_recharge_failed", {"order_id": order_id}
            )
        elif resolution == Resolution.REFUND_PENDING:
            await session.execute(
                update(Order)
                .where(Order.id == order_id, Order.status == OrderStatus.PAID)
                .values(status=OrderStatus.FAILED, failure_reason="recharge_failed", closed_at=utcnow())
            )
            await outbox.enqueue_admins(
                session, core.settings.admin_id_list, "admin_recharge_failed", {"order_id": order_id}
            )
        elif not rest:
            # Refunded whole: say why it ended (a partner's webhook tells "failed", then "refunded").
            await session.execute(
                update(Order)
                .where(Order.id == order_id, Order.failure_reason.is_(None))
                .values(failure_reason="recharge_failed")
            )
        if order.chat_id is not None:
            _tell(session, order, "recharge_failed", {"order_id": order_id, "resolution": resolution.value})
            if refunded is not None:
                await tell_refunded(session, order, *refunded)
    log.warning("recharge %s failed: %s", number, resolution)
    core.outbox_wakeup.set()


def _tell(session: AsyncSession, order: Order, kind: str, payload: dict[str, object]) -> None:
    if order.chat_id is None:  # a partner's order: its webhook tells it
        return
    outbox.enqueue(session, chat_id=order.chat_id, kind=kind, payload=payload, language=order.language)


# --- re-query ----------------------------------------------------------------------------------


async def requery(core: Wiring, *, now: datetime | None = None, limit: int = 100) -> dict[str, Applied]:
    """Ask suppliers about recharges that went quiet: ``processing`` ones, and ``pending`` ones
    whose placement failed. One the supplier never received is placed again (same number);
    one still processing past the give-up limit is failed ("timed out")."""
    now = now or utcnow()
    settings = core.settings
    quiet = now - timedelta(seconds=settings.recharge_query_after_seconds)
    give_up = timedelta(minutes=settings.recharge_give_up_minutes)
    async with core.db.transaction() as session:
        pick = locked_pick(
            select(Recharge.id)
            .where(
                or_(
                    Recharge.status == RechargeStatus.PROCESSING,
                    and_(Recharge.status == RechargeStatus.PENDING, Recharge.attempts > 0),
                ),
                Recharge.updated_at < quiet,
                _unclaimed(now),
            )
            .order_by(Recharge.id)
            .limit(limit)
        )
        rows = (
            await session.execute(
                update(Recharge)
                .where(Recharge.id == pick.c.id)
                .values(claimed_until=now + lease(settings), queries=Recharge.queries + 1)
                .returning(*_DUE_COLUMNS, Recharge.created_at)
                .execution_options(synchronize_session=False)
            )
        ).all()
    outcomes: dict[str, Applied] = {}
    for row in sorted(rows, key=lambda r: r.id):
        due = _due(row)
        expired = now - row.created_at >= give_up
        try:
            result = await core.suppliers.get(due.supplier).query(due.order_number)
        except SupplierOrderUnknown:
            # Our placement never reached it: placing now is safe, under the same number.
            outcomes[due.order_number] = await place(core, due, now=now)
            continue
        except (SupplierError, ConfigError) as exc:
            log.info("recharge %s: query failed (%s)", due.order_number, exc.message[:120])
            if expired:
                outcomes[due.order_number] = await report(core, due.id, "failed", reason="timed out")
            else:
                await _release(core, due.id, now)
                outcomes[due.order_number] = Applied.UNCHANGED
            continue
        if result.state == "processing" and expired:
            outcomes[due.order_number] = await report(
                core, due.id, "failed", reason="timed out", supplier_order_id=result.supplier_order_id
            )
        else:
            outcomes[due.order_number] = await report(
                core, due.id, result.state, reason=result.reason, supplier_order_id=result.supplier_order_id
            )
    return outcomes


async def _release(core: Wiring, recharge_id: int, now: datetime) -> None:
    async with core.db.transaction() as session:
        await session.execute(
            update(Recharge).where(Recharge.id == recharge_id).values(claimed_until=None, updated_at=now)
        )


# --- the worker --------------------------------------------------------------------------------


class RechargeWorker:
    """Places due recharges and resolves failed ones until stopped; runs beside the outbox sender."""

    def __init__(self, core: Wiring) -> None:
        self.core = core
        self._stop = asyncio.Event()

    async def run_once(self, *, now: datetime | None = None) -> int:
        """One pass; returns how many recharges it placed or resolved."""
        due = await claim_due(self.core.db, limit=BATCH, lease=lease(self.core.settings), now=now)
        for item in due:
            if self._stop.is_set():
                break  # unplaced claims run out and are picked up again
            await place(self.core, item, now=now)
        resolved = await resolve_failures(self.core, now=now)
        return len(due) + len(resolved)

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = await self.run_once()
            except Exception:  # a database hiccup must not end the worker
                log.exception("recharge worker pass failed")
                busy = 0
            if busy:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.core.settings.recharge_poll_seconds)

    def stop(self) -> None:
        self._stop.set()


LATE_SUCCESS = " | the supplier reported success later"


async def _late_success(core: Wiring, session: AsyncSession, recharge: Recharge) -> None:
    """A recharge we failed (and refunded or replaced) that the supplier credited after all:
    the buyer may have both. Operators are told once, whatever the supplier repeats."""
    marked = await session.execute(
        update(Recharge)
        .where(Recharge.id == recharge.id, ~func.coalesce(Recharge.failure_reason, "").contains(LATE_SUCCESS.strip()))
        .values(failure_reason=func.substr(func.coalesce(Recharge.failure_reason, "failed"), 1, 200) + LATE_SUCCESS)
    )
    if rowcount(marked):
        await outbox.enqueue_admins(
            session, core.settings.admin_id_list, "admin_recharge_late_success", {"order_id": recharge.order_id}
        )
