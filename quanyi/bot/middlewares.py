"""Outer middlewares: who is talking, in which language; and what operators and distributors do
in chat, recorded on the audit trail (commands and the button presses that changed something,
never free text)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import CallbackQuery, Message, TelegramObject, User

from quanyi.core.platform import audit
from quanyi.core.services import Core
from quanyi.i18n import pick_language

log = logging.getLogger(__name__)


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


class AuditMiddleware(BaseMiddleware):
    """Operators' and distributors' chat: what their handlers change in audited rows is recorded
    with old and new values (``audit.acting``), and each command (the command word only: its
    arguments may hold a code) and each button press that changed something is recorded after
    the handler ran."""

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        core = data.get("core")
        user = getattr(event, "from_user", None)
        if not isinstance(core, Core) or user is None or not isinstance(event, Message | CallbackQuery):
            return await handler(event, data)
        actor = await core.distributors.chat_actor(user.id)
        if actor is None:
            return await handler(event, data)
        with audit.acting(actor, "chat") as work:
            result = await handler(event, data)
        if isinstance(event, CallbackQuery) and not work.recorded:
            return result  # a press that changed nothing (a menu, a repeated tap) is no audit record
        try:
            await self._record(core, event, actor)
        except Exception:  # an audit failure is logged loudly, never turned into a failed button
            log.exception("could not record a chat action on the audit trail")
        return result

    async def _record(self, core: Core, event: Message | CallbackQuery, actor: str) -> None:
        if isinstance(event, Message):
            text = event.text or event.caption or ""
            if not text.startswith("/"):
                return
            action = "chat " + text.split(maxsplit=1)[0].split("@", 1)[0][:40]
            object_type, object_id = "command", action[5:]
        else:
            prefix = (event.data or "").partition(":")[0]
            action = f"chat button {prefix[:32]}"
            object_type, object_id = "button", (event.data or "")[:64]
        await core.platform.record(audit.Entry(actor, "chat", action, object_type, object_id))
