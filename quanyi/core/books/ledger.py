"""The double-entry ledger: every movement of money as a journal entry whose postings sum to
zero per currency, written in the transaction of the business change it records.

Accounts are named, not stored: a posting carries its account's code, and a balance is the
sum of the account's postings. Debits are positive. Assets (what providers and the operator
hold for us) carry positive balances; revenue and what we owe distributors negative ones —
``owed`` turns those into the positive figure a person reads.

    clearing:<method>                 money a payment provider holds for us (in: payments; out: refunds, fees)
    platform:cash                     the operator's own money (top-ups received, withdrawals paid out)
    platform:revenue                  sales (credit); refunds debit it back
    platform:fees                     provider fees (expense)
    platform:commissions              commissions earned by distributors (expense)
    platform:suspense                 money received for an order that could not take it (kept for review)
    distributor:<id>:balance          prepaid balance we owe the distributor
    distributor:<id>:pending          commissions earned, not yet confirmed
    distributor:<id>:available        commissions it may withdraw
    distributor:<id>:frozen           withdrawals requested, not yet decided
    distributor:<id>:receivable       commissions clawed back after it withdrew them (it owes us)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.models import JournalEntry, Posting, utcnow
from quanyi.core.platform.db import on_connection

CASH = "platform:cash"
REVENUE = "platform:revenue"
FEES = "platform:fees"
COMMISSIONS = "platform:commissions"
SUSPENSE = "platform:suspense"


def clearing(method: str) -> str:
    return f"clearing:{method}"


def distributor(distributor_id: int, pocket: str) -> str:
    """``pocket`` is balance | pending | available | frozen | receivable."""
    return f"distributor:{distributor_id}:{pocket}"


class Unbalanced(ValueError):
    """Postings that do not sum to zero per currency: a bug, never written."""


@dataclass(frozen=True)
class Leg:
    account: str
    amount: int  # debit positive, credit negative
    currency: str


def _check(legs: Sequence[Leg]) -> None:
    sums: dict[str, int] = defaultdict(int)
    for leg in legs:
        sums[leg.currency] += leg.amount
    unbalanced = {c: s for c, s in sums.items() if s != 0}
    if unbalanced:
        raise Unbalanced(f"postings do not balance: {unbalanced}")


def transfer(debit: str, credit: str, amount: int, currency: str) -> list[Leg]:
    """``amount`` moves into ``debit`` out of ``credit`` (nothing for zero)."""
    if amount == 0:
        return []
    return [Leg(debit, amount, currency), Leg(credit, -amount, currency)]


@dataclass(frozen=True)
class Fee:
    """A payment method's fee: basis points of the amount plus a fixed number of minor units."""

    basis_points: int = 0
    fixed: int = 0

    def of(self, amount: int) -> int:
        return min(amount, amount * self.basis_points // 10_000 + self.fixed) if amount > 0 else 0


def parse_fees(text: str) -> dict[str, Fee]:
    """``QUANYI_PROVIDER_FEES``: ``epay=0.6%,stripe=2.9%+30`` (the fixed part in minor units)."""
    from quanyi.core.books.commissions import parse_rate
    from quanyi.core.errors import ConfigError, InvalidInput

    fees: dict[str, Fee] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        method, sep, rule = item.partition("=")
        rate, _, fixed = rule.partition("+")
        try:
            if not sep or not method.strip():
                raise InvalidInput("method=rate", key="err_books.bad_fee")
            if fixed.strip() and not (fixed.strip().isascii() and fixed.strip().isdigit()):
                raise InvalidInput("fixed part", key="err_books.bad_fee")
            fees[method.strip()] = Fee(parse_rate(rate) if rate.strip() else 0, int(fixed.strip() or 0))
        except InvalidInput:
            raise ConfigError(
                f"QUANYI_PROVIDER_FEES: cannot read {item.strip()!r} (write epay=0.6%,stripe=2.9%+30)",
                key="err_books.bad_provider_fees",
                setting="QUANYI_PROVIDER_FEES",
                item=item.strip(),
            ) from None
    return fees


def payment_legs(method: str, amount: int, currency: str, fee: int, *, applied: bool) -> list[Leg]:
    """Money in from a provider: revenue when it paid an order, suspense when it is kept for
    review (a late or second payment); the provider's fee out of its clearing account."""
    legs = transfer(clearing(method), REVENUE if applied else SUSPENSE, amount, currency)
    return legs + transfer(FEES, clearing(method), fee, currency)


async def post(
    session: AsyncSession,
    ref: str,
    kind: str,
    legs: Iterable[Leg],
    *,
    order_id: int | None = None,
    distributor_id: int | None = None,
    memo: str = "",
) -> bool:
    """Record one journal entry; False (and nothing written) when ``ref`` was posted before.

    Runs inside the caller's transaction: the entry commits or rolls back with the change it
    records."""
    entry = Entry(ref, kind, tuple(legs), order_id=order_id, distributor_id=distributor_id, memo=memo)
    return bool(await on_connection(session, lambda conn: post_many(conn, [entry])))


@dataclass(frozen=True)
class Entry:
    """A journal entry to post: its legs and what it belongs to."""

    ref: str
    kind: str
    legs: Sequence[Leg]
    order_id: int | None = None
    distributor_id: int | None = None
    memo: str = ""


def post_many(conn: Connection, entries: Iterable[Entry], now: datetime | None = None) -> set[str]:
    """Record journal entries in two statements, whatever their number; returns the refs written.

    An entry with no legs is skipped; a ``ref`` posted before (or earlier in ``entries``) is
    skipped whole, its postings too, so posting twice never counts money twice. Raises
    ``Unbalanced`` before writing anything if an entry does not balance."""
    now = now or utcnow()
    rows: dict[str, dict[str, Any]] = {}
    legs_of: dict[str, list[Leg]] = {}
    for entry in entries:
        legs = [leg for leg in entry.legs if leg.amount != 0]
        _check(legs)
        ref = entry.ref[:128]
        if not legs or ref in rows:
            continue
        legs_of[ref] = legs
        rows[ref] = {
            "ref": ref,
            "kind": entry.kind,
            "order_id": entry.order_id,
            "distributor_id": entry.distributor_id,
            "memo": entry.memo[:255],
            "created_at": now,
        }
    if not rows:
        return set()
    created = set(conn.execute(_insert_entries(conn.dialect.name), list(rows.values())).scalars())
    postings = [
        {"entry_ref": ref, "account": leg.account, "currency": leg.currency, "amount": leg.amount, "created_at": now}
        for ref in rows
        if ref in created
        for leg in legs_of[ref]
    ]
    if postings:
        conn.execute(_INSERT_POSTINGS, postings)
    return created


_INSERT_POSTINGS = insert(Posting)
_INSERT_ENTRIES: dict[str, Any] = {}


def _insert_entries(dialect: str) -> Any:
    """``INSERT ... ON CONFLICT (ref) DO NOTHING RETURNING ref`` for the dialect, built once:
    building a statement costs more than running it on the payment path."""
    if dialect not in _INSERT_ENTRIES:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            statement: Any = pg_insert(JournalEntry)
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            statement = sqlite_insert(JournalEntry)
        _INSERT_ENTRIES[dialect] = statement.on_conflict_do_nothing(index_elements=[JournalEntry.ref]).returning(
            JournalEntry.ref
        )
    return _INSERT_ENTRIES[dialect]


async def balance(session: AsyncSession, account: str, currency: str) -> int:
    """The sum of the account's postings (debit positive)."""
    total = await session.scalar(
        select(func.coalesce(func.sum(Posting.amount), 0)).where(
            Posting.account == account, Posting.currency == currency
        )
    )
    return int(total or 0)


async def owed(session: AsyncSession, account: str, currency: str) -> int:
    """What we owe on a liability account (its credit balance as a positive number)."""
    return -await balance(session, account, currency)


async def balances(session: AsyncSession, prefix: str = "") -> dict[tuple[str, str], int]:
    """Every account's balance, by (account, currency), optionally those starting with ``prefix``."""
    query = select(Posting.account, Posting.currency, func.sum(Posting.amount)).group_by(
        Posting.account, Posting.currency
    )
    if prefix:
        query = query.where(Posting.account.startswith(prefix, autoescape=True))
    return {(a, c): int(s or 0) for a, c, s in (await session.execute(query)).all()}


@dataclass(frozen=True)
class CheckReport:
    entries: int
    postings: int
    unbalanced: list[tuple[str, str, int]]  # (entry ref, currency, sum)
    mismatches: list[str]  # other invariants that do not hold, in words

    @property
    def ok(self) -> bool:
        return not self.unbalanced and not self.mismatches


async def check(session: AsyncSession) -> CheckReport:
    """Prove the ledger: every entry sums to zero per currency, the whole ledger does, and the
    balances the business tables keep agree with the ledger's."""
    from quanyi.core.models import Distributor, Partner

    entries = int(await session.scalar(select(func.count()).select_from(JournalEntry)) or 0)
    postings = int(await session.scalar(select(func.count()).select_from(Posting)) or 0)
    rows = await session.execute(
        select(Posting.entry_ref, Posting.currency, func.sum(Posting.amount))
        .group_by(Posting.entry_ref, Posting.currency)
        .having(func.sum(Posting.amount) != 0)
        .limit(100)
    )
    unbalanced = [(ref, currency, int(total)) for ref, currency, total in rows.all()]
    mismatches: list[str] = []
    orphans = await session.scalar(
        select(func.count()).select_from(Posting).where(~Posting.entry_ref.in_(select(JournalEntry.ref)))
    )
    if orphans:
        mismatches.append(f"{orphans} postings belong to no journal entry")
    held = await balances(session, "distributor:")
    for dist_id, dist_balance, currency in (
        await session.execute(select(Distributor.id, Distributor.balance, Distributor.currency))
    ).all():
        in_ledger = -held.get((distributor(dist_id, "balance"), currency), 0)
        if in_ledger != dist_balance:
            mismatches.append(
                f"distributor {dist_id}: balance {dist_balance} on its row, {in_ledger} in the ledger ({currency})"
            )
    held = await balances(session, "partner:")
    for code, partner_id, partner_balance, currency in (
        await session.execute(select(Partner.code, Partner.id, Partner.balance, Partner.currency))
    ).all():
        in_ledger = -held.get((f"partner:{partner_id}:balance", currency), 0)
        if in_ledger != partner_balance:
            mismatches.append(
                f"partner {code}: balance {partner_balance} on its row, {in_ledger} in the ledger ({currency})"
            )
    return CheckReport(entries, postings, unbalanced, mismatches)
