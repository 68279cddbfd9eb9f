"""Refunds: an operator's (a whole order, one line, or a payment kept for review) and the
provider's own (a Stars refund, a Stripe refund or chargeback).

A refund happens once. Each one has a unique scope (``line:<id>`` or ``payment:<id>``),
so a second request, a retry or a late provider confirmation finds the first. The
provider is called outside any transaction, by whoever holds the refund's claim, once per
refund row with that row's own idempotency key (``quanyi-refund-<id>``) for life: a
whole-order refund that picks up a line refund whose answer was lost retries that row
under its key, so the provider sees a repeat, never a new refund. A refunded line's codes
are voided in the same transaction that records the refund: they are never sold again.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.books import commissions, ledger
from quanyi.core.errors import CallbackRejected, InvalidInput, NotFound, QuanyiError, RefundFailed, RefundNotSupported
from quanyi.core.models import (
    Order,
    OrderLine,
    OrderStatus,
    Payment,
    Refund,
    RefundStatus,
    StockItem,
    StockStatus,
    utcnow,
)
from quanyi.core.payments.base import PaidWith, PaymentMethod, RefundEvent
from quanyi.core.platform import audit
from quanyi.core.platform.db import upsert
from quanyi.core.sales import redeem
from quanyi.core.sales.fulfilment import first_sighting
from quanyi.core.sales.refund_notices import tell_operators_refunded, tell_refunded, what_it_undid

if TYPE_CHECKING:
    from quanyi.core.wiring import Wiring

log = logging.getLogger(__name__)
CLAIM = timedelta(minutes=2)
REFUNDABLE = (OrderStatus.PAID, OrderStatus.DELIVERED, OrderStatus.FAILED, OrderStatus.REFUNDED)
DONE = (RefundStatus.SUCCEEDED, RefundStatus.MANUAL)


@dataclass(frozen=True)
class RefundResult:
    order_number: str
    amount: int  # refunded by this request (0 when everything asked for was refunded before)
    currency: str
    status: str  # succeeded | manual | already
    lines: tuple[int, ...]  # line numbers refunded by this request
    provider_refund_id: str | None = None
    # What the refund undid on the order, for the operator's answer: never "codes void" for a
    # recharge, a link or a second payment given back (the order untouched).
    codes_voided: bool = False
    links_revoked: bool = False


@dataclass(frozen=True)
class _Sent:
    done: list[Refund]  # rows the provider confirmed, recorded as succeeded
    provider_refund_ids: list[str]
    error: str | None  # why the provider did not confirm the rest (None: all went through)


def provider_key(refund_id: int) -> str:
    """The idempotency key of one refund row: the same on every call for it, whoever makes
    the call and whatever other rows are refunded with it."""
    return f"quanyi-refund-{refund_id}"


class ProviderRefundOutcome(enum.StrEnum):
    RECORDED = "refund_recorded"  # the provider refunded; recorded and flagged to operators
    CONFIRMED = "refund_confirmed"  # the provider confirmed a refund we asked for
    DUPLICATE = "duplicate"


def _clean_reason(reason: str) -> str:
    reason = " ".join((reason or "").split())
    if not reason:
        raise InvalidInput("a refund needs a reason", key="err_sales.refund_needs_reason", field="reason")
    return reason[:255]


async def refund_order(
    core: Wiring,
    number: str,
    *,
    line_no: int | None = None,
    reason: str,
    actor: str,
    manual: bool = False,
    tell_buyer: bool = True,
) -> RefundResult:
    """Refund a paid order whole, or one line of it, through its payment method.

    ``manual`` records a refund the operator paid back outside quanyi (for methods
    without a refund API). Safe to repeat: what was refunded before is not refunded again,
    and a refund whose provider call failed is retried. ``tell_buyer=False`` when the caller
    tells the buyer itself (a failed recharge says it failed before it says refunded).
    """
    reason = _clean_reason(reason)
    async with core.db.transaction() as session:
        order = await session.scalar(select(Order).where(Order.number == number))
        if order is None:
            raise NotFound(f"no order {number}", key="err_sales.no_order", number=number)
        if order.status not in REFUNDABLE:
            raise InvalidInput(
                f"order {number} is {order.status}: nothing was paid to refund",
                key="err_sales.nothing_paid",
                number=number,
            )
        lines = [line for line in order.lines if line_no is None or line.line_no == line_no]
        if not lines:
            raise NotFound(
                f"order {number} has no line {line_no}", key="err_sales.no_line", number=number, line=str(line_no)
            )
        payment = await _applied_payment(session, order.id)
        method = core.payments.get(payment.method) if not manual else None
        if method is not None and not method.supports_refund:
            raise RefundNotSupported(
                f"{payment.method} has no refund API: refund the buyer yourself, then record it with --manual",
                key="err_sales.refund_no_api",
                method=payment.method,
            )
        created = await _record_line_refunds(
            session,
            order,
            payment,
            lines,
            reason=reason,
            initiated_by=actor,
            status=RefundStatus.MANUAL if manual else RefundStatus.PENDING,
        )
        if manual:
            await _settle_order_status(session, order.id)
            if created and tell_buyer:
                await tell_refunded(session, order, sum(r.amount for r in created), payment.currency)
        refund_ids = [r.id for r in created]
        if not manual:
            # Earlier attempts whose provider call failed are retried with this request.
            retry = await session.scalars(
                select(Refund.id).where(
                    Refund.order_id == order.id,
                    Refund.order_line_id.in_([line.id for line in lines]),
                    Refund.status == RefundStatus.PENDING,
                )
            )
            refund_ids = sorted(set(refund_ids) | set(retry))
        paid = PaidWith(
            order_number=order.number,
            provider_txn_id=payment.provider_txn_id,
            amount=payment.amount,
            currency=payment.currency,
            user_id=order.user_id,
            raw=_raw(payment),
        )
        line_numbers = {line.id: line.line_no for line in lines}
        order_id = order.id
        currency = payment.currency
    if manual:
        amount = sum(r.amount for r in created)
        async with core.db.read() as session:
            voided, revoked = await what_it_undid(session, order_id)
        return RefundResult(
            number,
            amount,
            currency,
            RefundStatus.MANUAL if created else "already",
            tuple(line_numbers[r.order_line_id] for r in created if r.order_line_id),
            codes_voided=voided,
            links_revoked=revoked,
        )
    assert method is not None
    claimed = await _claim(core, refund_ids)
    if not claimed:
        return RefundResult(number, 0, currency, "already", ())
    sent = await _send(core, method, paid, claimed, reason=reason, actor=actor, order_id=order_id)
    amount = sum(r.amount for r in sent.done)
    voided = revoked = False
    if sent.done:
        async with core.db.transaction() as session:  # what it undid, read once for buyer and operator
            voided, revoked = await what_it_undid(session, order_id)
            if tell_buyer:
                order = await session.get(Order, order_id)
                assert order is not None
                await tell_refunded(session, order, amount, currency, undid=(voided, revoked))
        if tell_buyer:
            core.outbox_wakeup.set()
    if sent.error is not None:
        part = f"{len(sent.done)} of {len(claimed)} refunds went through; " if sent.done else ""
        message = f"the refund is recorded but {method.name} did not confirm it ({part}{sent.error}); run it again"
        if sent.done:
            raise RefundFailed(
                message,
                key="err_sales.refund_partly_unconfirmed",
                method=method.name,
                done=len(sent.done),
                total=len(claimed),
                error=sent.error,
            )
        raise RefundFailed(message, key="err_sales.refund_unconfirmed", method=method.name, error=sent.error)
    return RefundResult(
        number,
        amount,
        currency,
        RefundStatus.SUCCEEDED,
        tuple(line_numbers[r.order_line_id] for r in sent.done if r.order_line_id in line_numbers),
        ", ".join(dict.fromkeys(sent.provider_refund_ids)) or None,
        codes_voided=voided,
        links_revoked=revoked,
    )


async def refund_payment(
    core: Wiring, payment_id: int, *, reason: str, actor: str, manual: bool = False
) -> RefundResult:
    """Give back a payment kept for review (a late or second payment): the order is untouched."""
    reason = _clean_reason(reason)
    async with core.db.transaction() as session:
        payment = await session.get(Payment, payment_id)
        if payment is None:
            raise NotFound(f"no payment {payment_id}", key="err_sales.no_payment", payment=payment_id)
        if payment.outcome != "needs_review":
            raise InvalidInput(
                "only a payment kept for review is refunded on its own; refund its order instead",
                key="err_sales.review_only",
            )
        order = await session.get(Order, payment.order_id)
        assert order is not None
        method = core.payments.get(payment.method) if not manual else None
        if method is not None and not method.supports_refund:
            raise RefundNotSupported(
                f"{payment.method} has no refund API: refund by hand, then record it with --manual",
                key="err_sales.refund_no_api",
                method=payment.method,
            )
        scope = f"payment:{payment.id}"
        new = await _insert_refund(
            session,
            scope=scope,
            order_id=order.id,
            line_id=None,
            payment=payment,
            amount=payment.amount,
            currency=payment.currency,
            status=RefundStatus.MANUAL if manual else RefundStatus.PENDING,
            reason=reason,
            initiated_by=actor,
        )
        new_id = new.id if new is not None else None
        refund_id = new_id or await session.scalar(select(Refund.id).where(Refund.scope == scope))
        if manual and new_id:
            await tell_refunded(session, order, payment.amount, payment.currency, payment_only=True)
            await post_refunds(session, order.id)
        paid = PaidWith(
            order.number, payment.provider_txn_id, payment.amount, payment.currency, order.user_id, _raw(payment)
        )
        number, currency = order.number, payment.currency
    if manual:
        return RefundResult(
            number, payment.amount if new_id else 0, currency, RefundStatus.MANUAL if new_id else "already", ()
        )
    assert method is not None and refund_id is not None
    claimed = await _claim(core, [refund_id])
    if not claimed:
        return RefundResult(number, 0, currency, "already", ())
    try:
        provider_refund_id = await method.refund(paid, paid.amount, reason, provider_key(refund_id))
    except QuanyiError as exc:
        await _release(core, [refund_id], str(exc.message))
        raise RefundFailed(
            f"the refund is recorded but {method.name} did not confirm it ({exc.message}); run it again",
            key="err_sales.refund_unconfirmed",
            method=method.name,
            error=exc.message,
        ) from None
    async with core.db.transaction() as session:
        await session.execute(
            update(Refund)
            .where(Refund.id == refund_id, Refund.status == RefundStatus.PENDING)
            .values(
                status=RefundStatus.SUCCEEDED,
                provider_refund_id=provider_refund_id,
                completed_at=utcnow(),
                claimed_until=None,
            )
        )
        order = await session.scalar(select(Order).where(Order.number == number))
        assert order is not None
        await post_refunds(session, order.id)
        await tell_refunded(session, order, paid.amount, currency, payment_only=True)
        await _audit_completed(session, actor, [refund_id], provider_refund_id)
    core.outbox_wakeup.set()
    return RefundResult(number, paid.amount, currency, RefundStatus.SUCCEEDED, (), provider_refund_id)


async def record_provider_refund(core: Wiring, event: RefundEvent) -> ProviderRefundOutcome:
    """Record a refund the provider reports: one we asked for (confirmed), or one it made on
    its own (a Stars refund, a chargeback), which is recorded the same way and flagged."""
    async with core.db.transaction() as session:
        if event.event_id is not None and not await first_sighting(session, event.method, event.event_id):
            return ProviderRefundOutcome.DUPLICATE
        payment = await session.scalar(
            select(Payment).where(Payment.method == event.method, Payment.provider_txn_id == event.provider_txn_id)
        )
        if payment is None:
            raise CallbackRejected("refund names a payment we do not have")
        if event.currency != payment.currency or not 0 < event.amount <= payment.amount:
            raise CallbackRejected("refund amount does not fit the payment")
        mine = list(
            await session.scalars(
                select(Refund).where(
                    Refund.payment_id == payment.id, Refund.provider_refund_id == event.provider_refund_id
                )
            )
        )
        if mine:
            if any(r.status == RefundStatus.PENDING for r in mine):
                await session.execute(
                    update(Refund)
                    .where(Refund.id.in_([r.id for r in mine]), Refund.status == RefundStatus.PENDING)
                    .values(status=RefundStatus.SUCCEEDED, completed_at=utcnow(), claimed_until=None)
                )
                await _settle_order_status(session, payment.order_id)
                await _audit_completed(
                    session, f"provider:{event.method}", [r.id for r in mine], event.provider_refund_id
                )
                return ProviderRefundOutcome.CONFIRMED
            return ProviderRefundOutcome.DUPLICATE
        asked = _ours(
            list(
                await session.scalars(
                    select(Refund)
                    .where(Refund.payment_id == payment.id, Refund.status == RefundStatus.PENDING)
                    .order_by(Refund.id)
                )
            ),
            event.amount,
        )
        if asked:
            # Our own refund, confirmed by webhook before the provider's API answer reached us.
            await session.execute(
                update(Refund)
                .where(Refund.id.in_([r.id for r in asked]), Refund.status == RefundStatus.PENDING)
                .values(
                    status=RefundStatus.SUCCEEDED,
                    provider_refund_id=event.provider_refund_id,
                    completed_at=utcnow(),
                    claimed_until=None,
                )
            )
            await _settle_order_status(session, payment.order_id)
            await _audit_completed(session, f"provider:{event.method}", [r.id for r in asked], event.provider_refund_id)
            return ProviderRefundOutcome.CONFIRMED
        order = await session.get(Order, payment.order_id)
        assert order is not None
        if payment.outcome == "needs_review":
            created = await _record_scoped(session, f"payment:{payment.id}", order, payment, None, event)
        else:
            refunded_before = sum(
                r.amount
                for r in await session.scalars(
                    select(Refund).where(Refund.payment_id == payment.id, Refund.status.in_(DONE))
                )
            )
            if refunded_before >= payment.amount:
                return ProviderRefundOutcome.DUPLICATE
            if refunded_before == 0 and event.amount >= payment.amount:
                created = await _record_line_refunds(
                    session,
                    order,
                    payment,
                    list(order.lines),
                    reason="refunded by the payment provider",
                    initiated_by="provider",
                    status=RefundStatus.SUCCEEDED,
                    provider_refund_id=event.provider_refund_id,
                )
            else:
                # A partial refund does not map to lines: record its real amount and flag it.
                # Once the refunds add up to the whole payment, the order is refunded and its
                # codes void, with no line recorded twice.
                created = await _record_scoped(
                    session, f"provider:{event.method}:{event.provider_refund_id}"[:48], order, payment, None, event
                )
                if created and refunded_before + event.amount >= payment.amount:
                    await _void_order(session, order.id)
                elif created:
                    # Its share of every commission goes back with it.
                    await commissions.claw_back(
                        session,
                        order.id,
                        ref=f"clawback:refund:{created[0].id}",
                        share=(event.amount, payment.amount),
                    )
        await _settle_order_status(session, order.id)
        if created:
            await tell_operators_refunded(session, core.settings.admin_id_list, order.id, event)
            await tell_refunded(session, order, event.amount, event.currency)
    core.outbox_wakeup.set()
    log.warning("provider %s refunded %s of order %s", event.method, event.amount, order.number)
    return ProviderRefundOutcome.RECORDED if created else ProviderRefundOutcome.DUPLICATE


def _ours(pending: list[Refund], amount: int) -> list[Refund]:
    """The pending refunds (by id) that a provider refund of ``amount`` most likely is: all of
    them when they add up to it (one call for several rows), else the row being sent now (rows
    are sent one at a time, lowest id first, each under its claim), else a row left pending
    whose answer was lost. None: it is not ours."""
    if pending and sum(r.amount for r in pending) == amount:
        return pending
    now = utcnow()
    same = [r for r in pending if r.amount == amount]
    sending = [r for r in same if r.claimed_until is not None and r.claimed_until > now]
    return (sending or same)[:1]


async def _applied_payment(session: AsyncSession, order_id: int) -> Payment:
    payment = await session.scalar(
        select(Payment).where(Payment.order_id == order_id, Payment.outcome == "applied").order_by(Payment.id)
    )
    if payment is None:
        raise InvalidInput("the order has no payment to refund", key="err_sales.no_payment_to_refund")
    return payment


async def _record_line_refunds(
    session: AsyncSession,
    order: Order,
    payment: Payment,
    lines: Sequence[OrderLine],
    *,
    reason: str,
    initiated_by: str,
    status: RefundStatus,
    provider_refund_id: str | None = None,
) -> list[Refund]:
    """Insert one refund per line not refunded before and void those lines' codes."""
    created: list[Refund] = []
    for line in lines:
        refund = await _insert_refund(
            session,
            scope=f"line:{line.id}",
            order_id=order.id,
            line_id=line.id,
            payment=payment,
            amount=line.amount,
            currency=payment.currency,
            status=status,
            reason=reason,
            initiated_by=initiated_by,
            provider_refund_id=provider_refund_id,
        )
        if refund is not None:
            created.append(refund)
    if created:
        # A refunded code is never sold again, and a refund voids what was delivered.
        await session.execute(
            update(StockItem)
            .where(
                StockItem.order_line_id.in_([r.order_line_id for r in created]),
                StockItem.status.in_([StockStatus.SOLD, StockStatus.RESERVED]),
            )
            .values(status=StockStatus.VOID)
            .execution_options(synchronize_session=False)
        )
        for refund in created:
            if refund.order_line_id is not None:
                await redeem.void(session, order_line_id=refund.order_line_id)
        # The distributors' shares of those lines are taken back, also once confirmed.
        for refund in created:
            if refund.order_line_id is not None:
                await commissions.claw_back(
                    session, order.id, ref=f"clawback:refund:{refund.id}", line_ids=[refund.order_line_id]
                )
    return created


