"""Outer middleware: who is talking, in which language."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject, User

from quanyi.i18n import pick_language


class LanguageMiddleware(BaseMiddleware):
    """Puts ``lang`` into handler data from the Telegram user's language (zh by default)."""

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        user: User | None = data.get("event_from_user")
        data["lang"] = pick_language(user.language_code if user else None)
        return await handler(event, data)
