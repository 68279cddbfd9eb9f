"""Manual fulfilment (代充): a paid ``manual`` line waits in the operators' queue until one of
them takes it and marks it done (the order is delivered) or failed (the order is refunded); one
not done by the product's deadline is refunded by the scheduler.

``queue`` runs in the payment's transaction. Every later move is a conditional UPDATE on the
task's state, so a task is taken once however many operators tap at the same moment, and a
done, a failure and the deadline never both apply. A failed or expired task is refunded after
its commit, under a claim (``claimed_until``); a crash in between leaves it to ``resolve_due``.
"""

from __future__ import annotations

import enum
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.catalog.products import DEFAULT_DEADLINE_MINUTES
from quanyi.core.errors import InvalidInput, NotFound, QuanyiError, RefundNotSupported
from quanyi.core.models import (
    ManualStatus,
    ManualTask,
    Order,
    OrderLine,
    OrderStatus,
    Product,
    utcnow,
)
from quanyi.core.platform import audit, outbox
from quanyi.core.platform.db import locked_pick, rowcount

if TYPE_CHECKING:
    from quanyi.core.wiring import Wiring

log = logging.getLogger(__name__)
OPEN = (ManualStatus.QUEUED, ManualStatus.TAKEN)
CLAIM = timedelta(minutes=5)  # longer than a refund's provider call
BATCH = 50
NOTE_LIMIT = 1000
REASON_LIMIT = 200
DEADLINE_REASON = "deadline"  # the reason an expired task carries


class Resolution(enum.StrEnum):
    REFUNDED = "refunded"
    REFUND_PENDING = "refund_pending"  # the method cannot refund or the refund failed: an operator acts


class ManualTaskClosed(QuanyiError):
    """The task is not (or no longer) this operator's to act on: taken by another (details:
    ``status``, ``taken_by``), done, failed or past its deadline."""

    code = "manual_task_closed"


# --- in the payment's transaction ----------------------------------------------------------------


async def queue(
    session: AsyncSession, order: Order, line: OrderLine, product: Product, admin_ids: list[int]
) -> ManualTask:
    """Put a paid line in the queue: the buyer hears it is handled by hand and by when, each
    operator gets the task with its Take button."""
    now = utcnow()
    minutes = product.manual_deadline_minutes or DEFAULT_DEADLINE_MINUTES
    task = ManualTask(
        order_id=order.id,
        order_line_id=line.id,
        account=line.account or "",
        status=ManualStatus.QUEUED,
        deadline_at=now + timedelta(minutes=minutes),
        created_at=now,
    )
    session.add(task)
    await session.flush()
    _tell_buyer(session, order, "manual_queued", {"order_id": order.id, "task_id": task.id})
    await outbox.enqueue_admins(session, admin_ids, "admin_manual_queued", {"task_id": task.id})
    return task


# --- an operator's moves --------------------------------------------------------------------------


def _front() -> str:
    acting = audit.current_actor()
    return acting[1] if acting is not None else "core"


async def _order_number(session: AsyncSession, task: ManualTask) -> str:
    return str(await session.scalar(select(Order.number).where(Order.id == task.order_id)))


async def _closed(session: AsyncSession, task_id: int) -> ManualTaskClosed:
    """Why a move found the task in another state than it needs, read after the move failed."""
    task = await session.get(ManualTask, task_id, populate_existing=True)
    if task is None:
        return ManualTaskClosed(f"no manual task {task_id}", status="", taken_by=None)
    status = task.status
    if status in OPEN and task.deadline_at <= utcnow():
        status = ManualStatus.EXPIRED  # the job has not run yet, but its time is up
    return ManualTaskClosed(f"manual task {task_id} is {status}", status=str(status), taken_by=task.taken_by)


async def take(session: AsyncSession, task_id: int, operator_id: int) -> ManualTask:
    """The operator takes a queued task: exactly one taker wins; the others hear who has it."""
    if await session.get(ManualTask, task_id) is None:
        raise NotFound(f"no manual task {task_id}", key="err_sales.no_manual_task", task=task_id)
    now = utcnow()
    taken = await session.execute(
        update(ManualTask)
        .where(ManualTask.id == task_id, ManualTask.status == ManualStatus.QUEUED, ManualTask.deadline_at > now)
        .values(status=ManualStatus.TAKEN, taken_by=operator_id, taken_at=now)
    )
    if not rowcount(taken):
        raise await _closed(session, task_id)
    task = await session.get(ManualTask, task_id, populate_existing=True)
    assert task is not None
    await _audit(
        session, f"operator:{operator_id}", "manual.taken", task, ManualStatus.QUEUED, {"taken_by": operator_id}
    )
    return task


