"""Webhooks to partners: an event when an API order is delivered, fails or is refunded, signed
like the partner's own requests (``apisign``) and retried with backoff until it answers 2xx.

``detect`` turns order states into ``partner_webhooks`` rows; ``PartnerOrder.notified_status``
is how far the partner has been told (None, then ``delivered`` or ``failed``, then
``refunded``) and moves only by a conditional UPDATE, so concurrent runs add each event once.
``deliver_due`` claims due rows with a lease and POSTs their stored bytes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from quanyi.core.models import Order, OrderStatus, Partner, PartnerOrder, PartnerWebhook, Refund, RefundStatus, utcnow
from quanyi.core.partners import accounts as partners
from quanyi.core.partners import apisign
from quanyi.core.partners import orders as partner_orders
from quanyi.core.platform import outbox
from quanyi.core.platform.db import Database, locked_pick, rowcount, upsert

if TYPE_CHECKING:
    from quanyi.core.wiring import Wiring

log = logging.getLogger(__name__)

DELIVERED, FAILED, REFUNDED = "order.delivered", "order.failed", "order.refunded"
PENDING, SENT = "pending", "delivered"
EVENT_HEADER = "X-Quanyi-Event"
DELIVERY_HEADER = "X-Quanyi-Delivery"
FIRST_DELAY = 30.0
MAX_DELAY = 3600.0
ALERT_AFTER = 10  # failed attempts before operators hear of it (once); retries go on
TIMEOUT = 5.0
# Longer than a whole batch can take: CONCURRENCY posts at a time, each at most TIMEOUT.
LEASE = timedelta(minutes=2)
CONCURRENCY = 8
_DONE = (RefundStatus.SUCCEEDED, RefundStatus.MANUAL)


def backoff(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failed try: 30 s, doubled each time, at most an hour."""
    exponent = min(max(attempts, 1) - 1, 20)  # capped: 2**large is pointless past the hour
    return timedelta(seconds=min(MAX_DELAY, FIRST_DELAY * 2**exponent))


# --- detecting events ------------------------------------------------------------------------


def _fate(order: Order) -> str | None:
    """Whether the order was delivered or failed (also when refunded since), if either."""
    if order.status == OrderStatus.DELIVERED or order.delivered_at is not None:
        return DELIVERED
    if order.status == OrderStatus.FAILED or order.failure_reason is not None:
        return FAILED
    return None


def payload(event: str, order: Order, external_no: str, refunded: int) -> str:
    """The body of one event (``api_schemas.WEBHOOK_EVENT``); stored, and sent byte for byte."""
    body: dict[str, Any] = {"event": event, "order": partner_orders.summary(order, external_no, refunded)}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


async def detect(db: Database, *, limit: int = 500) -> int:
    """Add an event row for each API order (of a partner with a webhook URL) that reached a
    state its partner was not told yet; returns how many rows were added.

    ``order.delivered`` / ``order.failed`` once, when the order gets there; ``order.refunded``
    once, when its completed refunds first add up to more than zero (a later refund of the
    rest is not told again: the partner reads the order for the current figures).
    """
    refunded_total = (
        select(func.coalesce(func.sum(Refund.amount), 0))
        .where(Refund.order_id == Order.id, Refund.status.in_(_DONE))
        .scalar_subquery()
    )
    # Two cheap doors: orders not told anything yet that reached an end state, and orders
    # with a completed refund (driven by the refunds table, which only refunds grow).
    told_nothing = and_(
        PartnerOrder.notified_status.is_(None),
        Order.status.in_([OrderStatus.DELIVERED, OrderStatus.FAILED, OrderStatus.REFUNDED]),
    )
    refunded_since = and_(
        or_(PartnerOrder.notified_status.is_(None), PartnerOrder.notified_status != OrderStatus.REFUNDED),
        PartnerOrder.order_id.in_(select(Refund.order_id).where(Refund.status.in_(_DONE))),
    )
    added = 0
    async with db.transaction() as session:
        rows = (
            await session.execute(
                select(PartnerOrder.id, PartnerOrder.partner_id, PartnerOrder.external_no, PartnerOrder.notified_status)
                .add_columns(Order, refunded_total)
                .join(Order, Order.id == PartnerOrder.order_id)
                .join(Partner, Partner.id == PartnerOrder.partner_id)
                .where(Partner.webhook_url.is_not(None), or_(told_nothing, refunded_since))
                # One order of locking for every runner: concurrent runs wait, never deadlock.
                .order_by(PartnerOrder.id)
                .limit(limit)
            )
        ).all()
        for link_id, partner_id, external_no, told, order, refunded in rows:
            added += await _tell(session, link_id, partner_id, external_no, told, order, int(refunded or 0))
    return added