async def _record_scoped(
    session: AsyncSession, scope: str, order: Order, payment: Payment, line_id: int | None, event: RefundEvent
) -> list[Refund]:
    refund = await _insert_refund(
        session,
        scope=scope,
        order_id=order.id,
        line_id=line_id,
        payment=payment,
        amount=event.amount,
        currency=event.currency,
        status=RefundStatus.SUCCEEDED,
        reason="refunded by the payment provider",
        initiated_by="provider",
        provider_refund_id=event.provider_refund_id,
    )
    return [refund] if refund is not None else []


async def _insert_refund(
    session: AsyncSession,
    *,
    scope: str,
    order_id: int,
    line_id: int | None,
    payment: Payment,
    amount: int,
    currency: str,
    status: RefundStatus,
    reason: str,
    initiated_by: str,
    provider_refund_id: str | None = None,
) -> Refund | None:
    """Insert a refund unless its scope has one already (then None: it happened before)."""
    now = utcnow()
    result = await session.execute(
        upsert(session, Refund)
        .values(
            scope=scope,
            order_id=order_id,
            order_line_id=line_id,
            payment_id=payment.id,
            method=payment.method,
            amount=amount,
            currency=currency,
            status=status,
            provider_refund_id=provider_refund_id,
            reason=reason,
            initiated_by=initiated_by,
            created_at=now,
            completed_at=now if status in DONE else None,
        )
        .on_conflict_do_nothing(index_elements=[Refund.scope])
        .returning(Refund.id)
    )
    refund_id = result.scalar()
    if refund_id is None:
        return None
    await audit.record(
        session,
        actor=initiated_by,
        front="core",
        action="refund.recorded",
        object_type="refund",
        object_id=refund_id,
        new={"scope": scope, "amount": amount, "currency": currency, "status": str(status), "reason": reason},
    )
    return await session.get(Refund, refund_id)


