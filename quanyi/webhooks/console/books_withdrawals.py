"""Distributors' withdrawals (提现) in the console: the list by status, one withdrawal with its
distributor's accounts and ledger entries, and approve / reject with a reason / mark paid —
``core.books.approve_withdrawal``, ``reject_withdrawal`` and ``mark_withdrawal_paid``, as the
CLI and the chat's /withdrawals call them."""

from __future__ import annotations

from typing import Any

from quart import redirect, request, url_for

from quanyi.core.distributors.views import WithdrawalDecided
from quanyi.core.errors import QuanyiError
from quanyi.core.staff.roles import Area
from quanyi.webhooks.console import blueprint
from quanyi.webhooks.console.money_words import say, status_of
from quanyi.webhooks.console.shell import core, guard, me, page, reason, text

# The filters a person picks (?status=): the service's statuses, plus approved split in two.
FILTERS = ("pending", "to_pay", "paid", "rejected", "all")
_SERVICE_STATUS = {"pending": "requested", "to_pay": "approved", "paid": "approved", "rejected": "rejected"}
SHOWN = 200


def state_of(w: Any) -> str:
    """What a withdrawal waits for, in the filters' words."""
    if w.status == "requested":
        return "pending"
    if w.status == "approved":
        return "to_pay" if w.paid_at is None else "paid"
    return str(w.status)


@blueprint.get("/books/withdrawals")
@guard(Area.BOOKS)
async def withdrawals() -> Any:
    return await _list_page()


async def _list_page(error: str = "", status: int = 200) -> Any:
    chosen = request.args.get("status", "pending")
    chosen = chosen if chosen in FILTERS else "pending"
    rows = await core().books.list_withdrawals(status=_SERVICE_STATUS.get(chosen), limit=SHOWN)
    if chosen in ("to_pay", "paid"):
        rows = [w for w in rows if state_of(w) == chosen]
    return await page(
        "console/withdrawals.html",
        status=status,
        rows=rows,
        chosen=chosen,
        filters=FILTERS,
        state_of=state_of,
        say=say,
        error=error,
    )


@blueprint.get("/books/withdrawals/<int:withdrawal_id>")
@guard(Area.BOOKS)
async def withdrawal(withdrawal_id: int) -> Any:
    return await _detail_page(withdrawal_id)


async def _detail_page(withdrawal_id: int, error: str = "", status: int = 200) -> Any:
    try:
        detail = await core().books.withdrawal_detail(withdrawal_id)
    except QuanyiError as exc:
        return await _list_page(reason(exc), status_of(exc))
    return await page(
        "console/withdrawal.html",
        status=status,
        detail=detail,
        w=detail.withdrawal,
        state=state_of(detail.withdrawal),
        say=say,
        error=error,
        notice=request.args.get("done", ""),
    )


def _why(exc: QuanyiError) -> str:
    if isinstance(exc, WithdrawalDecided):
        status = str(exc.details.get("status", ""))
        return text("console_money.withdrawal_decided", status=say("console_money.wstates.", status))
    return reason(exc)


def _back(withdrawal_id: int, done: str) -> Any:
    return redirect(url_for("console.withdrawal", withdrawal_id=withdrawal_id, done=done), 303)


@blueprint.post("/books/withdrawals/<int:withdrawal_id>/approve")
@guard(Area.BOOKS, write=True)
async def withdrawal_approve(withdrawal_id: int) -> Any:
    try:
        await core().books.approve_withdrawal(withdrawal_id, actor=me().actor)
    except QuanyiError as exc:
        return await _detail_page(withdrawal_id, _why(exc), status_of(exc))
    return _back(withdrawal_id, "approved")


@blueprint.post("/books/withdrawals/<int:withdrawal_id>/reject")
@guard(Area.BOOKS, write=True)
async def withdrawal_reject(withdrawal_id: int) -> Any:
    form = await request.form
    try:
        await core().books.reject_withdrawal(withdrawal_id, actor=me().actor, reason=form.get("reason", ""))
    except QuanyiError as exc:
        return await _detail_page(withdrawal_id, _why(exc), status_of(exc))
    return _back(withdrawal_id, "rejected")


@blueprint.post("/books/withdrawals/<int:withdrawal_id>/paid")
@guard(Area.BOOKS, write=True)
async def withdrawal_paid(withdrawal_id: int) -> Any:
    try:
        await core().books.mark_withdrawal_paid(withdrawal_id, actor=me().actor)
    except QuanyiError as exc:
        return await _detail_page(withdrawal_id, _why(exc), status_of(exc))
    return _back(withdrawal_id, "paid")
