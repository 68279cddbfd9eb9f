"""Withdrawals: a distributor asks for its available commission or prepaid balance, the amount
is frozen at once, and an operator approves (the money leaves us) or rejects (it is unfrozen).

Requests of one distributor queue on its row (``SELECT ... FOR UPDATE``; SQLite has one writer),
so concurrent requests can never freeze more than is available. A decision is a conditional
UPDATE from ``requested``: two taps, two replicas or an approve racing a reject decide once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core import distributors, ledger, outbox
from quanyi.core.db import rowcount
from quanyi.core.distributors import InsufficientBalance
from quanyi.core.errors import AlreadyExists, InvalidInput, NotFound, QuanyiError
from quanyi.core.models import Distributor, User, Withdrawal, WithdrawalStatus, utcnow
from quanyi.core.money import Money

SOURCES = ("commission", "balance")
MAX_PAYOUT_ACCOUNT = 200
MAX_REASON = 255


class WithdrawalDecided(QuanyiError):
    """Approve or reject of a withdrawal that was decided already; nothing changed."""

    code = "withdrawal_decided"


@dataclass(frozen=True)
class Available:
    commission: int  # commission the distributor may withdraw
    balance: int  # prepaid balance
    frozen: int  # requested, not decided yet
    currency: str

    def of(self, source: str) -> int:
        return self.commission if source == "commission" else self.balance


async def available(session: AsyncSession, distributor: Distributor) -> Available:
    currency = distributor.currency
    balance = await session.scalar(select(Distributor.balance).where(Distributor.id == distributor.id))
    return Available(
        commission=await ledger.owed(session, ledger.distributor(distributor.id, "available"), currency),
        balance=int(balance or 0),
        frozen=await ledger.owed(session, ledger.distributor(distributor.id, "frozen"), currency),
        currency=currency,
    )


def check_payout_account(text: str) -> str:
    """The payout account as typed (trimmed): 1-200 printable characters."""
    account = (text or "").strip()
    if not 1 <= len(account) <= MAX_PAYOUT_ACCOUNT or not account.isprintable():
        raise InvalidInput(f"the payout account must be 1-{MAX_PAYOUT_ACCOUNT} printable characters")
    return account


def _check_reason(text: str) -> str:
    reason = (text or "").strip()
    if not 1 <= len(reason) <= MAX_REASON:
        raise InvalidInput(f"a rejection needs a reason of 1-{MAX_REASON} characters")
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
    available, and with ``AlreadyExists`` for a ``request_key`` used before (a double tap)."""
    if source not in SOURCES:
        raise InvalidInput("withdraw from commission or balance")
    if amount <= 0:
        raise InvalidInput("the amount must be more than zero")
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
        raise InsufficientBalance(
            f"{Money(amount, distributor.currency)} is more than the {Money(have, distributor.currency)} available",
            available=have,
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
        raise AlreadyExists("this withdrawal was requested already") from None
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


async def _decide(
    session: AsyncSession, withdrawal_id: int, status: WithdrawalStatus, actor: str, reason: str | None
) -> Withdrawal:
    decided = await session.execute(
        update(Withdrawal)
        .where(Withdrawal.id == withdrawal_id, Withdrawal.status == WithdrawalStatus.REQUESTED)
        .values(status=status, decided_by=actor[:64], decided_at=utcnow(), reason=reason)
        .execution_options(synchronize_session=False)
    )
    withdrawal = await session.scalar(
        select(Withdrawal).where(Withdrawal.id == withdrawal_id).execution_options(populate_existing=True)
    )
    if withdrawal is None:
        raise NotFound(f"no withdrawal {withdrawal_id}")
    if not rowcount(decided):
        raise WithdrawalDecided(
            f"withdrawal {withdrawal_id} was {withdrawal.status} already", status=str(withdrawal.status)
        )
    return withdrawal


async def approve(session: AsyncSession, withdrawal_id: int, *, actor: str) -> Withdrawal:
    """Pay the frozen amount out (frozen -> cash) and tell the distributor."""
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


async def reject(session: AsyncSession, withdrawal_id: int, *, actor: str, reason: str) -> Withdrawal:
    """Unfreeze the amount back where it came from and tell the distributor why."""
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


async def _tell_distributor(session: AsyncSession, withdrawal: Withdrawal, kind: str) -> None:
    user_id = await session.scalar(select(Distributor.user_id).where(Distributor.id == withdrawal.distributor_id))
    if user_id is None:
        return
    language = await session.scalar(select(User.language).where(User.id == user_id))
    outbox.enqueue(
        session, chat_id=int(user_id), kind=kind, payload={"withdrawal_id": withdrawal.id}, language=language or "zh"
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
        raise NotFound(f"no withdrawal {withdrawal_id}")
    return row[0], row[1]


async def list_withdrawals(
    session: AsyncSession, *, status: str | None = None, user_id: int | None = None, limit: int = 50
) -> list[tuple[Withdrawal, Distributor]]:
    """Newest first; ``user_id`` limits them to one distributor's own."""
    if status is not None and status not in {s.value for s in WithdrawalStatus}:
        raise InvalidInput(f"status is one of {', '.join(s.value for s in WithdrawalStatus)}")
    query = select(Withdrawal, Distributor).join(Distributor, Distributor.id == Withdrawal.distributor_id)
    if status is not None:
        query = query.where(Withdrawal.status == status)
    if user_id is not None:
        query = query.where(Distributor.user_id == user_id)
    rows = await session.execute(query.order_by(Withdrawal.id.desc()).limit(limit))
    return [(w, d) for w, d in rows.all()]