async def held(session: AsyncSession, task_id: int, operator_id: int) -> ManualTask:
    """The task, if this operator holds it and its deadline has not passed."""
    task = await session.get(ManualTask, task_id)
    if task is None:
        raise NotFound(f"no manual task {task_id}", key="err_sales.no_manual_task", task=task_id)
    if task.status != ManualStatus.TAKEN or task.taken_by != operator_id or task.deadline_at <= utcnow():
        raise await _closed(session, task_id)
    return task


async def finish(session: AsyncSession, task_id: int, operator_id: int, note: str | None) -> ManualTask:
    """The operator did it: the order is delivered and the buyer told (with the operator's note)."""
    note = " ".join((note or "").split())[:NOTE_LIMIT] or None
    now = utcnow()
    done = await session.execute(
        update(ManualTask)
        .where(
            ManualTask.id == task_id,
            ManualTask.status == ManualStatus.TAKEN,
            ManualTask.taken_by == operator_id,
            ManualTask.deadline_at > now,
        )
        .values(status=ManualStatus.DONE, finished_at=now, note=note)
    )
    if not rowcount(done):
        if await session.get(ManualTask, task_id) is None:
            raise NotFound(f"no manual task {task_id}", key="err_sales.no_manual_task", task=task_id)
        raise await _closed(session, task_id)
    task = await session.get(ManualTask, task_id, populate_existing=True)
    assert task is not None
    # Paid, ledger and commissions were written with the payment: delivering is all that is left.
    await session.execute(
        update(Order)
        .where(Order.id == task.order_id, Order.status == OrderStatus.PAID)
        .values(status=OrderStatus.DELIVERED, delivered_at=now)
    )
    order = await session.get(Order, task.order_id)
    assert order is not None
    _tell_buyer(session, order, "manual_done", {"order_id": order.id, "task_id": task.id})
    await _audit(session, f"operator:{operator_id}", "manual.done", task, ManualStatus.TAKEN, {"note": note})
    return task


def clean_reason(reason: str) -> str:
    reason = " ".join((reason or "").split())
    if not reason:
        raise InvalidInput("say why it could not be done", key="err_sales.manual_needs_reason", field="reason")
    return reason[:REASON_LIMIT]


async def fail(session: AsyncSession, task_id: int, operator_id: int, reason: str) -> ManualTask:
    """The operator could not do it; the refund follows after commit (``resolve``)."""
    reason = clean_reason(reason)
    now = utcnow()
    failed = await session.execute(
        update(ManualTask)
        .where(
            ManualTask.id == task_id,
            ManualTask.status == ManualStatus.TAKEN,
            ManualTask.taken_by == operator_id,
        )
        .values(status=ManualStatus.FAILED, finished_at=now, reason=reason, claimed_until=now + CLAIM)
    )
    if not rowcount(failed):
        if await session.get(ManualTask, task_id) is None:
            raise NotFound(f"no manual task {task_id}", key="err_sales.no_manual_task", task=task_id)
        raise await _closed(session, task_id)
    task = await session.get(ManualTask, task_id, populate_existing=True)
    assert task is not None
    await _audit(session, f"operator:{operator_id}", "manual.failed", task, ManualStatus.TAKEN, {"reason": reason})
    return task


async def _audit(
    session: AsyncSession, actor: str, action: str, task: ManualTask, old: str, new: dict[str, object]
) -> None:
    await audit.record_many(
        session,
        [
            audit.Entry(
                actor,
                _front(),
                action,
                "order",
                await _order_number(session, task),
                old={"task": task.id, "status": str(old)},
                new={"task": task.id, "status": str(task.status), **new},
            )
        ],
    )


# --- refunds: after an operator's failure, or past the deadline ------------------------------------


async def expire_due(core: Wiring, *, now: datetime | None = None, limit: int = BATCH) -> list[int]:
    """Expire open tasks past their deadline and refund their orders; returns the task ids."""
    now = now or utcnow()
    async with core.db.transaction() as session:
        pick = locked_pick(
            select(ManualTask.id)
            .where(ManualTask.status.in_(OPEN), ManualTask.deadline_at <= now)
            .order_by(ManualTask.id)
            .limit(limit)
        )
        rows = (
            await session.execute(
                update(ManualTask)
                .where(ManualTask.id == pick.c.id)
                .values(status=ManualStatus.EXPIRED, finished_at=now, reason=DEADLINE_REASON, claimed_until=now + CLAIM)
                .returning(ManualTask.id, ManualTask.order_id, ManualTask.taken_by)
                .execution_options(synchronize_session=False)
            )
        ).all()
        expired = sorted(rows, key=lambda r: r.id)
        numbers = dict(
            (
                await session.execute(select(Order.id, Order.number).where(Order.id.in_([r.order_id for r in expired])))
            ).all()
        )
        await audit.record_many(
            session,
            [
                audit.Entry(
                    "system",
                    "scheduler",
                    "manual.expired",
                    "order",
                    str(numbers.get(row.order_id, "")),
                    old={"task": row.id, "taken_by": row.taken_by},
                    new={"task": row.id, "status": str(ManualStatus.EXPIRED)},
                )
                for row in expired
            ],
        )
    for row in expired:
        await resolve(core, row.id, actor="system")
    return [row.id for row in expired]


