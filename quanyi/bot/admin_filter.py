"""Who reaches the operator chat: the Telegram ids in QUANYI_ADMIN_IDS."""

from __future__ import annotations

from typing import Any

from aiogram.filters import BaseFilter
from aiogram.types import TelegramObject

from quanyi.core.services import Core


class IsAdmin(BaseFilter):
    async def __call__(self, event: TelegramObject, core: Core, **_: Any) -> bool:
        user = getattr(event, "from_user", None)
        return user is not None and user.id in core.settings.admin_id_list
