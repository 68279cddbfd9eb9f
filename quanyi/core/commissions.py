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
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core import ledger
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
        raise InvalidInput(f"level must be between 1 and {MAX_LEVELS}")
    if not 0 <= rate_bp <= BASIS_POINTS:
        raise InvalidInput("rate must be between 0% and 100%")
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
            raise InvalidInput("rate: a percentage like 5% or 2.5%, or basis points like 250bp")
        return int(digits)
    value = value.rstrip("%").strip()
    whole, _, frac = value.partition(".")
    if not whole.isdigit() or (frac and (not frac.isdigit() or len(frac) > 2)) or not value.isascii():
        raise InvalidInput("rate: a percentage like 5% or 2.5%, or basis points like 250bp")
    return int(whole) * 100 + int((frac or "0").ljust(2, "0"))


def format_rate(rate_bp: int) -> str:
    whole, frac = divmod(rate_bp, 100)
    return f"{whole}%" if not frac else f"{whole}.{frac:02d}".rstrip("0") + "%"


async def chain(session: AsyncSession, head_id: int, *, levels: int = MAX_LEVELS) -> list[int]:
    """Distributor ids from ``head_id`` upwards, at most ``levels`` of them."""
    ids: list[int] = []
    current: int | None = head_id
    while current is not None and len(ids) < levels and current not in ids:
        ids.append(current)
        current = await session.scalar(select(Distributor.parent_id).where(Distributor.id == current))
    return ids


def shares_for_line(
    chain_ids: list[int],
    level_rates: dict[int, int],
    *,
    list_price: int,
    quantity: int,
    seller_cost: int | None,
    base: int | None = None,
) -> list[Share]:
    """The shares of one line: pure arithmetic, so the rule above is tested on its own.

    ``base`` is what the line brought in after discounts (default: list price x quantity);
    level commissions are a share of it, the seller's margin is its resale price less its cost."""
    if base is None:
        base = list_price * quantity
    out: list[Share] = []
    if seller_cost is not None and chain_ids:
        margin = max(0, (list_price - seller_cost) * quantity)
        if margin:
            out.append(Share(chain_ids[0], 1, "margin", base, 0, margin))
    for level, distributor_id in enumerate(chain_ids, start=1):
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
    ids = await chain(session, head_id, levels=depth)
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


async def earn(session: AsyncSession, order_id: int) -> None:
    """The order is paid: its shares become pending, and the ledger owes them to their distributors."""
    await mark(session, order_id, CommissionStatus.PENDING)
    rows = await session.execute(
        select(Commission.distributor_id, Commission.currency, func.sum(Commission.amount))
        .where(Commission.order_id == order_id, Commission.status == CommissionStatus.PENDING)
        .group_by(Commission.distributor_id, Commission.currency)
    )
    legs: list[ledger.Leg] = []
    for distributor_id, currency, amount in rows.all():
        legs += ledger.transfer(
            ledger.COMMISSIONS, ledger.distributor(distributor_id, "pending"), int(amount), currency
        )
    await ledger.post(session, earned_ref(order_id), "commission_earned", legs, order_id=order_id)


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
    from the pending account, or from the available one when settlement confirmed them; what
    a distributor already withdrew becomes its receivable. Returns the amount taken back."""
    which = [
        Commission.order_id == order_id,
        Commission.status.in_([CommissionStatus.AWAITING, CommissionStatus.PENDING, CommissionStatus.AVAILABLE]),
    ]
    if line_ids is not None:
        which.append(Commission.order_line_id.in_(line_ids))
    legs: list[ledger.Leg] = []
    taken_total = 0
    available_left: dict[tuple[int, str], int] = {}
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
        key = (row.distributor_id, row.currency)
        if key not in available_left:
            account = ledger.distributor(row.distributor_id, "available")
            available_left[key] = max(await ledger.owed(session, account, row.currency), 0)
        from_available = min(take, available_left[key])
        available_left[key] -= from_available
        legs += ledger.transfer(
            ledger.distributor(row.distributor_id, "available"), ledger.COMMISSIONS, from_available, row.currency
        )
        legs += ledger.transfer(
            ledger.distributor(row.distributor_id, "receivable"),
            ledger.COMMISSIONS,
            take - from_available,
            row.currency,
        )
    await ledger.post(session, ref, "commission_clawback", legs, order_id=order_id)
    return taken_total


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
            raise NotFound(f"no order {order_number}")
        query = query.where(Order.number == order_number)
    if distributor_id is not None:
        query = query.where(Commission.distributor_id == distributor_id)
    rows = await session.execute(query)
    return [CommissionRow(c, number, line_no, user_id, name) for c, number, line_no, user_id, name in rows.all()]
