"""The console's order search and order file: what an operator finds by number, partner number,
buyer or card key, the lists the dashboard points at (failed orders to refund, recharges stuck or
failed), and one order with everything that happened to it. Never its codes, except through
``reveal_codes`` (audited).

Every search runs on indexes over a million orders: the typed text is resolved first to order and
buyer ids (a card key through its keyed lookup hash, never by decrypting), then one page of orders
is read through ``created_at`` / ``(status, created_at)`` / ``(channel, created_at)`` / ``amount``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Row, and_, func, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.errors import InvalidInput
from quanyi.core.models import (
    AuditRecord,
    Channel,
    Order,
    OrderLine,
    OrderStatus,
    OutboxMessage,
    Partner,
    PartnerOrder,
    Product,
    Recharge,
    RechargeStatus,
    RedeemToken,
    Refund,
    RefundStatus,
    StockItem,
    User,
    utcnow,
)
from quanyi.core.platform import audit, outbox
from quanyi.core.platform.audit_views import TrailRecord, trail_record
from quanyi.core.platform.crypto import KeyRing
from quanyi.core.sales import order_lookup, redeem
from quanyi.core.sales.orders import delivered_codes, get_order
from quanyi.core.sales.views import MyCodes

PER_PAGE = 50
EXPORT_LIMIT = 50_000  # rows in one CSV export; narrow the search for more
XLSX_LIMIT = 10_000  # a spreadsheet file is built in memory: ~4 s and 50 MB per 10,000 rows
SORTS = ("-created", "created", "-amount", "amount", "-status", "status")
ATTENTION = ("failed", "recharge_stuck", "recharge_failed")
STATUSES = tuple(s.value for s in OrderStatus)
_DONE = (RefundStatus.SUCCEEDED, RefundStatus.MANUAL)


@dataclass(frozen=True)
class OrderQuery:
    """A search as the query string carries it; ``start`` / ``end`` are days (inclusive) in the
    operator's time zone."""

    text: str = ""
    status: str = ""
    channel: str = ""
    start: date | None = None
    end: date | None = None
    attention: str = ""
    sort: str = "-created"
    page: int = 1


@dataclass(frozen=True)
class OrderListRow:
    number: str
    created_at: datetime
    status: str
    channel: str
    user_id: int | None
    username: str | None
    items: str  # "name x2, name x1"
    amount: int
    currency: str
    payment_method: str
    paid_at: datetime | None
    failure_reason: str | None


@dataclass(frozen=True)
class OrderPage:
    rows: tuple[OrderListRow, ...]
    page: int
    has_next: bool
    # What the typed text matched: any of number, partner, buyer, username, code (empty: no text).
    matched: tuple[str, ...] = ()


@dataclass(frozen=True)
class PriceLine:
    sku: str
    quantity: int
    unit_price: int
    list_amount: int
    payable: int
    bundle: bool  # the line is a bundle sold as one


@dataclass(frozen=True)
class PriceCut:
    kind: str  # promotion | coupon
    name: str
    code: str | None
    amount: int
    capped: bool


@dataclass(frozen=True)
class PriceBreakdown:
    """The pricing snapshot the order was placed with (list price, promotions, coupon, bundles)."""

    currency: str
    list_amount: int
    discount_amount: int
    payable: int
    lines: tuple[PriceLine, ...]
    cuts: tuple[PriceCut, ...]
    charged_currency: str | None = None
    charged: int | None = None


@dataclass(frozen=True)
class RechargeAttempt:
    line_no: int | None
    supplier: str
    supplier_order_number: str
    account: str
    amount: int
    currency: str
    status: str
    attempts: int
    queries: int
    failure_reason: str | None
    resolution: str | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class ChatMessage:
    """One chat message about the order (its delivery, a refund notice...) and its outbox state."""

    id: int
    kind: str
    status: str  # pending | sent | dead
    attempts: int
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True)
class OrderFile:
    """One order as the console shows it: the sheet (lines, payments, refunds, recharges, manual
    tasks) and around it what it was priced at, its chat messages and its audit trail."""

    sheet: order_lookup.OrderSheet
    channel: str
    username: str | None
    chat_id: int | None
    language: str
    list_amount: int
    discount_amount: int
    paid_at: datetime | None
    delivered_at: datetime | None
    partner_order_no: str | None
    price: PriceBreakdown | None
    recharges: tuple[RechargeAttempt, ...]
    messages: tuple[ChatMessage, ...]
    trail: tuple[TrailRecord, ...]
    line_amounts: dict[int, int] = field(default_factory=dict)  # line number -> amount still refundable
    codes_revealable: bool = False
    resendable: bool = False


