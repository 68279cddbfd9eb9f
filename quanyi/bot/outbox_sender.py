"""Sends outbox messages to Telegram, keeping to its limits, retrying until accepted.

Telegram allows about 30 messages a second per bot and about one a second per chat,
and answers 429 with ``retry_after`` past that. A burst of sales therefore queues in
the outbox instead of failing. A message is marked sent only after Telegram accepted
it; on SIGTERM the sender finishes what it is sending before it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from aiogram import Bot
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNotFound,
    TelegramRetryAfter,
)
from aiogram.types import BufferedInputFile, InlineKeyboardMarkup
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.bot.render import QR_LIMIT, delivery_messages, mask_account, method_label, money, status_label
from quanyi.core.models import Order, Payment, Recharge, utcnow
from quanyi.core.platform import export, outbox
from quanyi.core.platform.outbox import Outgoing
from quanyi.core.sales import redeem
from quanyi.core.sales.orders import delivered_codes
from quanyi.core.services import Core
from quanyi.i18n import t

log = logging.getLogger(__name__)
# Longer than a whole multi-part send can take with the client's 30 s request timeout.
LEASE = timedelta(minutes=5)
MAX_BACKOFF = 300.0


@dataclass(frozen=True)
class QrPhoto:
    """A part sent as a photo: the QR code of ``url``, captioned with the link itself."""

    url: str


@dataclass(frozen=True)
class Document:
    """A part sent as a file (a statement's CSV, a report's chart as a photo when ``photo``)."""

    filename: str
    data: bytes
    caption: str = ""
    photo: bool = False


@dataclass(frozen=True)
class WithButtons:
    """A text part with inline buttons (an operator's approve / reject)."""

    text: str
    markup: InlineKeyboardMarkup


Part = str | QrPhoto | Document | WithButtons
Renderer = Callable[[Core, Outgoing], Awaitable[list[Part]]]


class OutboxSender:
    def __init__(
        self,
        core: Core,
        bot: Bot,
        *,
        poll_interval: float = 1.0,
        concurrency: int = 8,
        renderers: Mapping[str, Renderer] | None = None,
    ) -> None:
        """``renderers``: the outbox kinds rendered by the modules that own them (default: every
        such module's, ``bot.renderers``); the kinds of orders and payments are rendered here."""
        if renderers is None:
            from quanyi.bot.renderers import owned_renderers

            renderers = owned_renderers()
        self.core = core
        self.bot = bot
        self._renderers = dict(renderers)
        self.poll_interval = poll_interval
        self.concurrency = concurrency
        self._rate = core.settings.outbox_rate_per_second
        self._per_chat = core.settings.outbox_per_chat_interval
        self._next_slot = 0.0
        self._chat_ready: dict[int, float] = {}
        self._stopping = asyncio.Event()
        self._slot_lock = asyncio.Lock()

    def stop(self) -> None:
        self._stopping.set()
        self.core.outbox_wakeup.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                sent = await self.run_once()
            except Exception:
                log.exception("outbox pass failed; retrying")
                sent = 0
            if sent == 0 and not self._stopping.is_set():
                self.core.outbox_wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.core.outbox_wakeup.wait(), self.poll_interval)

    async def run_once(self) -> int:
        """Claim due messages and send them; returns how many were handled."""
        due = await outbox.claim_due(self.core.db, limit=self.concurrency * 4, lease=LEASE)
        if not due:
            return 0
        semaphore = asyncio.Semaphore(self.concurrency)

        async def one(message: Outgoing) -> None:
            async with semaphore:
                await self._send(message)

        await asyncio.gather(*(one(message) for message in due))
        return len(due)

    async def _send(self, message: Outgoing) -> None:
        now = time.monotonic()
        ready = self._chat_ready.get(message.chat_id, 0.0)
        if ready > now:
            # Too soon for this chat: put it back without counting an attempt.
            at = utcnow() + timedelta(seconds=ready - now)
            await outbox.reschedule(self.core.db, message.id, at=at, error=None, count_attempt=False)
            return
        self._chat_ready[message.chat_id] = now + self._per_chat
        try:
            if message.kind == "bulk_delivery":
                await self._send_bulk_delivery(message)
                parts: list[Part] = []
            else:
                parts = await self.parts(message)
            for part, item in enumerate(parts):
                if part < message.parts_sent:
                    continue  # Telegram took this part before a failure; never send it twice
                await self._take_slot()
                if isinstance(item, QrPhoto):
                    photo = BufferedInputFile(redeem.qr_png(item.url), filename="qr.png")
                    await self.bot.send_photo(message.chat_id, photo, caption=item.url, parse_mode=None)
                elif isinstance(item, Document):
                    upload = BufferedInputFile(item.data, filename=item.filename)
                    if item.photo:
                        await self.bot.send_photo(message.chat_id, upload, caption=item.caption or None)
                    else:
                        await self.bot.send_document(message.chat_id, upload, caption=item.caption or None)
                elif isinstance(item, WithButtons):
                    await self.bot.send_message(message.chat_id, item.text, reply_markup=item.markup)
                else:
                    await self.bot.send_message(message.chat_id, item)
                # The chat's next message waits from the moment Telegram took this one, not
                # from when rendering began (rendering and the global slot take time too).
                self._chat_ready[message.chat_id] = time.monotonic() + self._per_chat
                if len(parts) > 1 and part + 1 < len(parts):
                    await outbox.mark_part_sent(self.core.db, message.id, part + 1)
        except TelegramRetryAfter as exc:
            log.info("outbox %s: Telegram asked to wait %ss", message.id, exc.retry_after)
            self._chat_ready[message.chat_id] = time.monotonic() + exc.retry_after
            await outbox.reschedule(
                self.core.db, message.id, at=utcnow() + timedelta(seconds=exc.retry_after), error="429 retry_after"
            )
            return
        except (TelegramForbiddenError, TelegramNotFound) as exc:
            log.warning(
                "outbox %s: chat %s unreachable (%s); giving up", message.id, message.chat_id, type(exc).__name__
            )
            await outbox.mark_dead(self.core.db, message.id, type(exc).__name__)
            return
        except TelegramBadRequest as exc:
            if "chat not found" in str(exc).lower() or "blocked" in str(exc).lower():
                await outbox.mark_dead(self.core.db, message.id, "chat not found")
                return
            await self._backoff(message, f"bad request: {type(exc).__name__}")
            return
        except Exception as exc:  # network errors, 5xx: retry later, never drop
            await self._backoff(message, type(exc).__name__)
            return
        await outbox.mark_sent(self.core.db, message.id)

    async def _backoff(self, message: Outgoing, error: str) -> None:
        delay = min(MAX_BACKOFF, 2.0 ** min(message.attempts, 10))
        log.warning("outbox %s: send failed (%s); retry in %.0fs", message.id, error, delay)
        await outbox.reschedule(self.core.db, message.id, at=utcnow() + timedelta(seconds=delay), error=error)

    async def _take_slot(self) -> None:
        async with self._slot_lock:
            now = time.monotonic()
            wait = self._next_slot - now
            self._next_slot = max(now, self._next_slot) + 1.0 / self._rate
        if wait > 0:
            await asyncio.sleep(wait)

    async def parts(self, message: Outgoing) -> list[Part]:
        """What one outbox message sends, in order: its texts, then a delivery's QR photos."""
        owned = self._renderers.get(message.kind)
        if owned is not None:
            return await owned(self.core, message)
        if message.kind != "delivery":
            return list(await self.render(message))
        # A write transaction: each decryption appends to the audit trail.
        async with self.core.db.transaction() as session:
            order = await self._order(session, message)
            texts, urls = await self._delivery(session, message.language, order)
        return [*texts, *(QrPhoto(url) for url in urls[:QR_LIMIT])]

    async def _order(self, session: AsyncSession, message: Outgoing) -> Order:
        order_id = message.payload.get("order_id")
        order = await session.get(Order, int(str(order_id))) if order_id is not None else None
        if order is None:
            raise LookupError(f"outbox {message.id}: order missing")
        return order

    async def _delivery(self, session: AsyncSession, lang: str, order: Order) -> tuple[list[str], list[str]]:
        """A delivery's texts (codes and links, decrypted only here) and the links to send as QR codes."""
        lines = await delivered_codes(session, self.core.keyring, order, purpose="delivery")
        issued = await redeem.order_links(session, self.core.keyring, order.id, purpose="delivery") if lines else []
        public_url = self.core.settings.public_url
        by_line = [[i for i in issued if i.order_line_id == line.id] for line in order.lines]
        texts = delivery_messages(
            lang,
            order.number,
            lines,
            by_line,
            public_url=public_url,
            tz=self.core.settings.timezone,
            qr_limit=QR_LIMIT if issued else None,
        )
        return texts, [redeem.link(public_url, i.token) for links in by_line for i in links]

    async def _recharge_text(self, session: AsyncSession, message: Outgoing, order: Order) -> str:
        lang = message.language
        line = next((line for line in order.lines if line.account), order.lines[0] if order.lines else None)
        if line is None:
            raise LookupError(f"outbox {message.id}: order has no lines")
        values = {"number": order.number, "name": line.name, "account": mask_account(line.account or "")}
        amount = money(line.amount, order.currency)
        if message.kind == "recharge_success":
            return t(lang, "deliver.recharge_success", **values)
        if message.kind == "admin_recharge_late_success":
            resolution = await session.scalar(select(Recharge.resolution).where(Recharge.order_line_id == line.id))
            return t(
                lang,
                "deliver.admin_recharge_late_success",
                amount=amount,
                user=order.user_id,
                resolution=resolution or "-",
                **values,
            )
        if message.kind == "admin_recharge_failed":
            reason = await session.scalar(select(Recharge.failure_reason).where(Recharge.order_line_id == line.id))
            return t(
                lang,
                "deliver.admin_recharge_failed",
                amount=amount,
                user=order.user_id,
                reason=reason or "-",
                **values,
            )
        resolution = str(message.payload.get("resolution", "refund_pending"))
        if resolution == "refunded":
            outcome = t(lang, "deliver.failed_refunded", amount=amount)
        elif resolution == "fallback":
            outcome = t(lang, "deliver.failed_fallback")
        else:
            outcome = t(lang, "deliver.failed_refund_pending", amount=amount, support=self._support_line(lang))
        return t(lang, "deliver.recharge_failed", **values) + "\n" + outcome.strip()

    async def render(self, message: Outgoing) -> list[str]:
        """The texts of one outbox message; delivery codes are decrypted only here."""
        lang = message.language
        payload = message.payload
        if message.kind == "stock_low":
            return [stock_low_text(lang, payload)]
        if message.kind == "delivery":
            async with self.core.db.transaction() as session:  # the decryption is audited
                texts, _urls = await self._delivery(session, lang, await self._order(session, message))
            return texts
        async with self.core.db.read() as session:
            order = await self._order(session, message)
            if message.kind in (
                "recharge_success",
                "recharge_failed",
                "admin_recharge_failed",
                "admin_recharge_late_success",
            ):
                return [await self._recharge_text(session, message, order)]
            if message.kind == "order_expired":
                return [t(lang, "order_expired", number=order.number)]
            if message.kind == "order_failed":
                return [t(lang, "order_failed", number=order.number, support=self._support_line(lang))]
            if message.kind == "admin_order_failed":
                return [
                    t(
                        lang,
                        "admin_order_failed",
                        number=order.number,
                        amount=money(order.amount, order.currency),
                        user=order.user_id,
                    )
                ]
            if message.kind in ("refunded", "admin_provider_refund"):
                amount = money(int(str(payload["amount"])), str(payload["currency"]))
                if message.kind == "refunded":
                    return [t(lang, "refunded", number=order.number, amount=amount)]
                method = method_label(lang, str(payload.get("method", "")), "")
                return [t(lang, "admin_provider_refund", number=order.number, amount=amount, method=method)]
            if message.kind in ("admin_payment_review", "payment_review"):
                payment = await session.get(Payment, int(payload["payment_id"]))  # type: ignore[call-overload]
                if payment is None:
                    raise LookupError(f"outbox {message.id}: payment missing")
                values = {
                    "number": order.number,
                    "amount": money(payment.amount, payment.currency),
                    "status": status_label(lang, order.status),
                }
                if message.kind == "payment_review":
                    return [t(lang, "payment_review", support=self._support_line(lang), **values)]
                return [
                    t(
                        lang,
                        "admin_payment_review",
                        method=method_label(lang, payment.method, ""),
                        txn=payment.provider_txn_id,
                        **values,
                    )
                ]
        raise LookupError(f"outbox {message.id}: unknown kind {message.kind}")

    async def _send_bulk_delivery(self, message: Outgoing) -> None:
        """A bulk purchase's codes as one CSV document."""
        if message.parts_sent >= 1:
            return  # Telegram took it before; only marking it sent failed. Never send it twice.
        caption, document = await self.render_bulk_delivery(message)
        await self._take_slot()
        await self.bot.send_document(message.chat_id, document, caption=caption)
        await outbox.mark_part_sent(self.core.db, message.id, 1)

    async def render_bulk_delivery(self, message: Outgoing) -> tuple[str, BufferedInputFile]:
        """The caption and the ``serial,secret`` CSV file; the codes are decrypted only here."""
        async with self.core.db.transaction() as session:  # the decryption is audited
            order = await session.get(Order, int(str(message.payload["order_id"])))
            if order is None:
                raise LookupError(f"outbox {message.id}: order missing")
            lines = await delivered_codes(session, self.core.keyring, order, purpose="export")
        # A code starting like a formula ("-AB12") is written "'-AB12": the buyer drops one
        # leading quote to read it (quanyi.core.platform.export).
        rows: list[list[export.Cell]] = [["serial", "secret"]]
        rows += [[code.serial or "", code.secret] for line in lines for code in line.codes]
        caption = t(
            message.language,
            "agent.bulk_caption",
            number=order.number,
            name=", ".join(line.name for line in lines),
            quantity=sum(line.quantity for line in lines),
            total=money(order.amount, order.currency),
        )
        return caption, BufferedInputFile(export.csv_bytes(rows, line_end="\n"), filename=f"{order.number}.csv")

    def _support_line(self, lang: str) -> str:
        contact = self.core.settings.support_contact
        return t(lang, "support_line", contact=contact) if contact else ""


def stock_low_text(lang: str, payload: Mapping[str, object]) -> str:
    """One wording for operators and for the distributor owning the allocation: it names the channel."""
    values = {k: payload.get(k, "") for k in ("name", "sku", "left", "threshold")}
    channel = payload.get("channel")
    if channel is None:
        return t(lang, "ops.stock_low_pool", **values)
    return t(lang, "ops.stock_low_channel", channel=channel, **values)