async def _audit_completed(
    session: AsyncSession, actor: str, refund_ids: list[int], provider_refund_id: str | None
) -> None:
    await audit.record_many(
        session,
        [
            audit.Entry(
                actor,
                "core",
                "refund.completed",
                "refund",
                str(refund_id),
                old={"status": str(RefundStatus.PENDING)},
                new={"status": str(RefundStatus.SUCCEEDED), "provider_refund_id": provider_refund_id},
            )
            for refund_id in refund_ids
        ],
    )


async def _void_order(session: AsyncSession, order_id: int) -> None:
    await session.execute(
        update(StockItem)
        .where(StockItem.order_id == order_id, StockItem.status.in_([StockStatus.SOLD, StockStatus.RESERVED]))
        .values(status=StockStatus.VOID)
        .execution_options(synchronize_session=False)
    )
    await commissions.claw_back(session, order_id, ref=f"clawback:order:{order_id}")
    for line_id in await session.scalars(select(OrderLine.id).where(OrderLine.order_id == order_id)):
        await redeem.void(session, order_line_id=line_id)
    await session.execute(
        update(Order)
        .where(Order.id == order_id, Order.status.in_(REFUNDABLE))
        .values(status=OrderStatus.REFUNDED, closed_at=utcnow())
    )


async def post_refunds(session: AsyncSession, order_id: int) -> None:
    """Every completed refund of the order in the ledger, once each: the money leaves the
    provider's clearing account, out of revenue (or out of suspense for a payment that
    never paid the order)."""
    done = await session.scalars(select(Refund).where(Refund.order_id == order_id, Refund.status.in_(DONE)))
    for refund in done:
        source = ledger.SUSPENSE if refund.scope.startswith("payment:") else ledger.REVENUE
        await ledger.post(
            session,
            f"refund:{refund.id}",
            "refund",
            ledger.transfer(source, ledger.clearing(refund.method), refund.amount, refund.currency),
            order_id=order_id,
        )


