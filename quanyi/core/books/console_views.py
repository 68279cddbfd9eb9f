"""The web console's finance screens: settled days, one withdrawal with its distributor's
accounts and journal entries, and an account's postings, as frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.books import ledger
from quanyi.core.books.settlement import FIGURES, Figures
from quanyi.core.books.views import Balance
from quanyi.core.books.withdrawals import get as get_withdrawal
from quanyi.core.distributors.views import WithdrawalView, withdrawal_view
from quanyi.core.models import JournalEntry, Posting, Settlement, SettlementRow

MOST = 500


@dataclass(frozen=True)
class SettledDay:
    """One business day's settlement and its totals (one line per currency)."""

    day: str
    status: str  # done | running
    finished_at: datetime | None
    totals: tuple[Figures, ...]


@dataclass(frozen=True)
class PostingLine:
    """One posting with the journal entry it belongs to."""

    ref: str
    kind: str
    memo: str
    account: str
    currency: str
    amount: int  # debit positive, minor units
    at: datetime


@dataclass(frozen=True)
class WithdrawalDetail:
    withdrawal: WithdrawalView
    distributor_id: int
    accounts: tuple[Balance, ...]  # the distributor's ledger accounts as they stand now
    postings: tuple[PostingLine, ...]  # what the withdrawal posted (freeze, payout, unfreeze)


async def settled_days(session: AsyncSession, *, limit: int = 60) -> list[SettledDay]:
    """The newest settled (or running) days first, with their total lines."""
    days = list(await session.scalars(select(Settlement).order_by(Settlement.day.desc()).limit(min(limit, MOST))))
    names = [d.day for d in days]
    totals: dict[str, list[Figures]] = {name: [] for name in names}
    if names:
        found = await session.scalars(
            select(SettlementRow)
            .where(SettlementRow.day.in_(names), SettlementRow.scope == "total")
            .order_by(SettlementRow.currency)
        )
        for r in found:
            totals[r.day].append(Figures(r.scope, r.key, r.currency, *(int(getattr(r, f)) for f in FIGURES)))
    return [SettledDay(d.day, d.status, d.finished_at, tuple(totals[d.day])) for d in days]


async def _postings(session: AsyncSession, which: ColumnElement[bool], limit: int) -> list[PostingLine]:
    rows = await session.execute(
        select(
            Posting.entry_ref,
            JournalEntry.kind,
            JournalEntry.memo,
            Posting.account,
            Posting.currency,
            Posting.amount,
            JournalEntry.created_at,
        )
        .join(JournalEntry, JournalEntry.ref == Posting.entry_ref)
        .where(which)
        .order_by(Posting.id.desc())
        .limit(min(limit, MOST))
    )
    return [PostingLine(ref, kind, memo or "", acc, cur, int(amt), at) for ref, kind, memo, acc, cur, amt, at in rows]


async def withdrawal_detail(session: AsyncSession, withdrawal_id: int) -> WithdrawalDetail:
    """A withdrawal (``NotFound``), its distributor's accounts and the entries it posted."""
    withdrawal, distributor = await get_withdrawal(session, withdrawal_id)
    prefix = f"distributor:{distributor.id}:"
    held = await ledger.balances(session, prefix)
    accounts = tuple(Balance(a, c, amount) for (a, c), amount in sorted(held.items()))
    ref = f"withdrawal:{withdrawal.id}:"
    postings = await _postings(session, Posting.entry_ref.startswith(ref, autoescape=True), MOST)
    return WithdrawalDetail(withdrawal_view(withdrawal, distributor), distributor.id, accounts, tuple(postings))


async def account_postings(session: AsyncSession, account: str, *, limit: int = 100) -> list[PostingLine]:
    """An account's newest postings first."""
    return await _postings(session, Posting.account == account, limit)