async def _tell(
    session: AsyncSession,
    link_id: int,
    partner_id: int,
    external_no: str,
    told: str | None,
    order: Order,
    refunded: int,
) -> int:
    events: list[str] = []
    stage = told
    if told is None:
        fate = _fate(order)
        if fate is None and order.status != OrderStatus.REFUNDED:
            # Partly refunded while still being fulfilled: told once it is delivered or failed,
            # so the refund never overtakes (and silences) the delivery.
            return 0
        if fate is not None:
            events.append(fate)
            stage = fate.removeprefix("order.")
    if refunded > 0 and told != OrderStatus.REFUNDED:
        events.append(REFUNDED)
        stage = OrderStatus.REFUNDED
    if not events:
        return 0
    unchanged = PartnerOrder.notified_status.is_(None) if told is None else PartnerOrder.notified_status == told
    moved = await session.execute(
        update(PartnerOrder)
        .where(PartnerOrder.id == link_id, unchanged)
        .values(notified_status=stage)
        .execution_options(synchronize_session=False)
    )
    if rowcount(moved) != 1:
        return 0  # another runner told it first
    now = utcnow()
    for event in events:
        await session.execute(
            upsert(session, PartnerWebhook)
            .values(
                partner_id=partner_id,
                order_id=order.id,
                event=event,
                payload=payload(event, order, external_no, refunded),
                status=PENDING,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["order_id", "event"])
        )
    return len(events)


# --- delivering them -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Due:
    id: int
    partner_id: int
    order_id: int
    event: str
    payload: str
    attempts: int


@dataclass(frozen=True)
class _Target:
    code: str
    url: str | None
    key: tuple[str, str] | None  # (access key, secret)


async def _claim(db: Database, limit: int, now: datetime) -> list[_Due]:
    earlier = aliased(PartnerWebhook)
    async with db.transaction() as session:
        pick = locked_pick(
            select(PartnerWebhook.id)
            .where(
                PartnerWebhook.status == PENDING,
                PartnerWebhook.next_attempt_at <= now,
                or_(PartnerWebhook.claimed_until.is_(None), PartnerWebhook.claimed_until < now),
                # An order's events go out in the order they happened.
                ~select(earlier.id)
                .where(
                    earlier.order_id == PartnerWebhook.order_id,
                    earlier.id < PartnerWebhook.id,
                    earlier.status == PENDING,
                )
                .exists(),
            )
            .order_by(PartnerWebhook.id)
            .limit(limit)
        )
        result = await session.execute(
            update(PartnerWebhook)
            .where(PartnerWebhook.id == pick.c.id)
            .values(claimed_until=now + LEASE)
            .returning(
                PartnerWebhook.id,
                PartnerWebhook.partner_id,
                PartnerWebhook.order_id,
                PartnerWebhook.event,
                PartnerWebhook.payload,
                PartnerWebhook.attempts,
            )
            .execution_options(synchronize_session=False)
        )
        return sorted((_Due(*row) for row in result.all()), key=lambda due: due.id)