async def _settle_order_status(session: AsyncSession, order_id: int) -> None:
    """An order whose every line is refunded (done, not merely asked) is ``refunded``; its
    completed refunds are in the ledger."""
    await post_refunds(session, order_id)
    lines = list(await session.scalars(select(OrderLine.id).where(OrderLine.order_id == order_id)))
    done = set(
        await session.scalars(select(Refund.order_line_id).where(Refund.order_id == order_id, Refund.status.in_(DONE)))
    )
    if lines and all(line_id in done for line_id in lines):
        await session.execute(
            update(Order)
            .where(Order.id == order_id, Order.status.in_(REFUNDABLE))
            .values(status=OrderStatus.REFUNDED, closed_at=utcnow())
        )


async def _send(
    core: Wiring,
    method: PaymentMethod,
    paid: PaidWith,
    claimed: list[Refund],
    *,
    reason: str,
    actor: str,
    order_id: int,
) -> _Sent:
    """Call the provider for the claimed refunds, one row per call under the row's own key,
    lowest id first, and record each answer as it comes. The first failure stops the run: that
    row keeps its error, the rows not yet sent are released untouched for the next run.

    A method that refunds whole payments only (Stars) gets one call for all the rows: it can
    give a payment back once, so no key can make it pay twice."""
    calls = [claimed] if method.refunds_whole_payment else [[r] for r in claimed]
    done: list[Refund] = []
    provider_ids: list[str] = []
    for n, rows in enumerate(calls):
        ids = [r.id for r in rows]
        try:
            provider_refund_id = await method.refund(paid, sum(r.amount for r in rows), reason, provider_key(ids[0]))
        except QuanyiError as exc:
            await _release(core, ids, str(exc.message))
            await _release(core, [r.id for later in calls[n + 1 :] for r in later], None)
            return _Sent(done, provider_ids, str(exc.message))
        await _complete(core, ids, provider_refund_id, actor=actor, order_id=order_id)
        done.extend(rows)
        provider_ids.append(provider_refund_id)
    return _Sent(done, provider_ids, None)