async def resolve_due(core: Wiring, *, now: datetime | None = None, limit: int = BATCH) -> list[int]:
    """Refund failed or expired tasks nobody resolved (a crash between a failure and its refund)."""
    now = now or utcnow()
    async with core.db.transaction() as session:
        pick = locked_pick(
            select(ManualTask.id)
            .where(
                ManualTask.status.in_([ManualStatus.FAILED, ManualStatus.EXPIRED]),
                ManualTask.resolution.is_(None),
                or_(ManualTask.claimed_until.is_(None), ManualTask.claimed_until < now),
            )
            .order_by(ManualTask.id)
            .limit(limit)
        )
        ids = sorted(
            (
                await session.execute(
                    update(ManualTask)
                    .where(ManualTask.id == pick.c.id)
                    .values(claimed_until=now + CLAIM)
                    .returning(ManualTask.id)
                    .execution_options(synchronize_session=False)
                )
            ).scalars()
        )
    for task_id in ids:
        await resolve(core, task_id, actor="system")
    return ids


async def resolve(core: Wiring, task_id: int, *, actor: str) -> Resolution | None:
    """Refund a failed or expired task's order line through the refund path (money back by its
    payment method, revenue and commissions reversed), then tell the buyer why and what came
    back, and the operators when they must act. None when another run resolved it first."""
    from quanyi.core.sales.refund_notices import tell_refunded
    from quanyi.core.sales.refunds import refund_order

    async with core.db.read() as session:
        task = await session.get(ManualTask, task_id)
        if task is None or task.resolution is not None:
            return None
        number = await _order_number(session, task)
        line_no = int(await session.scalar(select(OrderLine.line_no).where(OrderLine.id == task.order_line_id)) or 0)
        expired = task.status == ManualStatus.EXPIRED
        why = "manual fulfilment not done by its deadline" if expired else f"manual fulfilment failed: {task.reason}"
    refunded: tuple[int, str] | None = None
    try:
        # The buyer hears why first, then what was refunded (below).
        done = await refund_order(core, number, line_no=line_no, reason=why, actor=actor, tell_buyer=False)
        refunded = (done.amount, done.currency) if done.amount > 0 else None
        resolution = Resolution.REFUNDED
    except RefundNotSupported:
        resolution = Resolution.REFUND_PENDING
    except QuanyiError as exc:  # RefundFailed (recorded, to retry), or nothing left to refund
        log.warning("manual task %s (%s): refund failed: %s", task_id, number, exc.message[:120])
        resolution = Resolution.REFUND_PENDING
    admins = core.settings.admin_id_list
    async with core.db.transaction() as session:
        settled = await session.execute(
            update(ManualTask)
            .where(ManualTask.id == task_id, ManualTask.resolution.is_(None))
            .values(resolution=resolution, claimed_until=None)
        )
        if not rowcount(settled):
            return None
        order = await session.get(Order, task.order_id)
        assert order is not None
        cause = "manual_expired" if expired else "manual_failed"
        if resolution == Resolution.REFUND_PENDING:
            await session.execute(
                update(Order)
                .where(Order.id == order.id, Order.status == OrderStatus.PAID)
                .values(status=OrderStatus.FAILED, failure_reason=cause, closed_at=utcnow())
            )
            await outbox.enqueue_admins(session, admins, "admin_manual_refund_pending", {"task_id": task_id})
        else:
            await session.execute(
                update(Order).where(Order.id == order.id, Order.failure_reason.is_(None)).values(failure_reason=cause)
            )
            if expired:
                await outbox.enqueue_admins(session, admins, "admin_manual_expired", {"task_id": task_id})
        payload: dict[str, object] = {"order_id": order.id, "task_id": task_id, "resolution": resolution.value}
        _tell_buyer(session, order, "manual_failed", payload)
        if refunded is not None:
            await tell_refunded(session, order, *refunded)
    log.warning("manual task %s (%s) %s: %s", task_id, number, "expired" if expired else "failed", resolution)
    core.outbox_wakeup.set()
    return resolution


def _tell_buyer(session: AsyncSession, order: Order, kind: str, payload: dict[str, object]) -> None:
    if order.chat_id is None:  # a partner's order: its webhook tells it
        return
    outbox.enqueue(session, chat_id=order.chat_id, kind=kind, payload=payload, language=order.language)
