"""The manual-fulfilment queue, read for a screen: one task with its order, the open ones, and
the orders of a buyer's list still being handled by hand."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.errors import NotFound
from quanyi.core.models import ManualStatus, ManualTask, Order, OrderLine, User
from quanyi.core.sales.manual import OPEN, ManualTaskClosed

# Re-exported for the doors, which catch it without importing the steps that raise it.
__all__ = [
    "OPEN_STATES",
    "ManualStatus",
    "ManualTaskClosed",
    "ManualTaskView",
    "handled_by_hand",
    "open_tasks",
    "task_view",
]
OPEN_STATES = tuple(str(s) for s in OPEN)


@dataclass(frozen=True)
class ManualTaskView:
    id: int
    status: str  # queued | taken | done | failed | expired
    order_number: str
    order_status: str
    product_name: str
    sku: str
    quantity: int
    account: str
    amount: int  # what the buyer paid for the order
    currency: str
    user_id: int | None
    username: str | None
    deadline_at: datetime
    taken_by: int | None
    taken_at: datetime | None
    finished_at: datetime | None
    note: str | None
    reason: str | None
    resolution: str | None

    @property
    def open(self) -> bool:
        return self.status in OPEN_STATES


_COLUMNS = (
    ManualTask,
    Order.number,
    Order.status,
    Order.amount,
    Order.currency,
    Order.user_id,
    OrderLine.name,
    OrderLine.sku,
    OrderLine.quantity,
    User.username,
)


_QUERY = (
    select(*_COLUMNS)
    .join(Order, Order.id == ManualTask.order_id)
    .join(OrderLine, OrderLine.id == ManualTask.order_line_id)
    .outerjoin(User, User.id == Order.user_id)
)


def _view(row: Sequence[object]) -> ManualTaskView:
    task, number, order_status, amount, currency, user_id, name, sku, quantity, username = row
    assert isinstance(task, ManualTask)
    return ManualTaskView(
        id=task.id,
        status=task.status,
        order_number=str(number),
        order_status=str(order_status),
        product_name=str(name),
        sku=str(sku),
        quantity=int(str(quantity)),
        account=task.account,
        amount=int(str(amount)),
        currency=str(currency),
        user_id=user_id if isinstance(user_id, int) else None,
        username=username if isinstance(username, str) else None,
        deadline_at=task.deadline_at,
        taken_by=task.taken_by,
        taken_at=task.taken_at,
        finished_at=task.finished_at,
        note=task.note,
        reason=task.reason,
        resolution=task.resolution,
    )


async def task_view(session: AsyncSession, task_id: int) -> ManualTaskView:
    row = (await session.execute(_QUERY.where(ManualTask.id == task_id))).first()
    if row is None:
        raise NotFound(f"no manual task {task_id}", key="err_sales.no_manual_task", task=task_id)
    return _view(tuple(row))


async def open_tasks(session: AsyncSession, *, limit: int = 30) -> list[ManualTaskView]:
    """The queue: open tasks, the nearest deadline first."""
    rows = await session.execute(
        _QUERY.where(ManualTask.status.in_(OPEN)).order_by(ManualTask.deadline_at, ManualTask.id).limit(limit)
    )
    return [_view(tuple(row)) for row in rows.all()]


async def handled_by_hand(session: AsyncSession, order_ids: Sequence[int]) -> set[int]:
    """Which of these orders an operator is still to fulfil by hand."""
    if not order_ids:
        return set()
    found = await session.scalars(
        select(ManualTask.order_id).where(ManualTask.order_id.in_(list(order_ids)), ManualTask.status.in_(OPEN))
    )
    return set(found)