# --- the search --------------------------------------------------------------------------------


def day_bounds(start: date | None, end: date | None, tz: str) -> tuple[datetime | None, datetime | None]:
    """The UTC instants a range of local days covers: [start 00:00, the day after end 00:00)."""
    zone = ZoneInfo(tz)
    low = datetime.combine(start, time(), tzinfo=zone) if start else None
    high = datetime.combine(end + timedelta(days=1), time(), tzinfo=zone) if end else None
    return low, high


async def _text_matches(session: AsyncSession, keyring: KeyRing, text: str) -> tuple[set[int], set[int], list[str]]:
    """The order ids and buyer ids the typed text names, and what it matched as."""
    order_ids: set[int] = set()
    user_ids: set[int] = set()
    matched: list[str] = []
    text = text.strip()
    bare = text.removeprefix("@")
    if 0 < len(text) <= 64 and text.isascii() and text.isalnum():
        found = await session.scalar(select(Order.id).where(Order.number.in_({text, text.upper()})))
        if found is not None:
            order_ids.add(found)
            matched.append("number")
    if 0 < len(text) <= 64 and "\x00" not in text:
        # (partner_id, external_no) is unique: one index probe per partner, never a scan.
        partners = list(await session.scalars(select(Partner.id)))
        if partners:
            ids = set(
                await session.scalars(
                    select(PartnerOrder.order_id).where(
                        PartnerOrder.partner_id.in_(partners),
                        PartnerOrder.external_no == text,
                        PartnerOrder.order_id.is_not(None),
                    )
                )
            )
            if ids:
                order_ids |= {i for i in ids if i is not None}
                matched.append("partner")
    buyer = int(text) if text.isdigit() and len(text) <= 18 else None
    if buyer is not None and await session.scalar(select(Order.id).where(Order.user_id == buyer).limit(1)):
        user_ids.add(buyer)
        matched.append("buyer")
    if bare and len(bare) <= 64 and "\x00" not in bare and not bare.isdigit():
        names = set(await session.scalars(select(User.id).where(User.username == bare)))
        if not names and text.startswith("@"):  # Telegram names are case-blind; the index is not
            names = set(await session.scalars(select(User.id).where(func.lower(User.username) == bare.lower())))
        if names:
            user_ids |= names
            matched.append("username")
    if 0 < len(text) <= 512 and "\x00" not in text:
        # A card key is found by its keyed hash, exactly as an import finds a duplicate.
        sold = await session.scalar(
            select(StockItem.order_id).where(StockItem.secret_hash == keyring.lookup_hash(text))
        )
        if sold is not None:
            order_ids.add(sold)
            matched.append("code")
    return order_ids, user_ids, matched


def _attention(kind: str, now: datetime, stuck_after: timedelta) -> ColumnElement[bool]:
    if kind == "failed":
        return Order.status == OrderStatus.FAILED
    if kind == "recharge_stuck":
        stuck = select(Recharge.order_id).where(
            Recharge.status.in_([RechargeStatus.PENDING, RechargeStatus.PROCESSING]),
            Recharge.created_at < now - stuck_after,
        )
        return Order.id.in_(stuck)
    refunded = (
        select(Refund.id)
        .where(
            Refund.order_id == Recharge.order_id,
            Refund.order_line_id == Recharge.order_line_id,
            Refund.status.in_(_DONE),
        )
        .exists()
    )
    failed = select(Recharge.order_id).where(
        Recharge.status == RechargeStatus.FAILED,
        or_(Recharge.resolution.is_(None), Recharge.resolution != "fallback"),
        not_(refunded),
    )
    return Order.id.in_(failed)


def _order_by(sort: str) -> list[Any]:
    desc = sort.startswith("-")
    key = sort.lstrip("-")
    columns: list[Any] = [Order.status, Order.created_at, Order.id]
    if key == "created":
        columns = [Order.created_at, Order.id]
    elif key == "amount":
        columns = [Order.amount, Order.id]
    return [c.desc() if desc else c.asc() for c in columns]


