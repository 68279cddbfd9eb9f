"""Commissions: each order line's shares for its distributor chain, fixed when it is placed.

The chain starts at the distributor whose customer the buyer is (level 1) and follows
parents upwards. Per line, in the product's currency:

- ``level`` commission for level N = ``line base amount * rate_N // 10_000`` (rate in basis
  points). Rounding: each share is rounded down to the minor unit, separately per line and
  level; the fractions stay with the operator. Nothing is ever rounded up.
- ``margin`` for the seller, when the sale was on its own storefront: ``(resale price - its
  cost) * quantity`` (never negative).

The base amount is what the line brought in after promotions and coupons (``net_amount``:
the channel price less the line's share of the order's discounts, in the product currency
even when the order was paid in Stars); lines written before pricing use list price times
quantity. Discounts are the operator's: they lower level commissions with the base but not
a seller's margin. Rows are written
``awaiting`` with the order, become ``pending`` when it is paid, ``void`` if it never is,
``reversed`` when the line is refunded; the finance settlement turns pending into available.

Who earns: only active distributors other than the buyer. A level whose distributor is
inactive, or is the buyer himself (a parent who became its own child's customer), earns
nothing, and neither does a margin for such a seller; the chain skips it and goes on upwards,
the levels above keeping their own numbers and rates (the skipped share stays with the
operator). A distributor deactivated between placement and payment earns nothing either: its
shares of the order go ``void`` when the order is paid (``VOID_INACTIVE``, run by ``earn_many``
for one order or for a batch).

Taking back (``claw_back``): a pending share comes back from the pending account. A confirmed
one comes back from what the distributor may withdraw, then from its open withdrawals (each
reduced, or refused when nothing is left of it, and the distributor told why), and only what
is still missing becomes its receivable. Whatever is later credited to its available
commission pays the receivable down first (``pay_down``), and no withdrawal can touch what
it owes (``withdrawals.available``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.books import ledger
from quanyi.core.errors import InvalidInput, NotFound
from quanyi.core.models import (
    Commission,
    CommissionRate,
    CommissionStatus,
    Distributor,
    Order,
    OrderLine,
    utcnow,
)
from quanyi.core.platform.db import on_connection

BASIS_POINTS = 10_000
MAX_LEVELS = 10


@dataclass(frozen=True)
class Share:
    distributor_id: int
    level: int
    kind: str
    base_amount: int
    rate_bp: int
    amount: int


async def rates(session: AsyncSession) -> dict[int, int]:
    rows = await session.execute(select(CommissionRate.level, CommissionRate.rate_bp))
    return dict(rows.all())


async def set_rate(session: AsyncSession, level: int, rate_bp: int) -> None:
    """Commission for chain level ``level`` (1 = the buyer's own distributor), in basis points."""
    if not 1 <= level <= MAX_LEVELS:
        raise InvalidInput(f"level must be between 1 and {MAX_LEVELS}", key="err_books.bad_level", most=MAX_LEVELS)
    if not 0 <= rate_bp <= BASIS_POINTS:
        raise InvalidInput("rate must be between 0% and 100%", key="err_books.rate_range")
    row = await session.get(CommissionRate, level)
    if row is None:
        session.add(CommissionRate(level=level, rate_bp=rate_bp))
    else:
        row.rate_bp = rate_bp
    await session.flush()


def parse_rate(text: str) -> int:
    """``5%``, ``5``, ``2.5%`` or ``250bp`` -> basis points, with no float on the way."""
    value = (text or "").strip().lower()
    if value.endswith("bp"):
        digits = value[:-2].strip()
        # isdigit() alone lets "²" through, which int() refuses with a ValueError.
        if not (digits.isascii() and digits.isdigit()):
            raise InvalidInput(
                "rate: a percentage like 5% or 2.5%, or basis points like 250bp", key="err_books.bad_rate"
            )
        return int(digits)
    value = value.rstrip("%").strip()
    whole, _, frac = value.partition(".")
    if not whole.isdigit() or (frac and (not frac.isdigit() or len(frac) > 2)) or not value.isascii():
        raise InvalidInput("rate: a percentage like 5% or 2.5%, or basis points like 250bp", key="err_books.bad_rate")
    return int(whole) * 100 + int((frac or "0").ljust(2, "0"))


def format_rate(rate_bp: int) -> str:
    whole, frac = divmod(rate_bp, 100)
    return f"{whole}%" if not frac else f"{whole}.{frac:02d}".rstrip("0") + "%"


async def chain(
    session: AsyncSession, head_id: int, *, levels: int = MAX_LEVELS, buyer_user_id: int | None = None
) -> list[int | None]:
    """One entry per level from ``head_id`` upwards, at most ``levels``: the distributor's id
    where it earns, None where it earns nothing (inactive, or the buyer's own distributor
    record). Such a level is skipped, not the end of the chain; a cycle ends it."""
    ids: list[int | None] = []
    seen: set[int] = set()
    current: int | None = head_id
    while current is not None and len(ids) < levels and current not in seen:
        seen.add(current)
        row = (
            await session.execute(
                select(Distributor.parent_id, Distributor.user_id, Distributor.active).where(Distributor.id == current)
            )
        ).first()
        if row is None:
            break
        earns = bool(row.active) and (buyer_user_id is None or row.user_id != buyer_user_id)
        ids.append(current if earns else None)
        current = row.parent_id
    return ids


def shares_for_line(
    chain_ids: Sequence[int | None],
    level_rates: dict[int, int],
    *,
    list_price: int,
    quantity: int,
    seller_cost: int | None,
    base: int | None = None,
) -> list[Share]:
    """The shares of one line: pure arithmetic, so the rule above is tested on its own.

    ``chain_ids[n]`` earns level n + 1; None earns nothing there (see ``chain``).
    ``base`` is what the line brought in after discounts (default: list price x quantity);
    level commissions are a share of it, the seller's margin is its resale price less its cost."""
    if base is None:
        base = list_price * quantity
    out: list[Share] = []
    if seller_cost is not None and chain_ids and chain_ids[0] is not None:
        margin = max(0, (list_price - seller_cost) * quantity)
        if margin:
            out.append(Share(chain_ids[0], 1, "margin", base, 0, margin))
    for level, distributor_id in enumerate(chain_ids, start=1):
        if distributor_id is None:
            continue
        rate_bp = level_rates.get(level, 0)
        amount = base * rate_bp // BASIS_POINTS
        if amount > 0:
            out.append(Share(distributor_id, level, "level", base, rate_bp, amount))
    return out


async def record_for_line(
    session: AsyncSession,
    order: Order,
    line: OrderLine,
    *,
    head_id: int | None,
    seller_cost: int | None,
    currency: str,
    status: CommissionStatus = CommissionStatus.AWAITING,
) -> list[Share]:
    """Snapshot the line's commissions as they stand at the time of sale."""
    if head_id is None:
        return []
    level_rates = await rates(session)
    depth = max([lvl for lvl, bp in level_rates.items() if bp > 0], default=1)
    # Nobody earns on his own purchase, at any level.
    ids = await chain(session, head_id, levels=depth, buyer_user_id=order.user_id)
    shares = shares_for_line(
        ids,
        level_rates,
        list_price=line.list_price if line.list_price is not None else line.unit_price,
        quantity=line.quantity,
        seller_cost=seller_cost,
        base=line.net_amount,
    )
    now = utcnow()
    for share in shares:
        session.add(
            Commission(
                order_id=order.id,
                order_line_id=line.id,
                distributor_id=share.distributor_id,
                level=share.level,
                kind=share.kind,
                base_amount=share.base_amount,
                rate_bp=share.rate_bp,
                amount=share.amount,
                currency=currency,
                status=status.value,
                created_at=now,
                updated_at=now,
            )
        )
    if shares:
        await session.flush()
    return shares


async def mark(
    session: AsyncSession,
    order_id: int,
    to: CommissionStatus,
    *,
    frm: Iterable[CommissionStatus] = (CommissionStatus.AWAITING,),
    line_ids: list[int] | None = None,
) -> None:
    query = update(Commission).where(Commission.order_id == order_id, Commission.status.in_([s.value for s in frm]))
    if line_ids is not None:
        query = query.where(Commission.order_line_id.in_(line_ids))
    await session.execute(query.values(status=to.value, updated_at=utcnow()))


def earned_ref(order_id: int) -> str:
    return f"commission:{order_id}:earned"


# At payment, the shares of distributors deactivated since the order was placed are void:
# one statement, run by ``earn_many`` (for ``earn``'s one order or a settled batch) before it
# turns the rest pending. Binds: ``ids`` (order ids), ``now``.
VOID_INACTIVE = (
    update(Commission)
    .where(
        Commission.order_id.in_(bindparam("ids", expanding=True)),
        Commission.status == CommissionStatus.AWAITING.value,
        Commission.distributor_id.in_(select(Distributor.id).where(Distributor.active.is_(False))),
    )
    .values(status=CommissionStatus.VOID.value, updated_at=bindparam("now"))
)


async def earn(session: AsyncSession, order_id: int) -> None:
    """The order is paid: its shares become pending, and the ledger owes them to their distributors."""
    await on_connection(session, lambda conn: earn_many(conn, [order_id]))


# Built once: on the payment path building a statement costs more than running it.
_MAKE_PENDING = (
    update(Commission)
    .where(
        Commission.order_id.in_(bindparam("ids", expanding=True)),
        Commission.status == CommissionStatus.AWAITING.value,
    )
    .values(status=CommissionStatus.PENDING.value, updated_at=bindparam("now"))
)
_EARNED = (
    select(Commission.order_id, Commission.distributor_id, Commission.currency, func.sum(Commission.amount))
    .where(
        Commission.order_id.in_(bindparam("ids", expanding=True)),
        Commission.status == CommissionStatus.PENDING.value,
    )
    .group_by(Commission.order_id, Commission.distributor_id, Commission.currency)
)


def earn_many(
    conn: Connection,
    order_ids: Collection[int],
    now: datetime | None = None,
    *,
    along: Sequence[ledger.Entry] = (),
) -> None:
    """Many orders are paid: their shares become pending (void for distributors deactivated
    since), and the ledger owes them to their distributors, one entry per order.

    ``along``: the caller's own entries of the same transaction (a settled batch's payments),
    posted first in the same two statements, since on the payment path each statement is a
    round trip."""
    now = now or utcnow()
    ids = {"ids": list(order_ids), "now": now}
    conn.execute(VOID_INACTIVE, ids)
    conn.execute(_MAKE_PENDING, ids)
    legs: dict[int, list[ledger.Leg]] = {}
    for order_id, distributor_id, currency, amount in conn.execute(_EARNED, {"ids": ids["ids"]}).all():
        legs.setdefault(order_id, []).extend(
            ledger.transfer(ledger.COMMISSIONS, ledger.distributor(distributor_id, "pending"), int(amount), currency)
        )
    earned = [
        ledger.Entry(earned_ref(oid), "commission_earned", order_legs, order_id=oid) for oid, order_legs in legs.items()
    ]
    ledger.post_many(conn, [*along, *earned], now)


async def lock_distributor(session: AsyncSession, distributor_id: int) -> None:
    """Queue on the distributor's row: every change of its available, frozen and receivable
    pockets (a withdrawal, its decision, a claw-back, a settlement) takes this lock first, so
    none of them reads a pocket another is changing. SQLite has one writer anyway."""
    await session.execute(select(Distributor.id).where(Distributor.id == distributor_id).with_for_update())


async def receivable(session: AsyncSession, distributor_id: int, currency: str) -> int:
    """What the distributor owes us for commission taken back after it was paid out (>= 0)."""
    return max(0, await ledger.balance(session, ledger.distributor(distributor_id, "receivable"), currency))


def pay_down_legs(distributor_id: int, currency: str, *, available: int, owed_to_us: int) -> list[ledger.Leg]:
    """Legs netting a receivable against the available commission: as much of ``owed_to_us``
    as ``available`` covers leaves both pockets."""
    netted = min(max(available, 0), max(owed_to_us, 0))
    return ledger.transfer(
        ledger.distributor(distributor_id, "available"),
        ledger.distributor(distributor_id, "receivable"),
        netted,
        currency,
    )


async def pay_down(session: AsyncSession, distributor_id: int, currency: str, *, ref: str, memo: str = "") -> int:
    """After a credit to the distributor's available commission: pay its receivable down from
    it first. The caller holds ``lock_distributor``. Returns the amount netted."""
    owed_to_us = await receivable(session, distributor_id, currency)
    if not owed_to_us:
        return 0
    have = await ledger.owed(session, ledger.distributor(distributor_id, "available"), currency)
    legs = pay_down_legs(distributor_id, currency, available=have, owed_to_us=owed_to_us)
    await ledger.post(session, ref, "commission_receivable_netted", legs, distributor_id=distributor_id, memo=memo)
    return legs[0].amount if legs else 0


async def claw_back(
    session: AsyncSession,
    order_id: int,
    *,
    ref: str,
    line_ids: list[int] | None = None,
    share: tuple[int, int] | None = None,
    status: CommissionStatus = CommissionStatus.REVERSED,
) -> int:
    """Take back an order's commissions (of ``line_ids``, or all), whole or a ``share``
    (numerator, denominator) of each — a partial refund takes back its part, rounded down.

    Awaiting shares (never earned) are just closed. Earned ones come back through the ledger
    from the pending account; confirmed ones (settled: available) from the distributor's
    available commission, then from its open withdrawals (``withdrawals.take_back``: reduced,
    or refused at zero, the distributor told why), and what is still missing becomes its
    receivable, paid down by whatever is credited to it later. Returns the amount taken back."""
    which = [
        Commission.order_id == order_id,
        Commission.status.in_([CommissionStatus.AWAITING, CommissionStatus.PENDING, CommissionStatus.AVAILABLE]),
    ]
    if line_ids is not None:
        which.append(Commission.order_line_id.in_(line_ids))
    legs: list[ledger.Leg] = []
    taken_total = 0
    confirmed: dict[tuple[int, str], int] = defaultdict(int)
    rows = (
        await session.execute(
            select(
                Commission.id,
                Commission.status,
                Commission.amount,
                Commission.clawed_back,
                Commission.distributor_id,
                Commission.currency,
            )
            .where(*which)
            .order_by(Commission.id)
            .with_for_update()
        )
    ).all()
    for row in rows:
        left = row.amount - row.clawed_back
        take = left if share is None else min(left, row.amount * share[0] // share[1])
        whole = share is None or row.clawed_back + take >= row.amount
        await session.execute(
            update(Commission)
            .where(Commission.id == row.id)
            .values(
                clawed_back=Commission.clawed_back + take,
                status=status.value if whole else Commission.status,
                updated_at=utcnow(),
            )
        )
        if row.status == CommissionStatus.AWAITING or take <= 0:
            continue
        taken_total += take
        if row.status == CommissionStatus.PENDING:
            legs += ledger.transfer(
                ledger.distributor(row.distributor_id, "pending"), ledger.COMMISSIONS, take, row.currency
            )
            continue
        confirmed[(row.distributor_id, row.currency)] += take
    # Distributors in id order: two claw-backs never wait on each other's rows in turn.
    for (distributor_id, currency), take in sorted(confirmed.items()):
        legs += await _recover(session, distributor_id, currency, take, ref=ref, order_id=order_id)
    await ledger.post(session, ref, "commission_clawback", legs, order_id=order_id)
    return taken_total


async def _recover(
    session: AsyncSession, distributor_id: int, currency: str, take: int, *, ref: str, order_id: int
) -> list[ledger.Leg]:
    """The legs taking ``take`` of confirmed commission back from one distributor: available
    first, then its open withdrawals (posted there, one entry each), the rest receivable."""
    from quanyi.core.books import withdrawals

    await lock_distributor(session, distributor_id)
    have = max(await ledger.owed(session, ledger.distributor(distributor_id, "available"), currency), 0)
    from_available = min(take, have)
    rest = take - from_available
    if rest:
        rest -= await withdrawals.take_back(session, distributor_id, currency, rest, ref=ref, order_id=order_id)
    return ledger.transfer(
        ledger.distributor(distributor_id, "available"), ledger.COMMISSIONS, from_available, currency
    ) + ledger.transfer(ledger.distributor(distributor_id, "receivable"), ledger.COMMISSIONS, rest, currency)


@dataclass(frozen=True)
class CommissionRow:
    commission: Commission
    order_number: str
    line_no: int
    distributor_user_id: int
    distributor_name: str


async def list_commissions(
    session: AsyncSession, *, distributor_id: int | None = None, order_number: str | None = None, limit: int = 500
) -> list[CommissionRow]:
    """Commission rows, newest first, for one distributor and/or one order (the operator's view)."""
    query = (
        select(Commission, Order.number, OrderLine.line_no, Distributor.user_id, Distributor.name)
        .join(Order, Order.id == Commission.order_id)
        .join(OrderLine, OrderLine.id == Commission.order_line_id)
        .join(Distributor, Distributor.id == Commission.distributor_id)
        .order_by(Commission.id.desc())
        .limit(limit)
    )
    if order_number is not None:
        if await session.scalar(select(Order.id).where(Order.number == order_number)) is None:
            raise NotFound(f"no order {order_number}", key="err_books.no_order", number=order_number)
        query = query.where(Order.number == order_number)
    if distributor_id is not None:
        query = query.where(Commission.distributor_id == distributor_id)
    rows = await session.execute(query)
    return [CommissionRow(c, number, line_no, user_id, name) for c, number, line_no, user_id, name in rows.all()]
