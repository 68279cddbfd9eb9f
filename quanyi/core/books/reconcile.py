"""Reconciliation: a payment provider's statement (CSV) held against our payments and refunds.

The format is in docs/reconcile.md. A statement is checked whole before anything is compared:
a malformed file gives an error naming its line and no report.
"""

from __future__ import annotations

import csv
import enum
import io
import re
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.errors import InvalidInput
from quanyi.core.models import Order, Payment, Refund, RefundStatus
from quanyi.core.money import EXPONENTS, Money, parse_minor
from quanyi.core.platform import export
from quanyi.core.platform.db import Database

MAX_STATEMENT_BYTES = 10_000_000
# Our record of a payment comes a little after the provider's; a payment recorded this close
# outside the statement's first and last time is still expected on it.
DEFAULT_MARGIN = timedelta(minutes=5)
REQUIRED_COLUMNS = ("provider_txn_id", "order_number", "amount", "status", "time")
OPTIONAL_COLUMNS = ("currency",)
_AMOUNT = re.compile(r"^\d{1,12}(?:\.\d+)?$", re.ASCII)
# Bound on the values in one IN (...): SQLite and asyncpg both cap a statement's parameters.
_CHUNK = 500


class StatementError(InvalidInput):
    """The statement is malformed; nothing was compared."""

    code = "statement_malformed"

    def __init__(self, line: int | None, reason: str) -> None:
        super().__init__(f"line {line}: {reason}" if line is not None else reason, line=line)
        self.line = line
        self.reason = reason


class TheirStatus(enum.StrEnum):
    PAID = "paid"
    REFUNDED = "refunded"
    FAILED = "failed"
    PENDING = "pending"


# Words providers use, normalized (lower case, "-" and spaces as "_"). A partial refund counts
# as refunded; a chargeback is money taken back, so it does too.
_STATUS_WORDS: dict[str, TheirStatus] = {
    **dict.fromkeys(
        (
            "success",
            "succeeded",
            "successful",
            "paid",
            "complete",
            "completed",
            "settled",
            "captured",
            "trade_success",
            "trade_finished",
            "成功",
            "支付成功",
            "已支付",
        ),
        TheirStatus.PAID,
    ),
    **dict.fromkeys(
        (
            "refunded",
            "refund",
            "partially_refunded",
            "partial_refund",
            "chargeback",
            "reversed",
            "已退款",
            "退款成功",
        ),
        TheirStatus.REFUNDED,
    ),
    **dict.fromkeys(
        (
            "failed",
            "fail",
            "failure",
            "declined",
            "cancelled",
            "canceled",
            "closed",
            "trade_closed",
            "expired",
            "voided",
            "失败",
            "支付失败",
            "已关闭",
        ),
        TheirStatus.FAILED,
    ),
    **dict.fromkeys(
        ("pending", "processing", "wait_buyer_pay", "unpaid", "created", "待支付", "处理中"), TheirStatus.PENDING
    ),
}


class Section(enum.StrEnum):
    MISSING_WITH_THEM = "missing_with_them"  # paid with us, not with them
    MISSING_WITH_US = "missing_with_us"  # paid with them, not with us
    AMOUNT = "amount"
    STATUS = "status"


@dataclass(frozen=True, slots=True)
class StatementRow:
    line: int
    provider_txn_id: str
    order_number: str
    amount: str  # decimal text; read in the currency once it is known (the row's, else the order's)
    currency: str | None
    status: TheirStatus
    time: datetime  # UTC


@dataclass(frozen=True, slots=True)
class Mismatch:
    section: Section
    order_number: str
    provider_txn_id: str
    theirs: Money | None
    ours: Money | None
    their_status: str | None
    our_status: str | None
    line: int | None  # on the statement; None when the transaction is not on it

    @property
    def at_stake(self) -> Money:
        """What the section's total adds up: their amount minus ours for an amount mismatch
        in one currency, else the side that has it (ours first)."""
        if self.section == Section.AMOUNT and self.theirs and self.ours and self.theirs.currency == self.ours.currency:
            return Money(self.theirs.minor - self.ours.minor, self.ours.currency)
        amount = self.ours or self.theirs
        assert amount is not None  # every mismatch has at least one side
        return amount


