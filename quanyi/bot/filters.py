"""Filters shared by the chat's routers: who reaches the operator chat (the Telegram ids in
QUANYI_ADMIN_IDS), who is an active distributor, and a typed answer to a form."""

from __future__ import annotations

from typing import Any

from aiogram import F
from aiogram.filters import BaseFilter
from aiogram.types import TelegramObject

from quanyi.core.services import Core


class IsAdmin(BaseFilter):
    async def __call__(self, event: TelegramObject, core: Core, **_: Any) -> bool:
        user = getattr(event, "from_user", None)
        return user is not None and user.id in core.settings.admin_id_list


class IsDistributor(BaseFilter):
    async def __call__(self, event: TelegramObject, core: Core, **_: Any) -> bool:
        user = getattr(event, "from_user", None)
        return user is not None and await core.distributors.is_active(user.id)


# Typed answers to a form; commands (/start, /agent, /cancel) go to their own handlers.
TYPED = F.text & ~F.text.startswith("/")