async def _complete(core: Wiring, refund_ids: list[int], provider_refund_id: str, *, actor: str, order_id: int) -> None:
    async with core.db.transaction() as session:
        await session.execute(
            update(Refund)
            .where(Refund.id.in_(refund_ids), Refund.status == RefundStatus.PENDING)
            .values(
                status=RefundStatus.SUCCEEDED,
                provider_refund_id=provider_refund_id,
                completed_at=utcnow(),
                claimed_until=None,
                last_error=None,
            )
        )
        await _settle_order_status(session, order_id)
        await _audit_completed(session, actor, refund_ids, provider_refund_id)


async def _claim(core: Wiring, refund_ids: list[int]) -> list[Refund]:
    """Take the right to call the provider for these pending refunds (none if another holds it)."""
    if not refund_ids:
        return []
    now = utcnow()
    async with core.db.transaction() as session:
        result = await session.execute(
            update(Refund)
            .where(
                Refund.id.in_(refund_ids),
                Refund.status == RefundStatus.PENDING,
                or_(Refund.claimed_until.is_(None), Refund.claimed_until < now),
            )
            .values(claimed_until=now + CLAIM)
            .returning(Refund.id)
            .execution_options(synchronize_session=False)
        )
        ids = list(result.scalars())
        return list(await session.scalars(select(Refund).where(Refund.id.in_(ids)).order_by(Refund.id)))


async def _release(core: Wiring, refund_ids: list[int], error: str | None) -> None:
    """Give up the claim (with the provider's error when it was called and failed)."""
    if not refund_ids:
        return
    values: dict[str, object] = {"claimed_until": None}
    if error is not None:
        values["last_error"] = error[:255]
    async with core.db.transaction() as session:
        await session.execute(
            update(Refund).where(Refund.id.in_(refund_ids), Refund.status == RefundStatus.PENDING).values(**values)
        )


def _raw(payment: Payment) -> dict[str, str]:
    import json

    try:
        data = json.loads(payment.raw)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
