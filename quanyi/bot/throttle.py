"""Per-user limits on chat messages and button presses.

Over the limit, an update is dropped before any handler runs; the user is told once per
window how long to wait. Operators are never throttled, and neither is a payment message.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import TelegramObject, Update, User

from quanyi.core.platform.ratelimit import make_limiter
from quanyi.i18n import t

log = logging.getLogger(__name__)


class ThrottleMiddleware(BaseMiddleware):
    """An outer middleware on ``dp.update``, after the language middleware (it needs ``lang``)."""

    def __init__(self, limit: int, window: float, exempt: Callable[[int], bool], *, redis_url: str = "") -> None:
        self.events = make_limiter(redis_url, "chat", limit, window)
        # One notice per user per window: a flood must not become a flood of our replies.
        self.notices = make_limiter(redis_url, "chat-notice", 1, window)
        self.exempt = exempt

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        user: User | None = data.get("event_from_user")
        if not isinstance(event, Update) or user is None or not _counted(event) or self.exempt(user.id):
            return await handler(event, data)
        key = str(user.id)
        wait = await self.events.hit(key)
        if not wait:
            return await handler(event, data)
        bot: Bot = data["bot"]
        if not await self.notices.hit(key):
            await self._notify(bot, event, data.get("lang", "zh"), wait)
        elif event.callback_query is not None:
            # A pressed button spins until answered; answer the dropped ones without a word.
            with contextlib.suppress(TelegramAPIError):
                await bot.answer_callback_query(event.callback_query.id)
        return None

    async def _notify(self, bot: Bot, update: Update, lang: str, seconds: int) -> None:
        text = t(lang, "limits.slow_down", seconds=seconds)
        try:
            if update.callback_query is not None:
                await bot.answer_callback_query(update.callback_query.id, text, show_alert=True)
            elif update.message is not None:
                await bot.send_message(update.message.chat.id, text)
        except TelegramAPIError as exc:  # a notice that cannot be sent is not worth an error
            log.info("throttle: notice not sent: %s", type(exc).__name__)


def _counted(update: Update) -> bool:
    """Messages and button presses count; a Stars payment message (money already taken) never does."""
    if update.callback_query is not None:
        return True
    message = update.message
    return message is not None and message.successful_payment is None and message.refunded_payment is None