def check_query(query: OrderQuery) -> None:
    """Refuse what no search means (``InvalidInput`` with the ``field``)."""
    if query.status and query.status not in STATUSES:
        raise InvalidInput("no such status", key="console_orders.err_status", field="status")
    if query.attention and query.attention not in ATTENTION:
        raise InvalidInput("no such list", key="console_orders.err_attention", field="attention")
    if query.channel and not (len(query.channel) <= 64 and query.channel.isprintable()):
        raise InvalidInput("no such channel", key="console_orders.err_channel", field="channel")
    if query.sort not in SORTS:
        raise InvalidInput("no such order", key="console_orders.err_sort", field="sort")
    if query.start and query.end and query.start > query.end:
        raise InvalidInput("the range ends before it starts", key="console_orders.err_range", field="from")
    if not 1 <= query.page <= 100_000:
        raise InvalidInput("no such page", key="console_orders.err_page", field="page")


async def _selection(
    session: AsyncSession, keyring: KeyRing, query: OrderQuery, *, tz: str, stuck_after: timedelta
) -> tuple[Any, list[str]]:  # (a Select or None, what the text matched)
    check_query(query)
    statement = select(*_COLUMNS)
    matched: list[str] = []
    if query.text.strip():
        order_ids, user_ids, matched = await _text_matches(session, keyring, query.text)
        if not order_ids and not user_ids:
            return None, []
        named = []
        if order_ids:
            named.append(Order.id.in_(sorted(order_ids)))
        if user_ids:
            named.append(Order.user_id.in_(sorted(user_ids)))
        statement = statement.where(or_(*named))
    if query.status:
        statement = statement.where(Order.status == query.status)
    if query.channel:
        statement = statement.where(Order.channel == query.channel)
    low, high = day_bounds(query.start, query.end, tz)
    if low is not None:
        statement = statement.where(Order.created_at >= low)
    if high is not None:
        statement = statement.where(Order.created_at < high)
    if query.attention:
        statement = statement.where(_attention(query.attention, utcnow(), stuck_after))
    return statement.order_by(*_order_by(query.sort)), matched


async def search(
    session: AsyncSession,
    keyring: KeyRing,
    query: OrderQuery,
    *,
    tz: str,
    stuck_after: timedelta,
    per_page: int = PER_PAGE,
) -> OrderPage:
    """One page of the orders the query names, and whether another page follows."""
    statement, matched = await _selection(session, keyring, query, tz=tz, stuck_after=stuck_after)
    if statement is None:
        return OrderPage((), query.page, False, ())
    found = (await session.execute(statement.offset((query.page - 1) * per_page).limit(per_page + 1))).all()
    rows = await _rows(session, found[:per_page])
    return OrderPage(tuple(rows), query.page, len(found) > per_page, tuple(matched))


async def export_rows(
    session: AsyncSession,
    keyring: KeyRing,
    query: OrderQuery,
    *,
    tz: str,
    stuck_after: timedelta,
    limit: int = EXPORT_LIMIT,
) -> list[OrderListRow]:
    """The first ``limit`` (at most ``EXPORT_LIMIT``) orders the query names, in its order; never a code."""
    statement, _ = await _selection(session, keyring, query, tz=tz, stuck_after=stuck_after)
    if statement is None:
        return []
    found = (await session.execute(statement.limit(max(1, min(limit, EXPORT_LIMIT))))).all()
    rows: list[OrderListRow] = []
    for start in range(0, len(found), 1000):
        rows += await _rows(session, found[start : start + 1000])
    return rows


# What a list row reads of an order: plain columns, no ORM objects (an export reads thousands).
_COLUMNS = (
    Order.id,
    Order.number,
    Order.created_at,
    Order.status,
    Order.channel,
    Order.user_id,
    Order.amount,
    Order.currency,
    Order.payment_method,
    Order.paid_at,
    Order.failure_reason,
)


