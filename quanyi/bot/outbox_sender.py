"""Sends outbox messages to Telegram, keeping to its limits, retrying until accepted.

Telegram allows about 30 messages a second per bot and about one a second per chat,
and answers 429 with ``retry_after`` past that. A burst of sales therefore queues in
the outbox instead of failing. A message is marked sent only after Telegram accepted
it; on SIGTERM the sender finishes what it is sending before it stops.

The sender only sends: each kind is rendered by its owner (``bot.renderers``, and
``bot.order_messages`` for orders and payments) from the plain data core hands over, and core
records each step (claimed, part sent, sent, retried, dead) through ``core.platform``.
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

from quanyi.core.platform.outbox import Outgoing
from quanyi.core.sales import redeem
from quanyi.core.services import Core

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


@dataclass(frozen=True)
class ButtonsOff:
    """A part that sends nothing: the buttons of an earlier message of the chat are taken off
    (an order's Pay and Cancel once it is paid, cancelled or expired)."""

    message_id: int


# Telegram's answers when there is nothing left to take off: done, not failed.
_NOTHING_TO_EDIT = ("message is not modified", "message to edit not found", "message can't be edited")

Part = str | QrPhoto | Document | WithButtons | ButtonsOff
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
        such module's, ``bot.renderers``); the kinds of orders and payments are rendered by
        ``bot.order_messages``."""
        # Imported here: the renderers' modules import this one for ``Part`` and ``Renderer``.
        from quanyi.bot import order_messages

        if renderers is None:
            from quanyi.bot.renderers import owned_renderers

            renderers = owned_renderers()
        self.core = core
        self.bot = bot
        self._renderers = {**order_messages.RENDERERS, **renderers}
        self._bulk_delivery = order_messages.bulk_delivery
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
        due = await self.core.platform.claim_outbox(limit=self.concurrency * 4, lease=LEASE)
        if not due:
            return 0
        semaphore = asyncio.Semaphore(self.concurrency)

        async def one(message: Outgoing) -> None:
            async with semaphore:
                await self._send(message)

        await asyncio.gather(*(one(message) for message in due))
        return len(due)

    async def _send(self, message: Outgoing) -> None:
        platform = self.core.platform
        now = time.monotonic()
        ready = self._chat_ready.get(message.chat_id, 0.0)
        if ready > now:
            # Too soon for this chat: put it back without counting an attempt.
            await platform.outbox_retry(
                message.id, after=timedelta(seconds=ready - now), error=None, count_attempt=False
            )
            return
        self._chat_ready[message.chat_id] = now + self._per_chat
        try:
            if message.kind == "bulk_delivery":
                await self._send_bulk_delivery(message)
            else:
                await self._send_parts(message, await self.parts(message))
        except TelegramRetryAfter as exc:
            log.info("outbox %s: Telegram asked to wait %ss", message.id, exc.retry_after)
            self._chat_ready[message.chat_id] = time.monotonic() + exc.retry_after
            await platform.outbox_retry(message.id, after=timedelta(seconds=exc.retry_after), error="429 retry_after")
            return
        except (TelegramForbiddenError, TelegramNotFound) as exc:
            log.warning(
                "outbox %s: chat %s unreachable (%s); giving up", message.id, message.chat_id, type(exc).__name__
            )
            await platform.outbox_dead(message.id, type(exc).__name__)
            return
        except TelegramBadRequest as exc:
            if "chat not found" in str(exc).lower() or "blocked" in str(exc).lower():
                await platform.outbox_dead(message.id, "chat not found")
                return
            await self._backoff(message, f"bad request: {type(exc).__name__}")
            return
        except Exception as exc:  # network errors, 5xx: retry later, never drop
            await self._backoff(message, type(exc).__name__)
            return
        await platform.outbox_sent(message.id)

    async def _send_parts(self, message: Outgoing, parts: list[Part]) -> None:
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
            elif isinstance(item, ButtonsOff):
                await self._buttons_off(message.chat_id, item.message_id)
            else:
                await self.bot.send_message(message.chat_id, item)
            # The chat's next message waits from the moment Telegram took this one, not
            # from when rendering began (rendering and the global slot take time too).
            self._chat_ready[message.chat_id] = time.monotonic() + self._per_chat
            if len(parts) > 1 and part + 1 < len(parts):
                await self.core.platform.outbox_part_sent(message.id, part + 1)

    async def _buttons_off(self, chat_id: int, message_id: int) -> None:
        try:
            await self.bot.edit_message_reply_markup(chat_id=chat_id, message_id=message_id, reply_markup=None)
        except TelegramBadRequest as exc:
            # Already without buttons (the buyer's tap edited it), deleted, or too old to edit.
            if not any(reason in str(exc).lower() for reason in _NOTHING_TO_EDIT):
                raise

    async def _backoff(self, message: Outgoing, error: str) -> None:
        delay = min(MAX_BACKOFF, 2.0 ** min(message.attempts, 10))
        log.warning("outbox %s: send failed (%s); retry in %.0fs", message.id, error, delay)
        await self.core.platform.outbox_retry(message.id, after=timedelta(seconds=delay), error=error)

    async def _take_slot(self) -> None:
        async with self._slot_lock:
            now = time.monotonic()
            wait = self._next_slot - now
            self._next_slot = max(now, self._next_slot) + 1.0 / self._rate
        if wait > 0:
            await asyncio.sleep(wait)

    async def parts(self, message: Outgoing) -> list[Part]:
        """What one outbox message sends, in order: its texts, then a delivery's QR photos."""
        renderer = self._renderers.get(message.kind)
        if renderer is None:
            raise LookupError(f"outbox {message.id}: unknown kind {message.kind}")
        return await renderer(self.core, message)

    async def render(self, message: Outgoing) -> list[str]:
        """The texts of one outbox message; delivery codes are decrypted only here."""
        return [part for part in await self.parts(message) if isinstance(part, str)]

    async def _send_bulk_delivery(self, message: Outgoing) -> None:
        """A bulk purchase's codes as one CSV document."""
        if message.parts_sent >= 1:
            return  # Telegram took it before; only marking it sent failed. Never send it twice.
        document = await self._bulk_delivery(self.core, message)
        await self._take_slot()
        upload = BufferedInputFile(document.data, filename=document.filename)
        await self.bot.send_document(message.chat_id, upload, caption=document.caption)
        await self.core.platform.outbox_part_sent(message.id, 1)