@dataclass(frozen=True)
class Report:
    provider: str
    rows: int
    transactions: int
    start: datetime
    end: datetime
    matched: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def section(self, section: Section) -> list[Mismatch]:
        return [m for m in self.mismatches if m.section == section]

    def total(self, section: Section) -> list[Money]:
        """The section's amounts at stake, one sum per currency."""
        sums: dict[str, int] = defaultdict(int)
        for mismatch in self.section(section):
            sums[mismatch.at_stake.currency] += mismatch.at_stake.minor
        return [Money(minor, currency) for currency, minor in sorted(sums.items())]


# --- reading a statement ---------------------------------------------------------------------


def parse_statement(data: bytes, *, tz: str = "UTC") -> list[StatementRow]:
    """Read a statement; times without an offset are in ``tz``. Raises ``StatementError``."""
    if len(data) > MAX_STATEMENT_BYTES:
        raise StatementError(None, f"the file is larger than {MAX_STATEMENT_BYTES // 1_000_000} MB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise StatementError(data[: exc.start].count(b"\n") + 1, "not UTF-8 text") from None
    zone = ZoneInfo(tz)
    reader = csv.reader(io.StringIO(text, newline=""))
    columns: dict[str, int] | None = None
    rows: list[StatementRow] = []
    try:
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            if columns is None:
                columns = _header(cells, reader.line_num)
                continue
            rows.append(_row(cells, columns, reader.line_num, zone))
    except csv.Error as exc:
        raise StatementError(reader.line_num, f"not CSV ({exc})") from None
    if columns is None:
        raise StatementError(None, "the file is empty: it needs a header line and rows")
    if not rows:
        raise StatementError(None, "the statement has no transactions")
    return rows


def _header(cells: list[str], line: int) -> dict[str, int]:
    names = [cell.strip().lower() for cell in cells]
    columns: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in columns:
            raise StatementError(line, f"column {name} appears twice")
        if name:
            columns[name] = index
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise StatementError(
            line, f"missing column {', '.join(missing)} (the header needs {', '.join(REQUIRED_COLUMNS)})"
        )
    return columns


def _row(cells: list[str], columns: dict[str, int], line: int, zone: ZoneInfo) -> StatementRow:
    def cell(name: str) -> str:
        index = columns.get(name)
        if index is None:
            return ""
        if index >= len(cells):
            raise StatementError(line, f"{len(cells)} fields, the header has {len(columns)}")
        return cells[index].strip()

    txn, number = cell("provider_txn_id"), cell("order_number")
    if not txn and not number:
        raise StatementError(line, "no provider_txn_id and no order_number")
    amount = cell("amount")
    if not _AMOUNT.match(amount):
        raise StatementError(line, f"not an amount: {amount!r}")
    currency = cell("currency").upper() or None
    if currency is not None:
        if currency not in EXPONENTS:
            raise StatementError(line, f"unknown currency {currency!r}")
        _minor(amount, currency, line)
    word = cell("status")
    status = _STATUS_WORDS.get(re.sub(r"[\s-]+", "_", word.lower()))
    if status is None:
        raise StatementError(line, f"unknown status {word!r} (use paid, refunded, failed or pending)")
    return StatementRow(line, txn, number, amount, currency, status, _time(cell("time"), line, zone))


def _time(text: str, line: int, zone: ZoneInfo) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise StatementError(line, f"not an ISO 8601 time: {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone)
    return when.astimezone(UTC)


def _minor(amount: str, currency: str, line: int) -> int:
    try:
        return parse_minor(amount, currency)
    except InvalidInput as exc:
        raise StatementError(line, exc.message) from None


# --- comparing -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Theirs:
    """One transaction on the statement: its rows folded into one."""

    provider_txn_id: str
    order_number: str
    status: TheirStatus  # the latest row's
    row: StatementRow  # whose amount counts: the first paid row, else the latest


@dataclass(frozen=True, slots=True)
class _Ours:
    payment: Payment
    order_number: str
    status: str  # paid | refunded | refund_pending


def _fold(rows: Sequence[StatementRow]) -> list[_Theirs]:
    """A transaction on several rows (a payment, then its refund) is one transaction."""
    groups: dict[tuple[str, str], list[StatementRow]] = {}
    for row in rows:
        key = ("txn", row.provider_txn_id) if row.provider_txn_id else ("order", row.order_number)
        groups.setdefault(key, []).append(row)
    folded = []
    for group in groups.values():
        ordered = sorted(group, key=lambda r: (r.time, r.line))
        latest = ordered[-1]
        paid = [r for r in ordered if r.status == TheirStatus.PAID]
        number = next((r.order_number for r in ordered if r.order_number), "")
        folded.append(_Theirs(latest.provider_txn_id, number, latest.status, paid[0] if paid else latest))
    return folded


def _chunks(values: Iterable[str]) -> list[list[str]]:
    items = sorted(set(values))
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


async def _our_payments(
    session: AsyncSession, provider: str, theirs: list[_Theirs], start: datetime, end: datetime
) -> dict[int, _Ours]:
    """Our payments by this method in the window, or named on the statement by txn id or order."""
    query = select(Payment, Order.number).join(Order, Order.id == Payment.order_id).where(Payment.method == provider)
    found: dict[int, tuple[Payment, str]] = {}
    wheres = [Payment.created_at.between(start, end)]
    wheres += [Payment.provider_txn_id.in_(c) for c in _chunks(t.provider_txn_id for t in theirs if t.provider_txn_id)]
    wheres += [Order.number.in_(c) for c in _chunks(t.order_number for t in theirs if t.order_number)]
    for where in wheres:
        for payment, number in await session.execute(query.where(where)):
            found[payment.id] = (payment, number)
    refunded: dict[int, set[str]] = defaultdict(set)
    for chunk in _chunks(str(pid) for pid in found):
        ids = [int(pid) for pid in chunk]
        refunds = await session.execute(select(Refund.payment_id, Refund.status).where(Refund.payment_id.in_(ids)))
        for payment_id, status in refunds:
            refunded[payment_id].add(status)
    return {pid: _Ours(payment, number, _our_status(refunded[pid])) for pid, (payment, number) in found.items()}


def _our_status(refund_statuses: Collection[str]) -> str:
    # A manual refund was paid back outside the provider: its statement rightly still says paid.
    if RefundStatus.SUCCEEDED in refund_statuses:
        return "refunded"
    if RefundStatus.PENDING in refund_statuses:
        return "refund_pending"
    return "paid"


def _consistent(theirs: TheirStatus, ours: str) -> bool:
    if ours == "paid":
        return theirs == TheirStatus.PAID
    if ours == "refund_pending":  # we asked; the provider has not refunded yet
        return theirs == TheirStatus.PAID
    return theirs == TheirStatus.REFUNDED


async def reconcile(
    session: AsyncSession,
    rows: Sequence[StatementRow],
    provider: str,
    *,
    default_currency: str = "CNY",
    margin: timedelta = DEFAULT_MARGIN,
) -> Report:
    """Hold a parsed statement against our payments by ``provider`` (a payment method name)."""
    if not rows:
        raise StatementError(None, "the statement has no transactions")
    start, end = min(r.time for r in rows), max(r.time for r in rows)
    theirs = _fold(rows)
    matched = 0
    mismatches: list[Mismatch] = []
    ours = await _our_payments(session, provider, theirs, start - margin, end + margin)
    by_txn = {o.payment.provider_txn_id: o for o in ours.values()}
    by_number: dict[str, list[_Ours]] = defaultdict(list)
    for o in sorted(ours.values(), key=lambda o: (o.payment.outcome != "applied", o.payment.id)):
        by_number[o.order_number].append(o)

    pairs: dict[int, _Theirs] = {}
    unmatched: list[_Theirs] = []
    for t in theirs:
        found = by_txn.get(t.provider_txn_id) if t.provider_txn_id else None
        if found is not None:
            pairs[found.payment.id] = t
        else:
            unmatched.append(t)
    # Only then by order number: a second provider transaction for an order we recorded once
    # must not take the place of the one already matched.
    missing: list[_Theirs] = []
    for t in unmatched:
        found = next((o for o in by_number.get(t.order_number, []) if o.payment.id not in pairs), None)
        if found is not None:
            pairs[found.payment.id] = t
        elif t.status == TheirStatus.PAID:
            missing.append(t)
    currencies = await _order_currencies(session, [t.order_number for t in missing if not t.row.currency])
    for t in missing:
        currency = t.row.currency or currencies.get(t.order_number, default_currency)
        amount = Money(_minor(t.row.amount, currency, t.row.line), currency)
        mismatches.append(
            Mismatch(
                Section.MISSING_WITH_US, t.order_number, t.provider_txn_id, amount, None, t.status, None, t.row.line
            )
        )

    for payment_id, t in pairs.items():
        o = ours[payment_id]
        p = o.payment
        our_amount = Money(p.amount, p.currency)
        currency = t.row.currency or p.currency
        their_amount = Money(_minor(t.row.amount, currency, t.row.line), currency)
        number = o.order_number
        txn = p.provider_txn_id
        clean = True
        if their_amount != our_amount:
            mismatches.append(
                Mismatch(Section.AMOUNT, number, txn, their_amount, our_amount, t.status, o.status, t.row.line)
            )
            clean = False
        if not _consistent(t.status, o.status):
            mismatches.append(
                Mismatch(Section.STATUS, number, txn, their_amount, our_amount, t.status, o.status, t.row.line)
            )
            clean = False
        matched += clean

    for o in sorted(ours.values(), key=lambda o: o.payment.created_at):
        p = o.payment
        if p.id in pairs or not (start - margin <= _aware(p.created_at) <= end + margin):
            continue
        status = o.status if p.outcome == "applied" else p.outcome
        mismatches.append(
            Mismatch(
                Section.MISSING_WITH_THEM,
                o.order_number,
                p.provider_txn_id,
                None,
                Money(p.amount, p.currency),
                None,
                status,
                None,
            )
        )
    order = list(Section)
    mismatches.sort(key=lambda m: (order.index(m.section), m.line or 0, m.order_number))
    return Report(provider, len(rows), len(theirs), start, end, matched, mismatches)


async def _order_currencies(session: AsyncSession, numbers: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for chunk in _chunks(n for n in numbers if n):
        rows = await session.execute(select(Order.number, Order.currency).where(Order.number.in_(chunk)))
        found.update({number: currency for number, currency in rows})
    return found


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


async def reconcile_statement(
    db: Database,
    data: bytes,
    provider: str,
    *,
    methods: Collection[str],
    default_currency: str,
    tz: str,
    margin: timedelta = DEFAULT_MARGIN,
) -> Report:
    """Read a statement file and reconcile it. ``provider`` must be one of ``methods`` (the
    enabled payment methods) or have payments on record."""
    provider = provider.strip().lower()
    rows = parse_statement(data, tz=tz)
    async with db.read() as session:
        if provider not in methods:
            known = await session.scalar(select(Payment.id).where(Payment.method == provider).limit(1))
            if known is None:
                names = ", ".join(sorted(methods))
                if not names:
                    raise InvalidInput(
                        f"no payment method {provider!r} (methods: none enabled)",
                        key="err_books.no_method_none_enabled",
                        method=provider,
                    )
                raise InvalidInput(
                    f"no payment method {provider!r} (methods: {names})",
                    key="err_books.no_method",
                    method=provider,
                    choices=names,
                )
        return await reconcile(session, rows, provider, default_currency=default_currency, margin=margin)


# --- the mismatches as a file ----------------------------------------------------------------

CSV_COLUMNS = (
    "section",
    "order_number",
    "provider_txn_id",
    "their_amount",
    "their_currency",
    "our_amount",
    "our_currency",
    "their_status",
    "our_status",
    "statement_line",
)


def mismatches_csv(report: Report) -> bytes:
    # The ids and statuses come from a provider's file: the writer keeps them text.
    rows: list[list[export.Cell]] = [list(CSV_COLUMNS)]
    for m in report.mismatches:
        rows.append(
            [
                m.section.value,
                m.order_number,
                m.provider_txn_id,
                m.theirs,
                m.theirs.currency if m.theirs else "",
                m.ours,
                m.ours.currency if m.ours else "",
                m.their_status or "",
                m.our_status or "",
                m.line or None,
            ]
        )
    return export.csv_bytes(rows, line_end="\n")