async def _rows(session: AsyncSession, found: Sequence[Row[Any]]) -> list[OrderListRow]:
    buyers = {o.user_id for o in found if o.user_id is not None}
    names = dict((await session.execute(select(User.id, User.username).where(User.id.in_(buyers)))).all())
    items: dict[int, list[str]] = {}
    lines = await session.execute(
        select(OrderLine.order_id, OrderLine.name, OrderLine.quantity)
        .where(OrderLine.order_id.in_([o.id for o in found]))
        .order_by(OrderLine.order_id, OrderLine.line_no)
    )
    for order_id, name, quantity in lines.all():
        items.setdefault(order_id, []).append(f"{name} x{quantity}")
    return [
        OrderListRow(
            number=o.number,
            created_at=o.created_at,
            status=o.status,
            channel=o.channel,
            user_id=o.user_id,
            username=names.get(o.user_id) if o.user_id is not None else None,
            items=", ".join(items.get(o.id, [])),
            amount=o.amount,
            currency=o.currency,
            payment_method=o.payment_method,
            paid_at=o.paid_at,
            failure_reason=o.failure_reason,
        )
        for o in found
    ]


async def channels(session: AsyncSession) -> list[str]:
    """The channels orders can be filtered by (the channel table's codes and the bot)."""
    codes = list(await session.scalars(select(Channel.code).order_by(Channel.code)))
    return codes if "bot" in codes else ["bot", *codes]


async def attention_counts(session: AsyncSession, *, stuck_after: timedelta) -> dict[str, int]:
    """How many orders each attention list holds (what the dashboard links to)."""
    now = utcnow()
    counts = {}
    for kind in ATTENTION:
        counts[kind] = int(
            await session.scalar(select(func.count()).select_from(Order).where(_attention(kind, now, stuck_after))) or 0
        )
    return counts


# --- one order ---------------------------------------------------------------------------------


def price_breakdown(snapshot: str | None, bundle_skus: set[str]) -> PriceBreakdown | None:
    """The pricing snapshot (``Breakdown.snapshot``) read back; None for an order without one."""
    if not snapshot:
        return None
    try:
        data = json.loads(snapshot)
        charged = data.get("charged") or {}
        return PriceBreakdown(
            currency=str(data["currency"]),
            list_amount=int(data["list"]),
            discount_amount=sum(int(a["amount"]) for a in data.get("adjustments", [])),
            payable=int(data["payable"]),
            lines=tuple(
                PriceLine(
                    str(ln["sku"]),
                    int(ln["quantity"]),
                    int(ln["unit_price"]),
                    int(ln["list"]),
                    int(ln["payable"]),
                    str(ln["sku"]) in bundle_skus,
                )
                for ln in data.get("lines", [])
            ),
            cuts=tuple(
                PriceCut(str(a["kind"]), str(a["name"]), a.get("code"), int(a["amount"]), bool(a.get("capped")))
                for a in data.get("adjustments", [])
            ),
            charged_currency=charged.get("currency"),
            charged=int(charged["amount"]) if charged.get("amount") is not None else None,
        )
    except (ValueError, KeyError, TypeError):
        return None


async def _messages(session: AsyncSession, order: Order) -> list[ChatMessage]:
    """The messages written to the buyer's chat about this order (the payload names it)."""
    if order.chat_id is None:
        return []
    rows = await session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.chat_id == order.chat_id, OutboxMessage.created_at >= order.created_at)
        .order_by(OutboxMessage.id)
        .limit(500)
    )
    found = []
    for message in rows:
        try:
            payload = json.loads(message.payload)
        except ValueError:
            continue
        if isinstance(payload, dict) and payload.get("order_id") == order.id:
            found.append(
                ChatMessage(
                    message.id,
                    message.kind,
                    message.status,
                    message.attempts,
                    message.last_error,
                    message.created_at,
                    message.sent_at,
                )
            )
    return found


async def _trail(session: AsyncSession, order: Order, refund_ids: Sequence[int]) -> list[TrailRecord]:
    """The order's records, its refunds' and its links' uses (ix_audit_log_object), newest first."""
    named = [and_(AuditRecord.object_type == "order", AuditRecord.object_id == order.number)]
    tokens = [str(i) for i in await session.scalars(select(RedeemToken.id).where(RedeemToken.order_id == order.id))]
    for kind, ids in (("refund", [str(i) for i in refund_ids]), ("redeem_token", tokens)):
        if ids:
            named.append(and_(AuditRecord.object_type == kind, AuditRecord.object_id.in_(ids)))
    currency = order.currency
    rows = await session.scalars(select(AuditRecord).where(or_(*named)).order_by(AuditRecord.seq.desc()).limit(200))
    return [trail_record(r, currency) for r in rows]