async def _targets(core: Wiring, partner_ids: set[int]) -> dict[int, _Target]:
    out: dict[int, _Target] = {}
    async with core.db.read() as session:
        for partner in await session.scalars(select(Partner).where(Partner.id.in_(partner_ids))):
            key = await partners.signing_key(session, core.keyring, partner.id)
            out[partner.id] = _Target(partner.code, partner.webhook_url, key)
    return out


async def _post(http: aiohttp.ClientSession, target: _Target | None, due: _Due, now: datetime) -> str | None:
    """POST one event; None when the partner acknowledged it, else a short reason (no secrets)."""
    if target is None or not target.url:
        return "no webhook URL"
    if target.key is None:
        return "no active key to sign with"
    body = due.payload.encode("utf-8")
    parts = urlsplit(target.url)
    access_key, secret = target.key
    headers = apisign.headers(
        access_key, secret, "POST", parts.path or "/", parts.query, body, now=int(now.timestamp())
    )
    headers.update(
        {"Content-Type": "application/json", EVENT_HEADER: due.event, DELIVERY_HEADER: str(due.id)},
    )
    try:
        async with http.post(target.url, data=body, headers=headers, allow_redirects=False) as response:
            if 200 <= response.status < 300:
                return None
            return f"HTTP {response.status}"
    except TimeoutError:
        return f"no answer within {TIMEOUT:.0f} s"
    except (aiohttp.ClientError, OSError) as exc:
        return f"connection failed ({type(exc).__name__})"
    except Exception as exc:  # any failure is a failed try, retried with backoff
        log.warning("webhook %s: unexpected %s", due.id, type(exc).__name__)
        return f"failed ({type(exc).__name__})"


async def deliver_due(core: Wiring, *, limit: int = 50, now: datetime | None = None) -> dict[str, int]:
    """POST the events that are due; returns how many were ``delivered`` and how many ``failed``
    (those are tried again after ``backoff``)."""
    now = now or utcnow()
    due = await _claim(core.db, limit, now)
    counts = {"delivered": 0, "failed": 0}
    if not due:
        return counts
    targets = await _targets(core, {d.partner_id for d in due})
    gate = asyncio.Semaphore(CONCURRENCY)

    async def attempt(item: _Due) -> str | None:
        async with gate:
            return await _post(http, targets.get(item.partner_id), item, now)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as http:
        errors = await asyncio.gather(*(attempt(item) for item in due))
    alerted = False
    async with core.db.transaction() as session:
        for item, error in zip(due, errors, strict=True):
            attempts = item.attempts + 1
            values: dict[str, Any] = {"attempts": attempts, "claimed_until": None}
            if error is None:
                values.update(status=SENT, delivered_at=now, last_error=None)
            else:
                values.update(last_error=error[:200], next_attempt_at=now + backoff(attempts))
            # ``attempts`` unchanged: nobody recorded a result for this try since the claim.
            recorded = await session.execute(
                update(PartnerWebhook)
                .where(
                    PartnerWebhook.id == item.id,
                    PartnerWebhook.status == PENDING,
                    PartnerWebhook.attempts == item.attempts,
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if rowcount(recorded) != 1:
                continue
            target = targets.get(item.partner_id)
            code = target.code if target is not None else str(item.partner_id)
            if error is None:
                counts["delivered"] += 1
                continue
            counts["failed"] += 1
            log.warning(
                "webhook %s (%s) to partner %s failed: %s; try %d, next in %ds",
                item.id,
                item.event,
                code,
                error,
                attempts,
                int(backoff(attempts).total_seconds()),
            )
            if attempts == ALERT_AFTER:
                order = json.loads(item.payload).get("order", {})
                await outbox.enqueue_admins(
                    session,
                    core.settings.admin_id_list,
                    "admin_webhook_failing",
                    {
                        "partner": code,
                        "event": item.event,
                        "number": order.get("number", "?"),
                        "order_no": order.get("order_no", "?"),
                        "attempts": attempts,
                        "error": error,
                    },
                )
                alerted = True
    if alerted:
        core.outbox_wakeup.set()
    return counts
