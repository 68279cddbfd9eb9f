"""Orders placed by partner systems through the open API.

An API order is placed by the same ``place_order`` as a chat order (pricing on the partner's
channel, its allocation, the risk rules with the end customer's IP and device), paid at once
from the partner's prepaid balance in the same transaction, then paid and fulfilled through
``Fulfiller.submit`` like any provider's payment. The partner's own order number is the
idempotency key: the same number with the same request returns the same order, with another
request it is a ``Conflict``. Concurrent twins wait on the unique ``partner_orders`` row, so
twenty identical requests make one order.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.books import ledger
from quanyi.core.catalog.products import SELLABLE_KINDS
from quanyi.core.distributors.accounts import MAX_BULK
from quanyi.core.errors import Conflict, HeldForReview, InvalidInput, NotForSale, NotFound, RiskRefusal
from quanyi.core.models import (
    JournalEntry,
    Order,
    Partner,
    PartnerOrder,
    Posting,
    Product,
    Recharge,
    Refund,
    RefundStatus,
)
from quanyi.core.partners import accounts as partners
from quanyi.core.payments import partner as partner_pay
from quanyi.core.platform import outbox
from quanyi.core.risk import rules as risk
from quanyi.core.sales import redeem
from quanyi.core.sales.orders import MAX_ITEMS, Item, place_items
from quanyi.core.stock import allocations as channels
from quanyi.core.stock.items import order_codes

if TYPE_CHECKING:
    from quanyi.core.wiring import Wiring

ORDER_NO_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
SKU_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_ACCOUNT = 128
UNTRACKED = "untracked"
MAX_DEVICE = 128
MAX_IP = 64


@dataclass(frozen=True)
class OrderRequest:
    order_no: str
    items: tuple[Item, ...]
    client_ip: str | None = None
    device_id: str | None = None

    def fingerprint(self) -> str:
        """What makes two requests "the same order": the products, quantities and accounts."""
        shape: list[Any] = [[i.sku, i.quantity, i.account or ""] for i in self.items]
        canonical = json.dumps(shape[0] if len(shape) == 1 else shape, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


_FIELDS = {"order_no", "sku", "quantity", "account", "items", "client_ip", "device_id"}
_ITEM_FIELDS = {"sku", "quantity", "account"}


def _text(body: dict[str, Any], name: str, limit: int, where: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value.strip()) <= limit or not value.isprintable():
        raise InvalidInput(
            f"{where}: printable text of at most {limit} characters",
            key="err_partners.bad_text",
            field=where,
            most=limit,
        )
    return value.strip()


def _item(body: Any, where: str) -> Item:
    if not isinstance(body, dict):
        raise InvalidInput(
            f"{where}: an object with sku, quantity, account",
            key="err_partners.bad_item",
            field=where,
            names="sku, quantity, account",
        )
    unknown = sorted(set(body) - _ITEM_FIELDS)
    if unknown:
        raise InvalidInput(
            f"unknown field {unknown[0]!r}", key="err_partners.unknown_field", field=f"{where}{unknown[0]}"
        )
    sku, quantity = body.get("sku"), body.get("quantity", 1)
    if not isinstance(sku, str) or not SKU_RE.fullmatch(sku):
        raise InvalidInput(f"{where}sku: a product code", key="err_partners.bad_sku", field=f"{where}sku")
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= MAX_BULK:
        raise InvalidInput(
            f"{where}quantity: a whole number from 1 to {MAX_BULK}",
            key="err_partners.bad_quantity",
            field=f"{where}quantity",
            most=MAX_BULK,
        )
    return Item(sku, quantity, _text(body, "account", MAX_ACCOUNT, f"{where}account"))


def parse_request(body: Any) -> OrderRequest:
    """The create-order body, checked field by field; ``InvalidInput`` names the first wrong one.

    One product: ``sku``, ``quantity``, ``account`` at the top; several: ``items``, a list of
    such objects (at most ``MAX_ITEMS``, each product once)."""
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object", key="err_partners.bad_body")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}", key="err_partners.unknown_field", field=unknown[0])
    order_no = body.get("order_no")
    if not isinstance(order_no, str) or not ORDER_NO_RE.fullmatch(order_no):
        raise InvalidInput(
            "order_no: 1-64 characters of A-Z a-z 0-9 _ . : -", key="err_partners.bad_order_no", field="order_no"
        )
    if "items" in body:
        if any(name in body for name in _ITEM_FIELDS):
            raise InvalidInput(
                "give either items or sku/quantity/account, not both", key="err_partners.items_and_item", field="items"
            )
        listed = body["items"]
        if not isinstance(listed, list) or not 1 <= len(listed) <= MAX_ITEMS:
            raise InvalidInput(
                f"items: a list of 1 to {MAX_ITEMS} products",
                key="err_partners.bad_items",
                field="items",
                most=MAX_ITEMS,
            )
        items = tuple(_item(entry, f"items[{n}].") for n, entry in enumerate(listed))
        if len({i.sku for i in items}) != len(items):
            raise InvalidInput(
                "items: each product once (add up its quantity)", key="err_partners.duplicate_items", field="items"
            )
    else:
        items = (_item({k: body[k] for k in _ITEM_FIELDS if k in body}, ""),)
    return OrderRequest(
        order_no,
        items,
        _text(body, "client_ip", MAX_IP, "client_ip"),
        _text(body, "device_id", MAX_DEVICE, "device_id"),
    )


@dataclass(frozen=True)
class Placed:
    order_id: int
    created: bool  # False: an earlier request with this order number made it


async def create(core: Wiring, partner_id: int, req: OrderRequest) -> Placed:
    """Place, pay and fulfil one API order (see the module docstring)."""
    fingerprint = req.fingerprint()
    try:
        async with core.db.transaction() as session:
            earlier = await _earlier(session, partner_id, req, fingerprint)
            if earlier is not None:
                return Placed(earlier, created=False)
            partner = await session.get(Partner, partner_id)
            if partner is None or not partner.active or partner.channel_id is None:
                raise NotFound("no such partner", key="err_partners.no_such_partner")
            link = PartnerOrder(
                partner_id=partner_id,
                external_no=req.order_no,
                request_hash=fingerprint,
                # No URL to tell: kept out of the webhook job's look-up of orders not told yet.
                notified_status=None if partner.webhook_url else UNTRACKED,
            )
            session.add(link)
            await session.flush()  # a concurrent twin waits here until this one commits
            placed = await place_items(
                session,
                core.payments,
                buyer=None,
                items=req.items,
                method=partner_pay.NAME,
                reservation=timedelta(minutes=core.settings.reservation_minutes),
                max_quantity=MAX_BULK,
                channel=partner.code,  # a partner's channel has its code (partners.add_partner)
                client_ip=req.client_ip,
                device_id=req.device_id,
                risk_secret=core.keyring.lookup_key,
            )
            order = placed.order
            if order.currency != partner.currency:
                raise InvalidInput(
                    f"the order is priced in {order.currency}; the balance is in {partner.currency}",
                    key="err_partners.currency_mismatch",
                    field="items",
                    priced=order.currency,
                    held=partner.currency,
                )
            link.order_id = order.id
            await partners.adjust_balance(
                session,
                partner,
                -order.amount,
                ref=partner_pay.debit_ref(order.number),
                kind="partner_order",
                counter=ledger.clearing(partner_pay.NAME),
                order_id=order.id,
                memo=req.order_no,
            )
            event = partner_pay.event_for(order)
    except IntegrityError:
        # The twin committed first: answer with its order (or a conflict).
        async with core.db.read() as session:
            earlier = await _earlier(session, partner_id, req, fingerprint)
        if earlier is None:
            raise
        return Placed(earlier, created=False)
    except RiskRefusal as exc:
        decision_id = await risk.record(core.db, exc)
        if isinstance(exc, HeldForReview) and not exc.details.get("again"):
            # Operators decide in chat (Approve / Reject); the partner retries with the same order_no.
            async with core.db.transaction() as session:
                await outbox.enqueue_admins(
                    session, core.settings.admin_id_list, "admin_risk_hold", {"decision_id": decision_id}
                )
            core.outbox_wakeup.set()
        raise
    await core.fulfiller.submit(event)
    return Placed(order.id, created=True)


async def _earlier(session: AsyncSession, partner_id: int, req: OrderRequest, fingerprint: str) -> int | None:
    row = (
        await session.execute(
            select(PartnerOrder.order_id, PartnerOrder.request_hash).where(
                PartnerOrder.partner_id == partner_id, PartnerOrder.external_no == req.order_no
            )
        )
    ).first()
    if row is None:
        return None
    if row.request_hash != fingerprint:
        raise Conflict(
            f"order_no {req.order_no} was used for a different order",
            key="err_partners.order_no_reused",
            order_no=req.order_no,
        )
    assert row.order_id is not None
    return int(row.order_id)


async def find(session: AsyncSession, partner_id: int, order_no: str) -> int:
    """The order id behind a partner's own number; ``NotFound`` for another partner's number."""
    if not ORDER_NO_RE.fullmatch(order_no):  # never stored; and PostgreSQL refuses a NUL in text
        raise NotFound("no such order", key="err_partners.no_such_order")
    order_id = await session.scalar(
        select(PartnerOrder.order_id).where(PartnerOrder.partner_id == partner_id, PartnerOrder.external_no == order_no)
    )
    if order_id is None:
        raise NotFound(f"no order {order_no}", key="err_partners.no_order", order_no=order_no)
    return int(order_id)


# --- what a partner sees of an order ----------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def view(core: Wiring, session: AsyncSession, partner: Partner, order_id: int) -> dict[str, Any]:
    """The order as the API shows it: status, amounts, and once delivered its codes and links
    (decrypted for this answer; each decryption is on the audit trail). ``session`` must write."""
    order = await session.get(Order, order_id)
    link = await session.scalar(select(PartnerOrder).where(PartnerOrder.order_id == order_id))
    if order is None or link is None or link.partner_id != partner.id:
        raise NotFound("no such order", key="err_partners.no_such_order")
    actor = f"partner:{partner.code}"
    codes = await order_codes(session, core.keyring, order.id, actor=actor, purpose="api")
    links = await redeem.order_links(session, core.keyring, order.id, actor=actor, purpose="api")
    recharges = {
        r.order_line_id: r for r in await session.scalars(select(Recharge).where(Recharge.order_id == order.id))
    }
    refunded = int(
        await session.scalar(
            select(func.coalesce(func.sum(Refund.amount), 0)).where(
                Refund.order_id == order.id, Refund.status.in_([RefundStatus.SUCCEEDED, RefundStatus.MANUAL])
            )
        )
        or 0
    )
    lines = []
    for line in sorted(order.lines, key=lambda item: item.line_no):
        entry: dict[str, Any] = {
            "line_no": line.line_no,
            "sku": line.sku,
            "name": line.name,
            "quantity": line.quantity,
            "amount": line.amount,
        }
        if line.id in codes:
            entry["codes"] = [{"serial": c.serial, "code": c.secret} for c in codes[line.id]]
        line_links = [lk for lk in links if lk.order_line_id == line.id]
        if line_links:
            entry["links"] = [
                {
                    "url": redeem.link(core.settings.public_url, lk.token),
                    "entitlement": lk.entitlement,
                    "uses": lk.uses,
                    "max_uses": lk.max_uses,
                    "expires_at": _iso(lk.expires_at),
                    "state": lk.state.value,
                }
                for lk in line_links
            ]
        recharge = recharges.get(line.id)
        if recharge is not None:
            entry["recharge"] = {"status": recharge.status, "account": recharge.account}
            if recharge.resolution:
                entry["recharge"]["resolution"] = recharge.resolution
            fallback = await _fallback_codes(core, session, order, recharge.id, actor)
            if fallback is not None:
                entry["recharge"]["fallback"] = fallback
        lines.append(entry)
    return {
        "order_no": link.external_no,
        "number": order.number,
        "status": order.status,
        "currency": order.currency,
        "amount": order.amount,
        "list_amount": order.list_amount,
        "discount_amount": order.discount_amount,
        "refunded_amount": refunded,
        "failure_reason": order.failure_reason,
        "created_at": _iso(order.created_at),
        "paid_at": _iso(order.paid_at),
        "delivered_at": _iso(order.delivered_at),
        "lines": lines,
    }


async def _fallback_codes(
    core: Wiring, session: AsyncSession, order: Order, recharge_id: int, actor: str
) -> dict[str, Any] | None:
    """The card key delivered instead of a failed recharge (``recharge._fallback`` writes it as
    an order of its own, keyed by the recharge), for the partner that bought the recharge."""
    spare = await session.scalar(
        select(Order).where(Order.idempotency_key == f"recharge-fallback:{recharge_id}", Order.channel == order.channel)
    )
    if spare is None:
        return None
    codes = await order_codes(session, core.keyring, spare.id, actor=actor, purpose="api")
    sku = next((line.sku for line in spare.lines), None)
    return {
        "number": spare.number,
        "sku": sku,
        "codes": [{"serial": c.serial, "code": c.secret} for found in codes.values() for c in found],
    }


def summary(order: Order, external_no: str, refunded: int = 0) -> dict[str, Any]:
    """An order without its codes (webhooks carry this; the partner fetches codes itself)."""
    return {
        "order_no": external_no,
        "number": order.number,
        "status": order.status,
        "currency": order.currency,
        "amount": order.amount,
        "refunded_amount": refunded,
        "failure_reason": order.failure_reason,
    }


# --- products, balance, statement -----------------------------------------------------------


async def products(session: AsyncSession, partner: Partner) -> list[dict[str, Any]]:
    """What the partner can buy: its prices and what its allocation has left (None: no cap)."""
    channel = await channels.get_channel(session, partner.code)
    entries = list(
        await session.scalars(
            select(Product)
            .where(Product.active.is_(True), Product.kind.in_(list(SELLABLE_KINDS)))
            .order_by(Product.sort_order, Product.id)
        )
    )
    out: list[dict[str, Any]] = []
    counts = await channels.sellable_counts(session, entries, channel=channel.code)
    for product in entries:
        try:
            await channels.sale_terms(session, product, channel=channel.code, needs_allocation=product.kind != "bundle")
        except (NotFound, NotForSale):
            continue
        units, price = counts.get(product.id, (0, product.price))
        out.append(
            {
                "sku": product.sku,
                "name": product.name,
                "kind": product.kind,
                "price": price,
                "currency": product.currency,
                "available": None if units >= channels.UNCAPPED else units,
                "needs_account": product.kind in ("direct_recharge", "manual"),
                "account_hint": product.account_hint,
            }
        )
    return out


@dataclass(frozen=True)
class StatementLine:
    at: datetime
    kind: str
    amount: int  # into the balance positive, out negative
    ref: str
    order_no: str | None
    memo: str


@dataclass(frozen=True)
class Statement:
    currency: str
    opening: int
    closing: int
    lines: list[StatementLine] = field(default_factory=list)


async def statement(
    session: AsyncSession, partner: Partner, *, start: datetime, end: datetime, limit: int = 500
) -> Statement:
    """The partner's balance movements in [start, end) from the ledger, with opening and
    closing balances (closing = opening + the sum of the lines when no line was cut off)."""
    account = partners.balance_account(partner.id)
    # A liability: money owed to the partner is a credit (negative posting).
    before = await session.scalar(
        select(func.coalesce(func.sum(Posting.amount), 0))
        .join(JournalEntry, JournalEntry.ref == Posting.entry_ref)
        .where(Posting.account == account, Posting.currency == partner.currency, JournalEntry.created_at < start)
    )
    rows = await session.execute(
        select(JournalEntry.created_at, JournalEntry.kind, Posting.amount, JournalEntry.ref, JournalEntry.memo)
        .join(JournalEntry, JournalEntry.ref == Posting.entry_ref)
        .where(
            Posting.account == account,
            Posting.currency == partner.currency,
            JournalEntry.created_at >= start,
            JournalEntry.created_at < end,
        )
        .order_by(JournalEntry.created_at, JournalEntry.id)
        .limit(limit)
    )
    lines = []
    for at, kind, amount, ref, memo in rows.all():
        order_no = memo if kind == "partner_order" else None
        lines.append(StatementLine(at, kind, -int(amount), ref, order_no, memo or ""))
    opening = -int(before or 0)
    closing = opening + sum(line.amount for line in lines)
    return Statement(partner.currency, opening, closing, lines)