async def order_file(session: AsyncSession, number: str) -> OrderFile:
    """One order's file; ``NotFound`` for an unknown number."""
    sheet = await order_lookup.order_sheet(session, number)
    order = await get_order(session, number)
    username = await session.scalar(select(User.username).where(User.id == order.user_id)) if order.user_id else None
    partner_no = await session.scalar(select(PartnerOrder.external_no).where(PartnerOrder.order_id == order.id))
    bundle_ids = {line.bundle_id for line in order.lines if line.bundle_id is not None}
    bundle_skus = set(await session.scalars(select(Product.sku).where(Product.id.in_(bundle_ids))))
    line_nos = {line.id: line.line_no for line in order.lines}
    recharges = [
        RechargeAttempt(
            line_nos.get(r.order_line_id),
            r.supplier,
            r.supplier_order_number,
            r.account,
            r.amount,
            r.currency,
            r.status,
            r.attempts,
            r.queries,
            r.failure_reason,
            r.resolution,
            r.created_at,
            r.finished_at,
        )
        for r in await session.scalars(select(Recharge).where(Recharge.order_id == order.id).order_by(Recharge.id))
    ]
    refund_ids = [r.id for r in sheet.refunds]
    refundable = {line.line_no: line.amount for line in sheet.lines if not line.refunded}
    return OrderFile(
        sheet=sheet,
        channel=order.channel,
        username=username,
        chat_id=order.chat_id,
        language=order.language,
        list_amount=order.list_amount,
        discount_amount=order.discount_amount,
        paid_at=order.paid_at,
        delivered_at=order.delivered_at,
        partner_order_no=partner_no,
        price=price_breakdown(order.pricing, bundle_skus),
        recharges=tuple(recharges),
        messages=tuple(await _messages(session, order)),
        trail=tuple(await _trail(session, order, refund_ids)),
        line_amounts=refundable,
        codes_revealable=order.status == OrderStatus.DELIVERED,
        resendable=order.status == OrderStatus.DELIVERED and order.chat_id is not None,
    )


async def reveal_codes(session: AsyncSession, keyring: KeyRing, number: str, *, actor: str, front: str) -> MyCodes:
    """A delivered order's codes and links in the clear, for an operator who asked for them: the
    trail records who (``reveal codes``, the number of codes, never a code), and each decryption."""
    order = await get_order(session, number)
    if order.status != OrderStatus.DELIVERED:
        raise InvalidInput(
            "only a delivered order has codes to show", key="console_orders.err_not_delivered", status=order.status
        )
    lines = await delivered_codes(session, keyring, order, actor=actor, purpose="reveal")
    issued = await redeem.order_links(session, keyring, order.id, actor=actor, purpose="reveal")
    await audit.record(
        session,
        actor=actor,
        front=front,
        action="reveal codes",
        object_type="order",
        object_id=order.number,
        new={"codes": sum(len(line.codes) for line in lines), "links": len(issued)},
    )
    return MyCodes(
        number=order.number,
        status=order.status,
        lines=tuple(lines),
        links=tuple(tuple(i for i in issued if i.order_line_id == line.id) for line in order.lines),
    )


async def resend_delivery(session: AsyncSession, number: str, *, actor: str, front: str) -> None:
    """Send a delivered order's codes to its buyer's chat again, through the outbox (the codes are
    decrypted only when the message goes out); audited."""
    order = await get_order(session, number)
    if order.status != OrderStatus.DELIVERED:
        raise InvalidInput(
            "only a delivered order can be sent again", key="console_orders.err_not_delivered", status=order.status
        )
    if order.chat_id is None:
        raise InvalidInput("this order has no chat to send to", key="console_orders.err_no_chat")
    outbox.enqueue(
        session, chat_id=order.chat_id, kind="delivery", payload={"order_id": order.id}, language=order.language
    )
    await audit.record(
        session,
        actor=actor,
        front=front,
        action="resend delivery",
        object_type="order",
        object_id=order.number,
        new={"chat_id": order.chat_id},
    )
