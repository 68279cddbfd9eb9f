"""Withdrawals: a distributor asks for its available commission or prepaid balance, the amount
is frozen at once, and an operator approves (the money leaves us) or rejects (it is unfrozen).

Requests of one distributor queue on its row (``SELECT ... FOR UPDATE``; SQLite has one writer),
so concurrent requests can never freeze more than is available. A decision is a conditional
UPDATE from ``requested``: two taps, two replicas or an approve racing a reject decide once.
Decisions and claw-backs take the same row lock first, then the withdrawal's.

What the distributor owes us (its receivable: commission taken back after it was paid out)
is never withdrawable: a commission request is bounded by available minus receivable, a
balance request by the balance minus what the available commission does not cover. A refund
that takes confirmed commission back reduces open withdrawals (``take_back``) before it books
a receivable, and a rejected commission withdrawal pays the receivable down as it unfreezes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import case, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.books import commissions, ledger
from quanyi.core.distributors import accounts as distributors
from quanyi.core.errors import AlreadyExists, InsufficientBalance, InvalidInput, NotFound, QuanyiError
from quanyi.core.models import Distributor, Order, User, Withdrawal, WithdrawalStatus, utcnow
from quanyi.core.money import Money
from quanyi.core.platform import audit, outbox
from quanyi.core.platform.db import rowcount

SOURCES = ("commission", "balance")
MAX_PAYOUT_ACCOUNT = 200
MAX_REASON = 255
CLAWBACK_ACTOR = "system:clawback"


class WithdrawalDecided(QuanyiError):
    """Approve or reject of a withdrawal that was decided already; nothing changed."""

    code = "withdrawal_decided"


@dataclass(frozen=True)
class Available:
    commission: int  # commission the distributor may withdraw (net of what it owes us)
    balance: int  # prepaid balance it may withdraw (net of what the commission does not cover)
    frozen: int  # requested, not decided yet
    currency: str
    receivable: int = 0  # what it owes us: commission taken back after it was paid out

    def of(self, source: str) -> int:
        return self.commission if source == "commission" else self.balance


async def available(session: AsyncSession, distributor: Distributor) -> Available:
    """What the distributor may withdraw from each source. A receivable comes off the
    available commission first, and what that does not cover off the balance."""
    currency = distributor.currency
    balance = int(await session.scalar(select(Distributor.balance).where(Distributor.id == distributor.id)) or 0)
    commission = max(0, await ledger.owed(session, ledger.distributor(distributor.id, "available"), currency))
    owed_to_us = await commissions.receivable(session, distributor.id, currency)
    uncovered = max(0, owed_to_us - commission)
    return Available(
        commission=max(0, commission - owed_to_us),
        balance=max(0, balance - uncovered),
        frozen=await ledger.owed(session, ledger.distributor(distributor.id, "frozen"), currency),
        currency=currency,
        receivable=owed_to_us,
    )


def check_payout_account(text: str) -> str:
    """The payout account as typed (trimmed): 1-200 printable characters."""
    account = (text or "").strip()
    if not 1 <= len(account) <= MAX_PAYOUT_ACCOUNT or not account.isprintable():
        raise InvalidInput(
            f"the payout account must be 1-{MAX_PAYOUT_ACCOUNT} printable characters",
            key="err_books.bad_payout_account",
            most=MAX_PAYOUT_ACCOUNT,
        )
    return account


def _check_reason(text: str) -> str:
    reason = (text or "").strip()
    if not 1 <= len(reason) <= MAX_REASON:
        raise InvalidInput(
            f"a rejection needs a reason of 1-{MAX_REASON} characters", key="err_books.bad_rejection", most=MAX_REASON
        )
    return reason


async def request(
    session: AsyncSession,
    *,
    user_id: int,
    source: str,
    amount: int,
    payout_account: str,
    request_key: str | None = None,
    admin_ids: Sequence[int] = (),
) -> Withdrawal:
    """Freeze ``amount`` of the caller's available commission or balance and ask the operators.

    Refused with ``InsufficientBalance`` (details: ``available``) when it is more than is
    available (never what the distributor owes us: see ``available``), and with
    ``AlreadyExists`` for a ``request_key`` used before (a double tap)."""
    if source not in SOURCES:
        raise InvalidInput("withdraw from commission or balance", key="err_books.bad_source")
    if amount <= 0:
        raise InvalidInput("the amount must be more than zero", key="err_books.amount_not_positive")
    account = check_payout_account(payout_account)
    found = await distributors.require(session, user_id)
    # Every request of this distributor waits here for the one before it to commit.
    distributor = await session.scalar(
        select(Distributor)
        .where(Distributor.id == found.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert distributor is not None
    have = (await available(session, distributor)).of(source)
    if amount > have:
        asked, free = str(Money(amount, distributor.currency)), str(Money(have, distributor.currency))
        raise InsufficientBalance(
            f"{asked} is more than the {free} available",
            key="err_books.more_than_available",
            available=have,
            currency=distributor.currency,
            asked=asked,
            free=free,
        )
    withdrawal = Withdrawal(
        distributor_id=distributor.id,
        source=source,
        amount=amount,
        currency=distributor.currency,
        payout_account=account,
        status=WithdrawalStatus.REQUESTED,
        request_key=request_key[:64] if request_key else None,
    )
    try:
        async with session.begin_nested():
            session.add(withdrawal)
            await session.flush()
    except IntegrityError:
        raise AlreadyExists("this withdrawal was requested already", key="err_books.already_requested") from None
    frozen = ledger.distributor(distributor.id, "frozen")
    if source == "commission":
        await ledger.post(
            session,
            f"withdrawal:{withdrawal.id}:freeze",
            "withdrawal_freeze",
            ledger.transfer(ledger.distributor(distributor.id, "available"), frozen, amount, distributor.currency),
            distributor_id=distributor.id,
            memo=f"withdrawal {withdrawal.id}",
        )
    else:
        await distributors.adjust_balance(
            session,
            distributor,
            -amount,
            reason="withdrawal",
            actor=f"distributor:{distributor.id}",
            note=f"withdrawal {withdrawal.id}",
            counter=frozen,
        )
    await outbox.enqueue_admins(session, list(admin_ids), "admin_withdrawal_request", {"withdrawal_id": withdrawal.id})
    return withdrawal


async def _lock_owner(session: AsyncSession, withdrawal_id: int) -> None:
    """The owner's row lock before the withdrawal's (the order ``request`` and ``claw_back`` use)."""
    owner = await session.scalar(select(Withdrawal.distributor_id).where(Withdrawal.id == withdrawal_id))
    if owner is not None:
        await commissions.lock_distributor(session, owner)


async def _decide(
    session: AsyncSession, withdrawal_id: int, status: WithdrawalStatus, actor: str, reason: str | None
) -> Withdrawal:
    await _lock_owner(session, withdrawal_id)
    values: dict[str, object] = {"status": status, "decided_by": actor[:64], "decided_at": utcnow()}
    if reason is not None:
        values["reason"] = reason  # an approval keeps the note of a reduction
    decided = await session.execute(
        update(Withdrawal)
        .where(Withdrawal.id == withdrawal_id, Withdrawal.status == WithdrawalStatus.REQUESTED)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    withdrawal = await session.scalar(
        select(Withdrawal).where(Withdrawal.id == withdrawal_id).execution_options(populate_existing=True)
    )
    if withdrawal is None:
        raise NotFound(f"no withdrawal {withdrawal_id}", key="err_books.no_withdrawal", withdrawal=withdrawal_id)
    if not rowcount(decided):
        raise WithdrawalDecided(
            f"withdrawal {withdrawal_id} was {withdrawal.status} already", status=str(withdrawal.status)
        )
    # A conditional UPDATE is not seen by the ORM's trail: the decision is noted for it here.
    decided_to = {"status": status.value, **({"reason": reason} if reason is not None else {})}
    audit.note(session, "update withdrawal", "withdrawal", withdrawal.id, {"status": "requested"}, decided_to)
    return withdrawal


async def approve(session: AsyncSession, withdrawal_id: int, *, actor: str) -> Withdrawal:
    """Decide to pay the frozen amount out (frozen -> cash) and tell the distributor it is
    approved, to be paid (``mark_paid`` says when it is). The amount is the withdrawal's as it
    stands: a claw-back may have reduced it since it was requested."""
    withdrawal = await _decide(session, withdrawal_id, WithdrawalStatus.APPROVED, actor, None)
    await ledger.post(
        session,
        f"withdrawal:{withdrawal.id}:payout",
        "withdrawal_payout",
        ledger.transfer(
            ledger.distributor(withdrawal.distributor_id, "frozen"), ledger.CASH, withdrawal.amount, withdrawal.currency
        ),
        distributor_id=withdrawal.distributor_id,
        memo=f"withdrawal {withdrawal.id} by {actor}",
    )
    await _tell_distributor(session, withdrawal, "withdrawal_approved")
    return withdrawal


async def mark_paid(session: AsyncSession, withdrawal_id: int, *, actor: str) -> Withdrawal:
    """The operator says an approved withdrawal's money was sent: only now is the distributor
    told it is paid. Once: a second mark (a double tap, another operator) is refused with
    ``WithdrawalDecided`` (details: status ``paid``, or the status that is not ``approved``)."""
    now = utcnow()
    marked = await session.execute(
        update(Withdrawal)
        .where(
            Withdrawal.id == withdrawal_id,
            Withdrawal.status == WithdrawalStatus.APPROVED,
            Withdrawal.paid_at.is_(None),
        )
        .values(paid_at=now, paid_by=actor[:64])
        .execution_options(synchronize_session=False)
    )
    withdrawal = await session.scalar(
        select(Withdrawal).where(Withdrawal.id == withdrawal_id).execution_options(populate_existing=True)
    )
    if withdrawal is None:
        raise NotFound(f"no withdrawal {withdrawal_id}", key="err_books.no_withdrawal", withdrawal=withdrawal_id)
    if not rowcount(marked):
        if withdrawal.paid_at is not None:
            raise WithdrawalDecided(f"withdrawal {withdrawal_id} was marked paid already", status="paid")
        status = str(withdrawal.status)
        raise WithdrawalDecided(
            f"withdrawal {withdrawal_id} is {status}: only an approved withdrawal can be marked paid", status=status
        )
    audit.note(session, "withdrawal paid", "withdrawal", withdrawal.id, {"paid": False}, {"paid": True})
    await _tell_distributor(session, withdrawal, "withdrawal_paid")
    return withdrawal


async def reject(session: AsyncSession, withdrawal_id: int, *, actor: str, reason: str) -> Withdrawal:
    """Unfreeze the amount back where it came from and tell the distributor why. Unfrozen
    commission pays down what the distributor owes us first."""
    reason = _check_reason(reason)
    withdrawal = await _decide(session, withdrawal_id, WithdrawalStatus.REJECTED, actor, reason)
    frozen = ledger.distributor(withdrawal.distributor_id, "frozen")
    if withdrawal.source == "commission":
        await ledger.post(
            session,
            f"withdrawal:{withdrawal.id}:unfreeze",
            "withdrawal_unfreeze",
            ledger.transfer(
                frozen,
                ledger.distributor(withdrawal.distributor_id, "available"),
                withdrawal.amount,
                withdrawal.currency,
            ),
            distributor_id=withdrawal.distributor_id,
            memo=f"withdrawal {withdrawal.id} rejected by {actor}",
        )
        await commissions.pay_down(
            session,
            withdrawal.distributor_id,
            withdrawal.currency,
            ref=f"withdrawal:{withdrawal.id}:netted",
            memo=f"withdrawal {withdrawal.id} unfrozen: receivable paid down",
        )
    else:
        distributor = await session.get(Distributor, withdrawal.distributor_id)
        assert distributor is not None
        await distributors.adjust_balance(
            session,
            distributor,
            withdrawal.amount,
            reason="withdrawal_rejected",
            actor=actor,
            note=f"withdrawal {withdrawal.id}: {reason}",
            counter=frozen,
        )
    await _tell_distributor(session, withdrawal, "withdrawal_rejected")
    return withdrawal


async def take_back(
    session: AsyncSession, distributor_id: int, currency: str, amount: int, *, ref: str, order_id: int
) -> int:
    """Commission of a refunded order, confirmed and no longer available, taken from the
    distributor's open withdrawals: commission ones before balance ones, newest first. Each is
    reduced (the note in its ``reason``), or refused when nothing is left of it, with a ledger
    entry (frozen -> commissions) and a message telling the distributor why. The caller holds
    ``commissions.lock_distributor``. Returns the amount taken (<= ``amount``)."""
    if amount <= 0:
        return 0
    open_ones = list(
        await session.scalars(
            select(Withdrawal)
            .where(
                Withdrawal.distributor_id == distributor_id,
                Withdrawal.currency == currency,
                Withdrawal.status == WithdrawalStatus.REQUESTED,
            )
            .order_by(case((Withdrawal.source == "commission", 0), else_=1), Withdrawal.id.desc())
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )
    if not open_ones:
        return 0
    number = await session.scalar(select(Order.number).where(Order.id == order_id)) or str(order_id)
    taken = 0
    for withdrawal in open_ones:
        cut = min(amount - taken, withdrawal.amount)
        if cut <= 0:
            continue
        before = withdrawal.amount
        withdrawal.amount = before - cut
        withdrawal.reason = (
            f"{Money(cut, currency)} of {Money(before, currency)} taken back: commission of order {number}, refunded"
        )[:MAX_REASON]
        if withdrawal.amount == 0:
            withdrawal.status = WithdrawalStatus.REJECTED
            withdrawal.decided_by = CLAWBACK_ACTOR
            withdrawal.decided_at = utcnow()
        await session.flush()
        await ledger.post(
            session,
            f"withdrawal:{withdrawal.id}:clawback:{ref}",
            "withdrawal_reduced",
            ledger.transfer(ledger.distributor(distributor_id, "frozen"), ledger.COMMISSIONS, cut, currency),
            order_id=order_id,
            distributor_id=distributor_id,
            memo=f"withdrawal {withdrawal.id} reduced from {before} to {withdrawal.amount}: order {number} refunded",
        )
        await _tell_distributor(
            session,
            withdrawal,
            "withdrawal_reduced",
            {"before": before, "taken": cut, "after": withdrawal.amount, "order": number},
        )
        taken += cut
        if taken >= amount:
            break
    return taken


async def _tell_distributor(
    session: AsyncSession, withdrawal: Withdrawal, kind: str, extra: dict[str, object] | None = None
) -> None:
    user_id = await session.scalar(select(Distributor.user_id).where(Distributor.id == withdrawal.distributor_id))
    if user_id is None:
        return
    language = await session.scalar(select(User.language).where(User.id == user_id))
    outbox.enqueue(
        session,
        chat_id=int(user_id),
        kind=kind,
        payload={"withdrawal_id": withdrawal.id, **(extra or {})},
        language=language or "zh",
    )


async def get(session: AsyncSession, withdrawal_id: int) -> tuple[Withdrawal, Distributor]:
    row = (
        await session.execute(
            select(Withdrawal, Distributor)
            .join(Distributor, Distributor.id == Withdrawal.distributor_id)
            .where(Withdrawal.id == withdrawal_id)
        )
    ).first()
    if row is None:
        raise NotFound(f"no withdrawal {withdrawal_id}", key="err_books.no_withdrawal", withdrawal=withdrawal_id)
    return row[0], row[1]


async def list_withdrawals(
    session: AsyncSession, *, status: str | None = None, user_id: int | None = None, limit: int = 50
) -> list[tuple[Withdrawal, Distributor]]:
    """Newest first; ``user_id`` limits them to one distributor's own."""
    if status is not None and status not in {s.value for s in WithdrawalStatus}:
        choices = ", ".join(s.value for s in WithdrawalStatus)
        raise InvalidInput(f"status is one of {choices}", key="err_books.bad_status", choices=choices)
    query = select(Withdrawal, Distributor).join(Distributor, Distributor.id == Withdrawal.distributor_id)
    if status is not None:
        query = query.where(Withdrawal.status == status)
    if user_id is not None:
        query = query.where(Distributor.user_id == user_id)
    rows = await session.execute(query.order_by(Withdrawal.id.desc()).limit(limit))
    return [(w, d) for w, d in rows.all()]
